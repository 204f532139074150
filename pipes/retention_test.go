package pipes

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestRetentionGapIsExplicit(t *testing.T) {
	for _, tc := range []struct {
		name      string
		retention Retention
	}{
		{"count", Retention{MaxPackets: 10}},
		{"bytes", Retention{MaxBytes: 10 * 3}}, // packets of 3 bytes
	} {
		t.Run(tc.name, func(t *testing.T) {
			keys := newTestKeys("alice", "bob")
			hub := startHub(t, HubConfig{UserKeys: keys.UserKeys, Retention: tc.retention})
			ctx := testCtx(t, 20*time.Second)
			alice := openNode(t, keys, "alice", hub.addr, "")
			pa, err := alice.Pipeline("CHAT", &PipelineOptions{Persistent: true})
			require.NoError(t, err)
			for i := range 50 {
				_, err := pa.Put(ctx, fmt.Appendf(nil, "%03d", i))
				require.NoError(t, err)
			}
			require.NoError(t, alice.Flush(ctx))

			// bob was never there: he is told of the 40 he will not see.
			bob := openNode(t, keys, "bob", hub.addr, "")
			c := newCollector()
			pb, err := bob.Pipeline("CHAT", &PipelineOptions{Persistent: true, OnGap: c.gap})
			require.NoError(t, err)
			pb.Listen(c.listen)
			got := c.waitFor(t, ctx, 10)
			require.Equal(t, []Gap{{Pipeline: "CHAT", From: 1, To: 40, Reason: GapRetention}}, c.gapList())
			for i, p := range got {
				assert.Equal(t, uint64(41+i), p.Seq)
				assert.Equal(t, fmt.Sprintf("%03d", 40+i), string(p.Data))
			}
		})
	}
}

func TestRetentionByAge(t *testing.T) {
	keys := newTestKeys("alice")
	dir := t.TempDir()
	path, err := dataFile(dir, "hub.db")
	require.NoError(t, err)
	l, err := OpenBoltLog(BoltLogConfig{Path: path, Retention: Retention{MaxAge: time.Hour}, NoSync: true})
	require.NoError(t, err)
	defer l.Close()
	ctx := context.Background()
	_, err = l.Create(ctx, PipelineSpec{Name: "P", Persistent: true})
	require.NoError(t, err)
	from := Sender{User: "alice"}
	for i := range uint64(5) {
		_, err := l.Append(ctx, "P", from, []Entry{{N: i + 1, Data: []byte("x")}})
		require.NoError(t, err)
	}
	require.NoError(t, l.Trim(ctx, time.Now()))
	res, err := l.Read(ctx, "P", 0, 100, 1<<20)
	require.NoError(t, err)
	require.Len(t, res.Records, 5, "nothing is an hour old yet")
	require.NoError(t, l.Trim(ctx, time.Now().Add(2*time.Hour)))
	res, err = l.Read(ctx, "P", 0, 100, 1<<20)
	require.NoError(t, err)
	assert.Empty(t, res.Records)
	assert.Equal(t, &Gap{Pipeline: "P", From: 1, To: 5, Reason: GapRetention}, res.Gap)
	assert.Equal(t, uint64(5), res.Last)
	in, err := l.Info(ctx, "P")
	require.NoError(t, err)
	assert.Equal(t, uint64(6), in.First)
	_ = keys
}

func TestLogDropsDuplicatesPerSender(t *testing.T) {
	path, err := dataFile(t.TempDir(), "hub.db")
	require.NoError(t, err)
	l, err := OpenBoltLog(BoltLogConfig{Path: path, MaxSenders: 2, NoSync: true})
	require.NoError(t, err)
	defer l.Close()
	ctx := context.Background()
	_, err = l.Create(ctx, PipelineSpec{Name: "P", Persistent: true})
	require.NoError(t, err)
	a := Sender{User: "alice", Node: NodeID{1}}
	acks, err := l.Append(ctx, "P", a, []Entry{{N: 1}, {N: 2}, {N: 5}})
	require.NoError(t, err)
	assert.Equal(t, []uint64{1, 2, 3}, seqs(acks))
	acks, err = l.Append(ctx, "P", a, []Entry{{N: 2}, {N: 5}, {N: 6}})
	require.NoError(t, err)
	assert.Equal(t, []bool{true, true, false}, dups(acks))
	assert.Equal(t, uint64(4), acks[2].Seq)

	// The same numbers from another node, or another user, are new.
	acks, err = l.Append(ctx, "P", Sender{User: "alice", Node: NodeID{2}}, []Entry{{N: 1}})
	require.NoError(t, err)
	assert.False(t, acks[0].Dup)
	acks, err = l.Append(ctx, "P", Sender{User: "bob", Node: NodeID{1}}, []Entry{{N: 1}})
	require.NoError(t, err)
	assert.False(t, acks[0].Dup)

	// Three senders with MaxSenders 2: the least recent (alice's first
	// node) was forgotten, so her resend is appended again.
	acks, err = l.Append(ctx, "P", a, []Entry{{N: 6}})
	require.NoError(t, err)
	assert.False(t, acks[0].Dup, "forgotten sender")

	_, err = l.Append(ctx, "P", a, []Entry{{N: 9}, {N: 8}})
	require.ErrorIs(t, err, ErrBadRequest)
	_, err = l.Append(ctx, "NOPE", a, []Entry{{N: 1}})
	require.ErrorIs(t, err, ErrUnknownPipeline)
}

func seqs(acks []Ack) []uint64 {
	var out []uint64
	for _, a := range acks {
		out = append(out, a.Seq)
	}
	return out
}

func dups(acks []Ack) []bool {
	var out []bool
	for _, a := range acks {
		out = append(out, a.Dup)
	}
	return out
}

func TestTransientOverrunGap(t *testing.T) {
	keys := newTestKeys("alice", "bob")
	hub := startHub(t, HubConfig{UserKeys: keys.UserKeys, TransientWindow: 4})
	ctx := testCtx(t, 20*time.Second)
	bob := openNode(t, keys, "bob", hub.addr, "", func(c *NodeConfig) { c.MaxBatch = 1 })
	c := newCollector()
	pb, err := bob.Pipeline("LIVE", &PipelineOptions{OnGap: c.gap})
	require.NoError(t, err)
	release := make(chan struct{})
	first := true
	pb.Listen(func(p Packet) {
		if first {
			first = false
			<-release // a slow listener
		}
		c.listen(p)
	})
	alice := openNode(t, keys, "alice", hub.addr, "")
	pa, err := alice.Pipeline("LIVE", nil)
	require.NoError(t, err)
	waitOpened(t, ctx, bob, pb)
	waitOpened(t, ctx, alice, pa)
	for i := range 20 {
		_, err := pa.Put(ctx, fmt.Appendf(nil, "%d", i))
		require.NoError(t, err)
	}
	close(release)
	require.Eventually(t, func() bool {
		got := c.snapshot()
		return len(got) > 0 && got[len(got)-1].Seq == 20
	}, 20*time.Second, 10*time.Millisecond)
	// Every Seq from 1 to 20 was either delivered or covered by a gap, in
	// order; the window of 4 cannot have held all 20.
	gaps := c.gapList()
	require.NotEmpty(t, gaps)
	covered := map[uint64]string{}
	for _, g := range gaps {
		assert.Equal(t, GapOverrun, g.Reason)
		for s := g.From; s <= g.To; s++ {
			covered[s] = "gap"
		}
	}
	var last uint64
	for _, p := range c.snapshot() {
		require.Greater(t, p.Seq, last, "order")
		last = p.Seq
		require.Empty(t, covered[p.Seq], "seq %d both delivered and missed", p.Seq)
		covered[p.Seq] = "delivered"
	}
	for s := uint64(1); s <= 20; s++ {
		require.NotEmpty(t, covered[s], "seq %d neither delivered nor reported missing", s)
	}
}

// waitOpened waits until the node's current session has opened p.
func waitOpened(t *testing.T, ctx context.Context, n *Node, p *Pipeline) {
	t.Helper()
	for {
		n.mu.Lock()
		s := n.sess
		n.mu.Unlock()
		if s != nil {
			if _, ok := s.reply(p); ok {
				return
			}
		}
		select {
		case <-ctx.Done():
			t.Fatal("the pipeline was not opened")
		case <-time.After(5 * time.Millisecond):
		}
	}
}
