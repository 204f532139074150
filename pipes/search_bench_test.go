package pipes

import (
	"context"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// chatVocabulary returns n made-up words; chatText draws 5 to 20 of them
// with a Zipf-like law, as chat messages do.
func chatVocabulary(n int) []string {
	r := rand.New(rand.NewPCG(1, 2))
	words := make([]string, n)
	for i := range words {
		var sb strings.Builder
		for range 3 + r.IntN(6) {
			sb.WriteByte(byte('a' + r.IntN(26)))
		}
		words[i] = sb.String()
	}
	return words
}

func chatText(r *rand.Rand, z *rand.Zipf, words []string) string {
	n := 5 + r.IntN(16)
	parts := make([]string, n)
	for i := range parts {
		parts[i] = words[z.Uint64()]
	}
	return strings.Join(parts, " ")
}

// BenchmarkHubSearch100k searches a pipeline of 100,000 chat messages
// (5 to 20 words each from 5,000, Zipf-distributed) through a node: the
// time of one search, round trip included, of a frequent word, of two
// words, and of a rare one. Building and indexing the pipeline is not
// timed; its time is reported as index-s.
func BenchmarkHubSearch100k(b *testing.B) {
	keys := newTestKeys("alice")
	hub := startHub(b, HubConfig{UserKeys: keys.UserKeys, NoSync: true})
	ctx := context.Background()
	alice := openNode(b, keys, "alice", hub.addr, "", func(c *NodeConfig) { c.NoSync = true })
	p, err := alice.Pipeline("CHAT", &PipelineOptions{Persistent: true})
	require.NoError(b, err)
	tctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	for {
		if _, err := p.openedSession(); err == nil {
			break
		}
		select {
		case <-tctx.Done():
			b.Fatal("not opened")
		case <-time.After(5 * time.Millisecond):
		}
	}
	words := chatVocabulary(5000)
	r := rand.New(rand.NewPCG(3, 4))
	z := rand.NewZipf(r, 1.1, 2, uint64(len(words)-1))
	fill(b, hub.Hub, "CHAT", 100_000, func(i int) string {
		if i%10_000 == 0 {
			return "a rare xylophone " + chatText(r, z, words)
		}
		return chatText(r, z, words)
	})
	start := time.Now()
	page, err := p.Search(tctx, "xylophone", 20)
	require.NoError(b, err)
	require.Len(b, page.Results, 10)
	indexing := time.Since(start)
	for _, q := range []struct{ name, query string }{
		{"frequent", words[0]},
		{"two-words", words[1] + " " + words[7]},
		{"rare", "xylophone"},
	} {
		b.Run(q.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := p.Search(ctx, q.query, 20); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(indexing.Seconds(), "index-s")
		})
	}
}
