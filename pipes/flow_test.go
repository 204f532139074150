package pipes

import (
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A listener that does not return holds back its pipeline: the node reads
// no more than the batch being delivered and one queued, and the hub holds
// nothing for it; once the listener moves, the node catches up from the
// log, in order.
func TestSlowListenerStopsReadsAndCatchesUp(t *testing.T) {
	keys := newTestKeys("alice", "bob")
	hub := startHub(t, HubConfig{UserKeys: keys.UserKeys, MaxBatch: 16})
	ctx := testCtx(t, 60*time.Second)
	alice := openNode(t, keys, "alice", hub.addr, "")
	bob := openNode(t, keys, "bob", hub.addr, "")
	pa, err := alice.Pipeline("CHAT", &PipelineOptions{Persistent: true})
	require.NoError(t, err)
	pb, err := bob.Pipeline("CHAT", &PipelineOptions{Persistent: true})
	require.NoError(t, err)
	release := make(chan struct{})
	c := newCollector()
	pb.Listen(func(p Packet) {
		<-release
		c.listen(p)
	})
	const n = 2000
	for i := range n {
		_, err := pa.Put(ctx, fmt.Appendf(nil, "%d", i))
		require.NoError(t, err)
	}
	require.NoError(t, alice.Flush(ctx))
	time.Sleep(200 * time.Millisecond) // let bob read all it would
	_, fetched := pb.fetchPosition()
	assert.LessOrEqual(t, fetched, uint64(2*16), "bob read ahead of a stuck listener")
	hub.mu.Lock()
	reads := len(hub.reads)
	hub.mu.Unlock()
	assert.Zero(t, reads, "no read waits at the hub for a stuck listener")

	close(release)
	got := c.waitFor(t, ctx, n)
	for i, p := range got {
		require.Equal(t, uint64(i+1), p.Seq)
	}
}
