package pipes

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// chatLine is a chat message as examples/pipechat sends it.
func chatLine(sender, text string) []byte {
	return fmt.Appendf(nil, `{"text":%q,"sender":%q,"timestamp":1}`, text, sender)
}

// fill appends n messages to a pipeline through the hub's log, fast.
func fill(t testing.TB, h *Hub, name string, n int, text func(i int) string) {
	t.Helper()
	ctx := context.Background()
	from := Sender{User: "filler", Node: NodeID{1}}
	for i := 0; i < n; {
		var es []Entry
		for ; i < n && len(es) < 256; i++ {
			es = append(es, Entry{N: uint64(i + 1), Data: chatLine("filler", text(i))})
		}
		_, err := h.log.Append(ctx, name, from, es)
		require.NoError(t, err)
	}
	h.mu.Lock()
	p := h.pipelines[name]
	h.mu.Unlock()
	p.wake()
	if h.index != nil {
		h.index.changed(name)
	}
}

func TestSearchRanksMatchesOnTheHub(t *testing.T) {
	keys := newTestKeys("alice")
	dir := t.TempDir()
	hub := startHub(t, HubConfig{UserKeys: keys.UserKeys, Dir: dir, Retention: Retention{MaxPackets: 900}})
	ctx := testCtx(t, 60*time.Second)
	alice := openNode(t, keys, "alice", hub.addr, "")
	p, err := alice.Pipeline("CHAT", &PipelineOptions{Persistent: true})
	require.NoError(t, err)
	waitOpened(t, ctx, alice, p)
	fill(t, hub.Hub, "CHAT", 1000, func(i int) string {
		switch {
		case i == 950:
			return "the quokka smiles quokka quokka"
		case i == 960:
			return "a quokka in a long sentence about many other things on the island"
		case i == 10:
			return "a quokka removed by retention"
		case i%2 == 0:
			return fmt.Sprintf("hello number %d", i)
		}
		return fmt.Sprintf("goodbye number %d", i)
	})
	page, err := p.Search(ctx, "Quokka", 0)
	require.NoError(t, err)
	require.Len(t, page.Results, 2, "the packet removed by retention is not found")
	assert.Equal(t, uint64(951), page.Results[0].Seq, "more occurrences in a shorter text rank first")
	assert.Equal(t, uint64(961), page.Results[1].Seq)
	assert.Greater(t, page.Results[0].Score, page.Results[1].Score)
	assert.Contains(t, string(page.Results[0].Data), "smiles")
	assert.Equal(t, "filler", page.Results[0].Sender)

	// Any word matches; the rarer weighs more.
	page, err = p.Search(ctx, "hello smiles", 3)
	require.NoError(t, err)
	require.Len(t, page.Results, 3)
	assert.Equal(t, uint64(951), page.Results[0].Seq)

	// A packet put through a node is found at once.
	_, err = p.Put(ctx, chatLine("alice", "fresh zebra"))
	require.NoError(t, err)
	require.NoError(t, alice.Flush(ctx))
	page, err = p.Search(ctx, "zebra", 5)
	require.NoError(t, err)
	require.Len(t, page.Results, 1)
	assert.True(t, page.Results[0].Own)

	// The index is a cache: lost, it is rebuilt from the log.
	hub.stop()
	require.NoError(t, os.Remove(filepath.Join(dir, "index.db")))
	hub2 := startHubOn(t, HubConfig{UserKeys: keys.UserKeys, Dir: dir, Retention: Retention{MaxPackets: 900}}, listenAgain(t, hub.addr))
	_ = hub2
	require.Eventually(t, alice.Connected, 20*time.Second, 5*time.Millisecond)
	waitOpened(t, ctx, alice, p)
	page, err = p.Search(ctx, "quokka zebra", 5)
	require.NoError(t, err)
	assert.Len(t, page.Results, 3)
}

func TestSearchRefusals(t *testing.T) {
	keys := newTestKeys("alice")
	hub := startHub(t, HubConfig{UserKeys: keys.UserKeys})
	noIndex := startHub(t, HubConfig{UserKeys: keys.UserKeys, NoSearch: true})
	ctx := testCtx(t, 30*time.Second)
	alice := openNode(t, keys, "alice", hub.addr, "")
	live, err := alice.Pipeline("LIVE", nil)
	require.NoError(t, err)
	_, err = live.Search(ctx, "x", 0)
	require.ErrorIs(t, err, ErrKindMismatch)
	p, err := alice.Pipeline("CHAT", &PipelineOptions{Persistent: true})
	require.NoError(t, err)
	waitOpened(t, ctx, alice, p)
	_, err = p.Search(ctx, string(make([]byte, MaxSearchQuery+1)), 0)
	require.ErrorIs(t, err, ErrBadRequest)
	page, err := p.Search(ctx, "  ,,, ", 0)
	require.NoError(t, err)
	assert.Empty(t, page.Results, "a query without words finds nothing")

	c := rawNode(t, keys, "alice", hub.addr)
	var reply searchReply
	err = c.Invoke(ctx, methodSearch, searchRequest{Pipeline: "CHAT", Query: string(make([]byte, MaxSearchQuery+1))}, &reply)
	require.ErrorIs(t, hubError(err), ErrBadRequest)
	err = c.Invoke(ctx, methodSearch, searchRequest{Pipeline: "NOPE", Query: "x"}, &reply)
	require.ErrorIs(t, hubError(err), ErrUnknownPipeline)

	bob := openNode(t, keys, "alice", noIndex.addr, "")
	pb, err := bob.Pipeline("CHAT", &PipelineOptions{Persistent: true})
	require.NoError(t, err)
	waitOpened(t, ctx, bob, pb)
	_, err = pb.Search(ctx, "x", 0)
	require.ErrorIs(t, err, ErrStorage)
}
