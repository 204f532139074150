package fts

import (
	"bytes"
	"encoding/binary"
	"math"
	"slices"

	bolt "go.etcd.io/bbolt"
)

// BM25 parameters.
const (
	bm25K1 = 1.2
	bm25B  = 0.75
)

// Hit is one result of Search.
type Hit struct {
	// ID is the document's id.
	ID uint64
	// Score is the document's BM25 score for the query; higher is better.
	Score float64
}

// better reports whether h ranks before o: a higher score, or an equal
// score and a higher (newer) id.
func (h Hit) better(o Hit) bool {
	if h.Score != o.Score {
		return h.Score > o.Score
	}
	return h.ID > o.ID
}

// queryTerms returns the first MaxQueryTerms distinct terms of query.
func queryTerms(query string) []string {
	var out []string
	eachTerm(query, func(t string) bool {
		if !slices.Contains(out, t) {
			out = append(out, t)
		}
		return len(out) < MaxQueryTerms
	})
	return out
}

// Search returns the at most max documents of b that best match query,
// best first. A document matches if it contains any of the query's terms
// (as split by Terms; the first MaxQueryTerms distinct ones); matches are
// ranked by BM25 with k1 = 1.2 and b = 0.75, and equal scores by the higher
// id, the newer document first. If keep is not nil, documents whose id it
// rejects are left out.
//
// For each query term, Search reads at most maxPostings of the documents
// containing it, the newest (highest ids) first; truncated reports whether
// it had to stop early for some term, in which case older matches may be
// missing. Document frequencies are exact regardless. A query without
// terms, or a max or maxPostings below 1, gives no hits.
func Search(b *bolt.Bucket, query string, max, maxPostings int, keep func(id uint64) bool) (hits []Hit, truncated bool, err error) {
	if max < 1 || maxPostings < 1 {
		return nil, false, nil
	}
	terms := queryTerms(query)
	if len(terms) == 0 {
		return nil, false, nil
	}
	docs, total := Stats(b)
	if docs == 0 {
		return nil, false, nil
	}
	avgdl := float64(total) / float64(docs)

	key := make([]byte, 0, maxKeyLen)
	dfs := make([]uint64, len(terms))
	hint := 0
	for i, t := range terms {
		if dfs[i], err = getUvarint(b, dfKey(key[:0], t)); err != nil {
			return nil, false, err
		}
		hint += int(min(dfs[i], uint64(maxPostings)))
	}
	scores := make(map[uint64]float64, hint)
	c := b.Cursor()
	for i, t := range terms {
		if dfs[i] == 0 {
			continue
		}
		df := float64(min(dfs[i], docs))
		idf := math.Log(1 + (float64(docs)-df+0.5)/(df+0.5))
		prefix := postingKey(key[:0], t, 0, false)
		trunc, err := scanPostings(c, prefix, maxPostings, func(id, tf, dl uint64) {
			ftf := float64(tf)
			norm := bm25K1 * (1 - bm25B + bm25B*float64(dl)/avgdl)
			scores[id] += idf * ftf * (bm25K1 + 1) / (ftf + norm)
		})
		if err != nil {
			return nil, false, err
		}
		truncated = truncated || trunc
	}
	return topK(b, scores, max, keep), truncated, nil
}

// scanPostings calls fn with the postings under prefix, highest id first,
// at most limit of them, and reports whether more remained.
func scanPostings(c *bolt.Cursor, prefix []byte, limit int, fn func(id, tf, dl uint64)) (bool, error) {
	// Position on the last key with the prefix: the prefix ends with
	// 0x00, so every such key is below the prefix ending with 0x01.
	end := len(prefix) - 1
	prefix[end] = 1
	k, v := c.Seek(prefix)
	prefix[end] = 0
	if k == nil {
		k, v = c.Last()
	} else {
		k, v = c.Prev()
	}
	for n := 0; k != nil && bytes.HasPrefix(k, prefix); k, v = c.Prev() {
		if n == limit {
			return true, nil
		}
		n++
		if len(k) != len(prefix)+8 {
			return false, errCorrupt
		}
		tf, i := binary.Uvarint(v)
		if i <= 0 {
			return false, errCorrupt
		}
		dl, j := binary.Uvarint(v[i:])
		if j <= 0 {
			return false, errCorrupt
		}
		fn(binary.BigEndian.Uint64(k[len(prefix):]), tf, dl)
	}
	return false, nil
}

// topK returns the at most max best of scores, best first, among the ids
// that keep accepts and that are still indexed in b. It keeps a min-heap
// of the best so far, worst at the root, and checks an id only when it
// would enter the heap.
func topK(b *bolt.Bucket, scores map[uint64]float64, max int, keep func(id uint64) bool) []Hit {
	h := make([]Hit, 0, min(max, len(scores)))
	var dk [9]byte
	dk[0] = prefixDoc
	for id, s := range scores {
		hit := Hit{ID: id, Score: s}
		if len(h) == max && !hit.better(h[0]) {
			continue
		}
		if keep != nil && !keep(id) {
			continue
		}
		binary.BigEndian.PutUint64(dk[1:], id)
		if b.Get(dk[:]) == nil {
			continue // a posting left over by a Remove given another text
		}
		if len(h) < max {
			h = append(h, hit)
			siftUp(h, len(h)-1)
		} else {
			h[0] = hit
			siftDown(h, 0)
		}
	}
	if len(h) == 0 {
		return nil
	}
	slices.SortFunc(h, func(x, y Hit) int {
		switch {
		case x.better(y):
			return -1
		case y.better(x):
			return 1
		}
		return 0
	})
	return h
}

func siftUp(h []Hit, i int) {
	for i > 0 {
		p := (i - 1) / 2
		if !h[p].better(h[i]) {
			return
		}
		h[p], h[i] = h[i], h[p]
		i = p
	}
}

func siftDown(h []Hit, i int) {
	for {
		w := i
		if l := 2*i + 1; l < len(h) && h[w].better(h[l]) {
			w = l
		}
		if r := 2*i + 2; r < len(h) && h[w].better(h[r]) {
			w = r
		}
		if w == i {
			return
		}
		h[i], h[w] = h[w], h[i]
		i = w
	}
}
