package pipes

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestPersistentPipelineDeliversToEveryNode(t *testing.T) {
	keys := newTestKeys("alice", "bob")
	hub := startHub(t, HubConfig{UserKeys: keys.UserKeys})
	alice := openNode(t, keys, "alice", hub.addr, "")
	bob := openNode(t, keys, "bob", hub.addr, "")
	ctx := testCtx(t, 20*time.Second)

	pa, err := alice.Pipeline("CHAT", &PipelineOptions{Persistent: true})
	require.NoError(t, err)
	pb, err := bob.Pipeline("CHAT", &PipelineOptions{Persistent: true})
	require.NoError(t, err)
	ca, cb := newCollector(), newCollector()
	pa.Listen(ca.listen)
	pb.Listen(cb.listen)

	const n = 300
	ids := make([]PacketID, n)
	for i := range n {
		ids[i], err = pa.Put(ctx, fmt.Appendf(nil, "m%d", i))
		require.NoError(t, err)
	}
	for _, c := range []*collector{ca, cb} {
		got := c.waitFor(t, ctx, n)
		require.Len(t, got, n)
		for i, p := range got {
			assert.Equal(t, uint64(i+1), p.Seq)
			assert.Equal(t, ids[i], p.ID)
			assert.Equal(t, fmt.Sprintf("m%d", i), string(p.Data))
			assert.Equal(t, "alice", p.Sender)
			assert.Equal(t, c == ca, p.Own)
		}
	}
	require.NoError(t, alice.Flush(ctx))
	packets, _ := alice.Outbox()
	assert.Zero(t, packets)
}

func TestTransientPipelineReachesConnectedNodes(t *testing.T) {
	keys := newTestKeys("alice", "bob")
	hub := startHub(t, HubConfig{UserKeys: keys.UserKeys})
	alice := openNode(t, keys, "alice", hub.addr, "")
	bob := openNode(t, keys, "bob", hub.addr, "")
	ctx := testCtx(t, 20*time.Second)

	pb, err := bob.Pipeline("NEWS", nil)
	require.NoError(t, err)
	cb := newCollector()
	pb.Listen(cb.listen)
	pa, err := alice.Pipeline("NEWS", nil)
	require.NoError(t, err)
	// Transient: only what is put once bob's connection has the pipeline.
	waitOpened(t, ctx, bob, pb)
	waitOpened(t, ctx, alice, pa)
	for i := range 10 {
		_, err := pa.Put(ctx, fmt.Appendf(nil, "n%d", i))
		require.NoError(t, err)
	}
	got := cb.waitFor(t, ctx, 10)
	for i, p := range got {
		assert.Equal(t, fmt.Sprintf("n%d", i), string(p.Data))
	}
}

// Many goroutines putting at once share group commits, on the node and on
// the hub, while acknowledgements and removals overlap.
func TestConcurrentPutsAllArriveOnce(t *testing.T) {
	keys := newTestKeys("alice", "bob")
	hub := startHub(t, HubConfig{UserKeys: keys.UserKeys})
	ctx := testCtx(t, 60*time.Second)
	alice := openNode(t, keys, "alice", hub.addr, "", func(c *NodeConfig) { c.MaxBatch = 8 })
	bob := openNode(t, keys, "bob", hub.addr, "")
	pb, err := bob.Pipeline("CHAT", &PipelineOptions{Persistent: true})
	require.NoError(t, err)
	c := newCollector()
	pb.Listen(c.listen)
	pa, err := alice.Pipeline("CHAT", &PipelineOptions{Persistent: true})
	require.NoError(t, err)
	const writers, each = 16, 100
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				_, err := pa.Put(ctx, fmt.Appendf(nil, "%d-%d", w, i))
				assert.NoError(t, err)
			}
		})
	}
	wg.Wait()
	require.NoError(t, alice.Flush(ctx))
	packets, bytes := alice.Outbox()
	assert.Zero(t, packets)
	assert.Zero(t, bytes)
	got := c.waitFor(t, ctx, writers*each)
	seen := map[string]bool{}
	for i, p := range got {
		require.Equal(t, uint64(i+1), p.Seq)
		require.False(t, seen[string(p.Data)], "twice: %s", p.Data)
		seen[string(p.Data)] = true
	}
}
