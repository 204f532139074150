package fts

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"

	bolt "go.etcd.io/bbolt"
)

// Key prefixes; see the storage layout in the package documentation.
const (
	prefixPosting = 'p'
	prefixDF      = 'f'
	prefixDoc     = 'd'
)

var keyStats = []byte{'s'}

var errCorrupt = errors.New("fts: corrupt index entry")

// maxKeyLen is the length of the longest key: a posting of a term of
// MaxTermLen bytes.
const maxKeyLen = 1 + MaxTermLen + 1 + 8

// postingKey appends to dst the prefix of term's postings, then id's
// big-endian bytes if withID.
func postingKey(dst []byte, term string, id uint64, withID bool) []byte {
	dst = append(dst, prefixPosting)
	dst = append(dst, term...)
	dst = append(dst, 0)
	if withID {
		dst = binary.BigEndian.AppendUint64(dst, id)
	}
	return dst
}

func dfKey(dst []byte, term string) []byte {
	return append(append(dst, prefixDF), term...)
}

func docKey(id uint64) []byte {
	return binary.BigEndian.AppendUint64([]byte{prefixDoc}, id)
}

// getUvarint returns the varint stored at key, 0 if there is none.
func getUvarint(b *bolt.Bucket, key []byte) (uint64, error) {
	v := b.Get(key)
	if v == nil {
		return 0, nil
	}
	x, n := binary.Uvarint(v)
	if n <= 0 {
		return 0, errCorrupt
	}
	return x, nil
}

// Stats returns the number of documents indexed in b and the total number
// of their terms. It returns zeros if b holds no index.
func Stats(b *bolt.Bucket) (docs, terms uint64) {
	v := b.Get(keyStats)
	docs, n := binary.Uvarint(v)
	if n <= 0 {
		return 0, 0
	}
	terms, m := binary.Uvarint(v[n:])
	if m <= 0 {
		return 0, 0
	}
	return docs, terms
}

func putStats(b *bolt.Bucket, docs, terms uint64) error {
	v := binary.AppendUvarint(make([]byte, 0, 2*binary.MaxVarintLen64), docs)
	return b.Put(keyStats, binary.AppendUvarint(v, terms))
}

// groups calls fn with each distinct term of the sorted terms and its
// number of occurrences, in order, until fn fails.
func groups(terms []string, fn func(term string, tf uint64) error) error {
	for i := 0; i < len(terms); {
		j := i + 1
		for j < len(terms) && terms[j] == terms[i] {
			j++
		}
		if err := fn(terms[i], uint64(j-i)); err != nil {
			return err
		}
		i = j
	}
	return nil
}

// Add indexes document id, whose text is text, in b, a bucket of a
// writable transaction that the caller owns. A text without terms indexes
// nothing. Callers add each id once: adding an id already indexed fails
// and changes nothing.
func Add(b *bolt.Bucket, id uint64, text string) error {
	terms := Terms(text)
	if len(terms) == 0 {
		return nil
	}
	dk := docKey(id)
	if b.Get(dk) != nil {
		return fmt.Errorf("fts: document %d already indexed", id)
	}
	slices.Sort(terms)
	dl := uint64(len(terms))
	// bbolt keeps the values passed to Put until the transaction ends,
	// so each gets its own bytes, carved from one buffer; keys are copied.
	vals := make([]byte, 0, 64)
	key := make([]byte, 0, maxKeyLen)
	put := func(key []byte, xs ...uint64) error {
		start := len(vals)
		for _, x := range xs {
			vals = binary.AppendUvarint(vals, x)
		}
		return b.Put(key, vals[start:len(vals):len(vals)])
	}
	err := groups(terms, func(term string, tf uint64) error {
		key = dfKey(key[:0], term)
		df, err := getUvarint(b, key)
		if err != nil {
			return err
		}
		if err := put(key, df+1); err != nil {
			return err
		}
		return put(postingKey(key[:0], term, id, true), tf, dl)
	})
	if err != nil {
		return err
	}
	if err := put(dk, dl); err != nil {
		return err
	}
	docs, total := Stats(b)
	return putStats(b, docs+1, total+dl)
}

// Remove unindexes document id from b, a bucket of a writable transaction
// that the caller owns. The caller re-supplies text, the text with which
// the document was added. Removing an id that is not indexed does nothing.
func Remove(b *bolt.Bucket, id uint64, text string) error {
	dk := docKey(id)
	dl, err := getUvarint(b, dk)
	if err != nil || b.Get(dk) == nil {
		return err
	}
	terms := Terms(text)
	slices.Sort(terms)
	key := make([]byte, 0, maxKeyLen)
	err = groups(terms, func(term string, _ uint64) error {
		key = postingKey(key[:0], term, id, true)
		if b.Get(key) == nil {
			return nil
		}
		if err := b.Delete(key); err != nil {
			return err
		}
		key = dfKey(key[:0], term)
		df, err := getUvarint(b, key)
		if err != nil {
			return err
		}
		if df <= 1 {
			return b.Delete(key)
		}
		v := binary.AppendUvarint(make([]byte, 0, binary.MaxVarintLen64), df-1)
		return b.Put(key, v)
	})
	if err != nil {
		return err
	}
	if err := b.Delete(dk); err != nil {
		return err
	}
	docs, total := Stats(b)
	return putStats(b, sat(docs, 1), sat(total, dl))
}

// sat returns x-y, or 0 if y > x.
func sat(x, y uint64) uint64 {
	if y > x {
		return 0
	}
	return x - y
}
