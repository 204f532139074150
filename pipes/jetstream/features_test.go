package jetstream

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/bokbok-go/bokbok/pipes"
	"github.com/stretchr/testify/require"
)

// What a single hub offers holds across hubs that share a log: a node on
// hub B searches what was put through hub A (each hub indexes the shared
// log itself), reads a private pipeline's history, and is refused by hub
// B once the owner removed it through hub A; an end-to-end encrypted
// pipeline's key reaches a member on the other hub.
func TestFeaturesAcrossHubs(t *testing.T) {
	c := startCluster(t, 3)
	keys := newKeys(t, "alice", "bob", "carol")
	a := startHub(t, keys, c.openLog(0), "hubA")
	b := startHub(t, keys, c.openLog(1), "hubB")
	alice := openNode(t, keys, "alice", a.addr)
	bob := openNode(t, keys, "bob", b.addr)
	carol := openNode(t, keys, "carol", b.addr)
	ctx := testCtx(t, 90*time.Second)

	// Search, on a plain pipeline.
	news, err := alice.Pipeline("news", &pipes.PipelineOptions{Persistent: true})
	require.NoError(t, err)
	var want pipes.PacketID
	for _, text := range []string{"the weather is fine", "quantum gravity explained", "more weather tomorrow"} {
		id, err := news.Put(ctx, []byte(text))
		require.NoError(t, err)
		if text == "quantum gravity explained" {
			want = id
		}
	}
	require.NoError(t, alice.Flush(ctx))
	bnews, err := bob.Pipeline("news", &pipes.PipelineOptions{Persistent: true})
	require.NoError(t, err)
	var page pipes.SearchPage
	require.Eventually(t, func() bool {
		page, err = bnews.Search(ctx, "quantum", 10)
		return err == nil
	}, 30*time.Second, 20*time.Millisecond, "search through hub B: %v", err)
	require.Len(t, page.Results, 1)
	require.Equal(t, want, page.Results[0].ID)

	// A private pipeline, created through hub A.
	dm, err := alice.Pipeline("dm", &pipes.PipelineOptions{Persistent: true, Members: []string{"bob"}})
	require.NoError(t, err)
	_, err = dm.Put(ctx, []byte("for bob only"))
	require.NoError(t, err)
	require.NoError(t, alice.Flush(ctx))
	bdm, err := bob.Pipeline("dm", &pipes.PipelineOptions{Persistent: true})
	require.NoError(t, err)
	got := newCollector()
	bdm.Listen(got.listen)
	require.Equal(t, "for bob only", string(got.waitFor(t, ctx, 1)[0].Data))
	refused := make(chan error, 1)
	_, err = carol.Pipeline("dm", &pipes.PipelineOptions{Persistent: true, OnError: func(err error) {
		select {
		case refused <- err:
		default:
		}
	}})
	require.NoError(t, err)
	select {
	case err := <-refused:
		require.ErrorIs(t, err, pipes.ErrForbidden)
	case <-ctx.Done():
		t.Fatal("hub B did not refuse carol")
	}
	// Removed through hub A, refused by hub B.
	require.NoError(t, dm.SetMembers(ctx, []string{"alice"}))
	require.Eventually(t, func() bool {
		_, err := bdm.History(ctx, pipes.HistoryQuery{})
		return errors.Is(err, pipes.ErrForbidden)
	}, 30*time.Second, 20*time.Millisecond, "hub B still serves bob the pipeline he was removed from")

	// End-to-end encrypted, the key sealed through hub A to a member on
	// hub B.
	sec, err := alice.Pipeline("secret", &pipes.PipelineOptions{Persistent: true, Encrypted: true, Members: []string{"bob"}})
	require.NoError(t, err)
	// Alice's node listens: a node seals the key to the hellos it
	// delivers.
	sec.Listen(func(pipes.Packet) {})
	// The owner's node makes the key once the hub has opened the
	// pipeline; until then Put says there is none.
	require.Eventually(t, func() bool {
		_, err = sec.Put(ctx, []byte("sealed words"))
		return !errors.Is(err, pipes.ErrNoKey)
	}, 30*time.Second, 10*time.Millisecond)
	require.NoError(t, err)
	bsec, err := bob.Pipeline("secret", &pipes.PipelineOptions{Persistent: true, Encrypted: true})
	require.NoError(t, err)
	sealed := newCollector()
	bsec.Listen(sealed.listen)
	require.Equal(t, "sealed words", string(sealed.waitFor(t, ctx, 1)[0].Data))

	// The shared log holds the sealed packet only as ciphertext.
	l := c.openLog(2)
	in, err := l.Info(ctx, "secret")
	require.NoError(t, err)
	require.True(t, in.Encrypted)
	res, err := l.Read(context.Background(), "secret", 0, 100, 1<<20)
	require.NoError(t, err)
	require.NotEmpty(t, res.Records)
	for _, r := range res.Records {
		require.NotContains(t, string(r.Data), "sealed words")
	}
}
