package pipes

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/bokbok-go/bokbok"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// historyFixture is a hub whose pipeline CHAT holds n packets "m0".."m{n-1}",
// put by alice, who is connected and has CHAT opened.
func historyFixture(t *testing.T, n int, cfg HubConfig) (*Pipeline, []Packet) {
	t.Helper()
	keys := newTestKeys("alice")
	cfg.UserKeys = keys.UserKeys
	hub := startHub(t, cfg)
	ctx := testCtx(t, 60*time.Second)
	alice := openNode(t, keys, "alice", hub.addr, "")
	p, err := alice.Pipeline("CHAT", &PipelineOptions{Persistent: true})
	require.NoError(t, err)
	c := newCollector()
	p.Listen(c.listen)
	for i := range n {
		_, err := p.Put(ctx, fmt.Appendf(nil, "m%d", i))
		require.NoError(t, err)
		if i == n/2 {
			require.NoError(t, alice.Flush(ctx))
			time.Sleep(20 * time.Millisecond) // two bursts, at distinct hub times
		}
	}
	waitOpened(t, ctx, alice, p)
	if cfg.Retention != (Retention{}) {
		// alice's own listener may fall behind retention (it is told of a
		// gap): wait for the last packet only.
		require.Eventually(t, func() bool {
			got := c.snapshot()
			return len(got) > 0 && got[len(got)-1].Seq == uint64(n)
		}, 60*time.Second, 10*time.Millisecond)
		return p, nil
	}
	return p, c.waitFor(t, ctx, n)
}

func seqsOf(ps []Packet) []uint64 {
	out := make([]uint64, len(ps))
	for i, p := range ps {
		out[i] = p.Seq
	}
	return out
}

func span(from, to uint64) []uint64 {
	var out []uint64
	for s := from; s <= to; s++ {
		out = append(out, s)
	}
	return out
}

// pages follows Next until the end and returns every packet in order of
// the pages.
func pages(t *testing.T, p *Pipeline, q HistoryQuery) (got []Packet, count int) {
	t.Helper()
	ctx := testCtx(t, 30*time.Second)
	for {
		page, err := p.History(ctx, q)
		require.NoError(t, err)
		count++
		if q.Newest {
			got = append(append([]Packet(nil), page.Packets...), got...)
		} else {
			got = append(got, page.Packets...)
		}
		if page.Next == nil {
			return got, count
		}
		q = *page.Next
	}
}

func TestHistoryBySeqRangePaged(t *testing.T) {
	p, all := historyFixture(t, 1000, HubConfig{})
	got, n := pages(t, p, HistoryQuery{Max: 100})
	assert.Equal(t, span(1, 1000), seqsOf(got))
	assert.Equal(t, 10, n)
	for i, pk := range got {
		assert.Equal(t, all[i].ID, pk.ID)
		assert.Equal(t, all[i].Data, pk.Data)
		assert.True(t, pk.Own)
		assert.Equal(t, "alice", pk.Sender)
	}

	got, _ = pages(t, p, HistoryQuery{From: 100, To: 199, Max: 30})
	assert.Equal(t, span(100, 199), seqsOf(got))

	ctx := testCtx(t, 10*time.Second)
	page, err := p.History(ctx, HistoryQuery{Newest: true, Max: 10})
	require.NoError(t, err)
	assert.Equal(t, span(991, 1000), seqsOf(page.Packets), "the newest ten, oldest first")
	require.NotNil(t, page.Next)
	assert.Equal(t, uint64(990), page.Next.To)
	assert.Equal(t, uint64(1000), page.Last)

	got, _ = pages(t, p, HistoryQuery{Newest: true, To: 50, Max: 7})
	assert.Equal(t, span(1, 50), seqsOf(got))

	page, err = p.History(ctx, HistoryQuery{From: 2000})
	require.NoError(t, err)
	assert.Empty(t, page.Packets)
	assert.Nil(t, page.Next)
}

func TestHistoryByTimeRange(t *testing.T) {
	p, all := historyFixture(t, 200, HubConfig{})
	cut := all[150].Time
	var want []uint64
	for _, pk := range all {
		if !pk.Time.Before(cut) {
			want = append(want, pk.Seq)
		}
	}
	got, _ := pages(t, p, HistoryQuery{Since: cut, Max: 16})
	assert.Equal(t, want, seqsOf(got), "since")

	want = nil
	for _, pk := range all {
		if !pk.Time.After(cut) {
			want = append(want, pk.Seq)
		}
	}
	got, _ = pages(t, p, HistoryQuery{Until: cut, Newest: true, Max: 16})
	assert.Equal(t, want, seqsOf(got), "until")

	got, _ = pages(t, p, HistoryQuery{Since: cut, Until: cut})
	for _, pk := range got {
		assert.True(t, pk.Time.Equal(cut))
	}
	assert.NotEmpty(t, got)

	got, _ = pages(t, p, HistoryQuery{Since: all[199].Time.Add(time.Hour)})
	assert.Empty(t, got)
}

func TestHistoryAfterRetentionStartsAtFirstHeld(t *testing.T) {
	p, _ := historyFixture(t, 60, HubConfig{Retention: Retention{MaxPackets: 10}})
	got, _ := pages(t, p, HistoryQuery{})
	assert.Equal(t, span(51, 60), seqsOf(got))
}

func TestHistoryRefusals(t *testing.T) {
	keys := newTestKeys("alice", "eve")
	hub := startHub(t, HubConfig{UserKeys: keys.UserKeys, Authorize: func(user, pipeline string, a Access) error {
		if user == "eve" && a == AccessRead {
			return errors.New("eve may only write")
		}
		return nil
	}})
	ctx := testCtx(t, 30*time.Second)
	alice := openNode(t, keys, "alice", hub.addr, "")
	pa, err := alice.Pipeline("CHAT", &PipelineOptions{Persistent: true})
	require.NoError(t, err)
	live, err := alice.Pipeline("LIVE", nil)
	require.NoError(t, err)
	_, err = live.History(ctx, HistoryQuery{})
	require.ErrorIs(t, err, ErrKindMismatch)
	waitOpened(t, ctx, alice, pa)
	_, err = pa.Put(ctx, []byte("x"))
	require.NoError(t, err)
	require.NoError(t, alice.Flush(ctx))

	eve := openNode(t, keys, "eve", hub.addr, "")
	pe, err := eve.Pipeline("CHAT", &PipelineOptions{Persistent: true})
	require.NoError(t, err)
	waitOpened(t, ctx, eve, pe)
	_, err = pe.History(ctx, HistoryQuery{})
	require.ErrorIs(t, err, ErrForbidden)

	offline := openNode(t, keys, "alice", "127.0.0.1:1", "")
	po, err := offline.Pipeline("CHAT", &PipelineOptions{Persistent: true})
	require.NoError(t, err)
	_, err = po.History(ctx, HistoryQuery{})
	require.ErrorIs(t, err, bokbok.ErrNotConnected)
}

func TestNodeListsThePipelinesItMayUse(t *testing.T) {
	keys := newTestKeys("alice", "eve")
	hub := startHub(t, HubConfig{UserKeys: keys.UserKeys, Authorize: func(user, pipeline string, a Access) error {
		if user == "eve" && pipeline == "STAFF" {
			return errors.New("not staff")
		}
		return nil
	}})
	ctx := testCtx(t, 30*time.Second)
	alice := openNode(t, keys, "alice", hub.addr, "")
	for _, name := range []string{"STAFF", "CHAT"} {
		p, err := alice.Pipeline(name, &PipelineOptions{Persistent: true})
		require.NoError(t, err)
		_, err = p.Put(ctx, []byte("x"))
		require.NoError(t, err)
	}
	live, err := alice.Pipeline("LIVE", nil)
	require.NoError(t, err)
	waitOpened(t, ctx, alice, live)
	require.NoError(t, alice.Flush(ctx))
	list, err := alice.Pipelines(ctx)
	require.NoError(t, err)
	assert.Equal(t, []ListedPipeline{{Name: "CHAT", Persistent: true, Last: 1}, {Name: "LIVE"}, {Name: "STAFF", Persistent: true, Last: 1}}, list)

	eve := openNode(t, keys, "eve", hub.addr, "")
	require.Eventually(t, eve.Connected, 10*time.Second, 10*time.Millisecond)
	list, err = eve.Pipelines(ctx)
	require.NoError(t, err)
	assert.Equal(t, []ListedPipeline{{Name: "CHAT", Persistent: true, Last: 1}, {Name: "LIVE"}}, list)
}
