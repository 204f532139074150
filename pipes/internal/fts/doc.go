// Package fts is a small full-text index with BM25 ranking, stored in a
// bbolt bucket that the caller owns, inside transactions the caller owns.
//
// A document is a uint64 id (a pipeline's Seq) and a text, usually
// extracted from a packet with Text. Its terms, as split by Terms, are
// indexed by Add and unindexed by Remove, to which the caller re-supplies
// the text: the index keeps no copy of documents. Search ranks the
// documents matching any term of a query with BM25 (k1 = 1.2, b = 0.75),
// newer documents first among equal scores.
//
// Everything is bounded: the text extracted from a packet (64 KiB), a
// term (MaxTermLen bytes), the terms indexed per document (MaxDocTerms),
// the terms of a query (MaxQueryTerms), and the postings a search reads
// per query term, which the caller chooses. Search allocates in proportion
// to the number of results, the query terms and the postings it reads, not
// to the size of the index.
//
// # Storage layout
//
// All keys live directly in the bucket; integers written "be64" are 8-byte
// big-endian, "uvarint" are encoding/binary unsigned varints. A term is
// made of Unicode letters and digits, so it never contains the byte 0x00.
//
//	'p' term 0x00 be64(id)  ->  uvarint(tf) uvarint(dl)
//	'f' term                ->  uvarint(df)
//	'd' be64(id)            ->  uvarint(dl)
//	's'                     ->  uvarint(docs) uvarint(total terms)
//
// A 'p' key is a posting: document id contains the term tf times and has
// dl terms in all (copied into the posting, so that scoring reads no other
// key). The postings of a term are contiguous and sorted by id, so a
// reverse cursor scan over the term's prefix reads the newest first. An
// 'f' key holds the term's document frequency, kept exact by Add and
// Remove, so that the inverse document frequency is exact even when a
// search reads only part of the postings. A 'd' key marks an indexed
// document and holds its length; 's' holds the totals that Stats reports
// and that give BM25 its average document length.
//
// A document without terms is not indexed at all: it adds no key and is
// not counted by Stats.
package fts
