package fts

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	bolt "go.etcd.io/bbolt"
)

const (
	largeDocs  = 100_000
	largeBatch = 1_000
	largeVocab = 5_000
)

// planted maps each rare word to the documents that contain it; no other
// document does, as the vocabulary has no digits.
var planted = map[string][]uint64{
	"xenolith7": {17, 50_000, 99_999},
	"zircon42":  {1_234},
	"quasar9":   {3, 33_333, 66_666, 88_888, 99_998},
}

type chatMessage struct {
	Text      string `json:"text"`
	Sender    string `json:"sender"`
	Timestamp int64  `json:"timestamp"`
}

// vocabulary returns n distinct lowercase words, most frequent first.
func vocabulary(r *rand.Rand, n int) []string {
	seen := make(map[string]bool, n)
	words := make([]string, 0, n)
	for len(words) < n {
		b := make([]byte, 3+r.IntN(8))
		for i := range b {
			b[i] = byte('a' + r.IntN(26))
		}
		if w := string(b); !seen[w] {
			seen[w] = true
			words = append(words, w)
		}
	}
	return words
}

// largeCorpus is a built index of largeDocs synthetic chat messages.
type largeCorpus struct {
	db    *bolt.DB
	vocab []string
	texts []string // texts[id-1]
}

// buildLarge indexes largeDocs messages of 5 to 20 Zipf-distributed words,
// ids 1 to largeDocs, largeBatch per transaction.
func buildLarge(tb testing.TB) *largeCorpus {
	tb.Helper()
	r := rand.New(rand.NewPCG(1, 2))
	vocab := vocabulary(r, largeVocab)
	zipf := rand.NewZipf(r, 1.1, 2, largeVocab-1)
	rare := make(map[uint64][]string)
	for w, ids := range planted {
		for _, id := range ids {
			rare[id] = append(rare[id], w)
		}
	}
	c := &largeCorpus{db: openDB(tb), vocab: vocab, texts: make([]string, 0, largeDocs)}
	start := time.Now()
	words := make([]string, 0, 24)
	for first := uint64(1); first <= largeDocs; first += largeBatch {
		update(tb, c.db, func(b *bolt.Bucket) error {
			for id := first; id < first+largeBatch; id++ {
				words = words[:0]
				for range 5 + r.IntN(16) {
					words = append(words, vocab[zipf.Uint64()])
				}
				words = append(words, rare[id]...)
				msg, err := json.Marshal(chatMessage{
					Text:      fmt.Sprint(words),
					Sender:    fmt.Sprintf("user%d", r.IntN(50)),
					Timestamp: int64(id),
				})
				if err != nil {
					return err
				}
				text := Text(msg)
				c.texts = append(c.texts, text)
				if err := Add(b, id, text); err != nil {
					return err
				}
			}
			return nil
		})
	}
	tb.Logf("indexed %d messages in %v", largeDocs, time.Since(start))
	return c
}

// largeQueries are the searches run on the large corpus.
func largeQueries(c *largeCorpus) []struct{ name, query string } {
	return []struct{ name, query string }{
		{"common word", c.vocab[0]},
		{"two words", c.vocab[3] + " " + c.vocab[40]},
		{"rare word", "xenolith7"},
		{"rare words", "Zircon42 QUASAR9"},
	}
}

func TestSearch100kMessages(t *testing.T) {
	if testing.Short() || raceEnabled {
		t.Skip("builds an index of 100k messages")
	}
	c := buildLarge(t)
	view(t, c.db, func(b *bolt.Bucket) {
		docs, terms := Stats(b)
		require.EqualValues(t, largeDocs, docs)
		t.Logf("stats: %d docs, %d terms", docs, terms)
	})
	for _, q := range largeQueries(c) {
		var (
			hits  []Hit
			trunc bool
			took  time.Duration
		)
		view(t, c.db, func(b *bolt.Bucket) {
			start := time.Now()
			var err error
			hits, trunc, err = Search(b, q.query, 20, 10_000, nil)
			took = time.Since(start)
			require.NoError(t, err)
		})
		t.Logf("search %s %q: %d hits, truncated %v, in %v", q.name, q.query, len(hits), trunc, took)
		qterms := Terms(q.query)
		for _, h := range hits {
			require.True(t, slices.ContainsFunc(Terms(c.texts[h.ID-1]), func(t string) bool {
				return slices.Contains(qterms, t)
			}), "hit %d matches none of %q", h.ID, q.query)
		}
		var want []uint64
		for _, term := range qterms {
			want = append(want, planted[term]...)
		}
		if len(want) == 0 {
			require.Len(t, hits, 20)
			continue
		}
		require.False(t, trunc)
		got := make([]uint64, 0, len(hits))
		for _, h := range hits {
			got = append(got, h.ID)
		}
		require.ElementsMatch(t, want, got)
	}
}

func BenchmarkSearch100k(b *testing.B) {
	c := buildLarge(b)
	for _, q := range largeQueries(c) {
		b.Run(q.name, func(b *testing.B) {
			b.ReportAllocs()
			require.NoError(b, c.db.View(func(tx *bolt.Tx) error {
				bk := tx.Bucket(testBucket)
				for b.Loop() {
					if _, _, err := Search(bk, q.query, 20, 10_000, nil); err != nil {
						return err
					}
				}
				return nil
			}))
		})
	}
}

func BenchmarkAdd(b *testing.B) {
	db := openDB(b)
	r := rand.New(rand.NewPCG(3, 4))
	vocab := vocabulary(r, largeVocab)
	zipf := rand.NewZipf(r, 1.1, 2, largeVocab-1)
	texts := make([]string, 1024)
	for i := range texts {
		words := make([]string, 5+r.IntN(16))
		for j := range words {
			words[j] = vocab[zipf.Uint64()]
		}
		texts[i] = fmt.Sprint(words)
	}
	b.ReportAllocs()
	tx, err := db.Begin(true)
	require.NoError(b, err)
	id := uint64(0)
	for b.Loop() {
		id++
		if err := Add(tx.Bucket(testBucket), id, texts[id%uint64(len(texts))]); err != nil {
			b.Fatal(err)
		}
		if id%largeBatch == 0 {
			require.NoError(b, tx.Commit())
			tx, err = db.Begin(true)
			require.NoError(b, err)
		}
	}
	require.NoError(b, tx.Commit())
}
