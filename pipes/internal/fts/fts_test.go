package fts

import (
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
	bolt "go.etcd.io/bbolt"
)

var testBucket = []byte("fts")

// openDB opens a fresh database in a temporary directory, with an empty
// index bucket.
func openDB(tb testing.TB) *bolt.DB {
	tb.Helper()
	db, err := bolt.Open(filepath.Join(tb.TempDir(), "fts.db"), 0o600,
		&bolt.Options{NoSync: true, NoFreelistSync: true})
	require.NoError(tb, err)
	tb.Cleanup(func() { require.NoError(tb, db.Close()) })
	require.NoError(tb, db.Update(func(tx *bolt.Tx) error {
		_, err := tx.CreateBucket(testBucket)
		return err
	}))
	return db
}

func update(tb testing.TB, db *bolt.DB, fn func(b *bolt.Bucket) error) {
	tb.Helper()
	require.NoError(tb, db.Update(func(tx *bolt.Tx) error { return fn(tx.Bucket(testBucket)) }))
}

func view(tb testing.TB, db *bolt.DB, fn func(b *bolt.Bucket)) {
	tb.Helper()
	require.NoError(tb, db.View(func(tx *bolt.Tx) error { fn(tx.Bucket(testBucket)); return nil }))
}

// addAll indexes docs, id -> text, in one transaction.
func addAll(tb testing.TB, db *bolt.DB, docs map[uint64]string) {
	tb.Helper()
	update(tb, db, func(b *bolt.Bucket) error {
		for id, text := range docs {
			if err := Add(b, id, text); err != nil {
				return err
			}
		}
		return nil
	})
}

type searchResult struct {
	ids       []uint64
	truncated bool
}

func search(tb testing.TB, db *bolt.DB, query string, max, maxPostings int, keep func(uint64) bool) searchResult {
	tb.Helper()
	var r searchResult
	view(tb, db, func(b *bolt.Bucket) {
		hits, trunc, err := Search(b, query, max, maxPostings, keep)
		require.NoError(tb, err)
		for i, h := range hits {
			require.Greater(tb, h.Score, 0.0)
			if i > 0 {
				require.True(tb, hits[i-1].better(h), "hits out of order: %v", hits)
			}
			r.ids = append(r.ids, h.ID)
		}
		r.truncated = trunc
	})
	return r
}

var corpus = map[uint64]string{
	1: "the quick brown fox jumps over the lazy dog",
	2: "fox fox",
	3: "a long document that mentions the fox only once among many many other words here",
	4: "zebra crossing near the dog park",
	5: "the dog barks",
	6: "",
	7: "!!! ...",
}

func TestSearch(t *testing.T) {
	db := openDB(t)
	addAll(t, db, corpus)
	tests := []struct {
		name        string
		query       string
		max         int
		maxPostings int
		keep        func(uint64) bool
		want        searchResult
	}{
		{"tf and length", "fox", 10, 100, nil, searchResult{ids: []uint64{2, 1, 3}}},
		{"case and punctuation", "  FOX!", 10, 100, nil, searchResult{ids: []uint64{2, 1, 3}}},
		{"max", "fox", 2, 100, nil, searchResult{ids: []uint64{2, 1}}},
		{"rare term weighs more", "zebra the", 1, 100, nil, searchResult{ids: []uint64{4}}},
		{"any term", "zebra barks", 10, 100, nil, searchResult{ids: []uint64{5, 4}}},
		{"keep", "fox", 10, 100, func(id uint64) bool { return id != 2 }, searchResult{ids: []uint64{1, 3}}},
		{"truncated newest first", "fox", 10, 2, nil, searchResult{ids: []uint64{2, 3}, truncated: true}},
		{"exactly maxPostings", "fox", 10, 3, nil, searchResult{ids: []uint64{2, 1, 3}}},
		{"unknown term", "unicorn", 10, 100, nil, searchResult{}},
		{"prefix is not a match", "fo", 10, 100, nil, searchResult{}},
		{"no terms", " ?! ", 10, 100, nil, searchResult{}},
		{"max 0", "fox", 0, 100, nil, searchResult{}},
		{"maxPostings 0", "fox", 10, 0, nil, searchResult{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			require.Equal(t, tt.want, search(t, db, tt.query, tt.max, tt.maxPostings, tt.keep))
		})
	}
	view(t, db, func(b *bolt.Bucket) {
		docs, terms := Stats(b)
		require.EqualValues(t, 5, docs) // 6 and 7 have no terms
		require.EqualValues(t, 9+2+15+6+3, terms)
	})
}

func TestSearchTies(t *testing.T) {
	db := openDB(t)
	addAll(t, db, map[uint64]string{10: "same words", 30: "same words", 20: "same words"})
	require.Equal(t, []uint64{30, 20, 10}, search(t, db, "same", 10, 10, nil).ids)
}

func TestAddTwice(t *testing.T) {
	db := openDB(t)
	addAll(t, db, map[uint64]string{1: "hello"})
	require.Error(t, db.Update(func(tx *bolt.Tx) error { return Add(tx.Bucket(testBucket), 1, "hello again") }))
	view(t, db, func(b *bolt.Bucket) {
		docs, terms := Stats(b)
		require.EqualValues(t, 1, docs)
		require.EqualValues(t, 1, terms)
	})
	require.Empty(t, search(t, db, "again", 10, 10, nil).ids)
}

func TestRemove(t *testing.T) {
	db := openDB(t)
	addAll(t, db, corpus)
	update(t, db, func(b *bolt.Bucket) error {
		if err := Remove(b, 2, corpus[2]); err != nil {
			return err
		}
		if err := Remove(b, 99, "fox"); err != nil { // absent: no-op
			return err
		}
		return Remove(b, 6, corpus[6])
	})
	require.Equal(t, []uint64{1, 3}, search(t, db, "fox", 10, 100, nil).ids)
	view(t, db, func(b *bolt.Bucket) {
		docs, terms := Stats(b)
		require.EqualValues(t, 4, docs)
		require.EqualValues(t, 9+15+6+3, terms)
	})

	// Removing everything leaves an empty index: only the stats key.
	update(t, db, func(b *bolt.Bucket) error {
		for id, text := range corpus {
			if err := Remove(b, id, text); err != nil {
				return err
			}
		}
		return nil
	})
	view(t, db, func(b *bolt.Bucket) {
		docs, terms := Stats(b)
		require.Zero(t, docs)
		require.Zero(t, terms)
		var keys []string
		require.NoError(t, b.ForEach(func(k, _ []byte) error { keys = append(keys, string(k)); return nil }))
		require.Equal(t, []string{"s"}, keys)
	})
	require.Empty(t, search(t, db, "fox dog", 10, 100, nil).ids)
}

func TestRemoveWrongText(t *testing.T) {
	db := openDB(t)
	addAll(t, db, map[uint64]string{1: "alpha beta", 2: "alpha"})
	update(t, db, func(b *bolt.Bucket) error { return Remove(b, 1, "beta") })
	// The left-over posting of alpha for 1 is not returned.
	require.Equal(t, []uint64{2}, search(t, db, "alpha beta", 10, 10, nil).ids)
	view(t, db, func(b *bolt.Bucket) {
		docs, terms := Stats(b)
		require.EqualValues(t, 1, docs)
		require.EqualValues(t, 1, terms)
	})
}

func TestStatsEmpty(t *testing.T) {
	db := openDB(t)
	view(t, db, func(b *bolt.Bucket) {
		docs, terms := Stats(b)
		require.Zero(t, docs)
		require.Zero(t, terms)
		hits, trunc, err := Search(b, "anything", 10, 10, nil)
		require.NoError(t, err)
		require.Nil(t, hits)
		require.False(t, trunc)
	})
}

func TestRareTermWeighsMore(t *testing.T) {
	db := openDB(t)
	addAll(t, db, map[uint64]string{
		1: "common one", 2: "common two", 3: "common three", 4: "common four",
		5: "rare five", 6: "common six",
	})
	// Equal lengths and frequencies: only the idf differs, and the rare
	// term's document outranks newer ones with the common term.
	require.Equal(t, []uint64{5, 6, 4, 3, 2, 1}, search(t, db, "common rare", 10, 10, nil).ids)
}
