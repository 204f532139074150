package pipes

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestNodeDirectoryBelongsToOneUserAndProcess(t *testing.T) {
	keys := newTestKeys("alice", "bob")
	dir := t.TempDir()
	n := openNode(t, keys, "alice", "127.0.0.1:1", dir)
	_, err := OpenNode(NodeConfig{Dir: dir, Hub: "127.0.0.1:1", User: "alice", Key: keys.key("alice")})
	require.ErrorIs(t, err, ErrInUse)
	require.NoError(t, n.Close())
	_, err = OpenNode(NodeConfig{Dir: dir, Hub: "127.0.0.1:1", User: "bob", Key: keys.key("bob")})
	require.ErrorIs(t, err, ErrIdentity)
	again := openNode(t, keys, "alice", "127.0.0.1:1", dir)
	assert.Equal(t, n.ID(), again.ID(), "the node keeps its ID")
}

func TestNodeOutboxFullAndKindFixed(t *testing.T) {
	keys := newTestKeys("alice")
	n := openNode(t, keys, "alice", "127.0.0.1:1", "", func(c *NodeConfig) { c.MaxOutboxPackets = 3 })
	ctx := testCtx(t, 10*time.Second)
	p, err := n.Pipeline("CHAT", &PipelineOptions{Persistent: true})
	require.NoError(t, err)
	for range 3 {
		_, err := p.Put(ctx, []byte("x"))
		require.NoError(t, err)
	}
	_, err = p.Put(ctx, []byte("x"))
	require.ErrorIs(t, err, ErrOutboxFull)
	_, err = n.Pipeline("CHAT", nil)
	require.ErrorIs(t, err, ErrKindMismatch)
	_, err = n.Pipeline("", nil)
	require.ErrorIs(t, err, ErrBadName)

	tp, err := n.Pipeline("LIVE", nil)
	require.NoError(t, err)
	_, err = tp.Put(ctx, []byte("x"))
	require.Error(t, err, "a transient put while not connected")
}

func TestOutboxSurvivesRestartOfTheNode(t *testing.T) {
	keys := newTestKeys("alice", "bob")
	ctx := testCtx(t, 30*time.Second)
	dir := t.TempDir()
	offline, err := OpenNode(NodeConfig{Dir: dir, Hub: "127.0.0.1:1", User: "alice", Key: keys.key("alice")})
	require.NoError(t, err)
	p, err := offline.Pipeline("CHAT", &PipelineOptions{Persistent: true})
	require.NoError(t, err)
	var ids []PacketID
	for i := range 5 {
		id, err := p.Put(ctx, fmt.Appendf(nil, "%d", i))
		require.NoError(t, err)
		ids = append(ids, id)
	}
	require.NoError(t, offline.Close())

	hub := startHub(t, HubConfig{UserKeys: keys.UserKeys})
	alice := openNode(t, keys, "alice", hub.addr, dir) // the pipeline is remembered
	bob := openNode(t, keys, "bob", hub.addr, "")
	pb, err := bob.Pipeline("CHAT", &PipelineOptions{Persistent: true})
	require.NoError(t, err)
	c := newCollector()
	pb.Listen(c.listen)
	got := c.waitFor(t, ctx, 5)
	for i, pk := range got {
		assert.Equal(t, ids[i], pk.ID)
	}
	require.NoError(t, alice.Flush(ctx))
}

// A hub whose database is full refuses puts; the node keeps them and
// delivers them once the hub has room again.
func TestFullHubKeepsPacketsInOutbox(t *testing.T) {
	keys := newTestKeys("alice", "bob")
	ctx := testCtx(t, 60*time.Second)
	hubDir := t.TempDir()
	hub := startHub(t, HubConfig{UserKeys: keys.UserKeys, Dir: hubDir, MaxSize: 1 << 20})
	alice := openNode(t, keys, "alice", hub.addr, "")
	pa, err := alice.Pipeline("CHAT", &PipelineOptions{Persistent: true})
	require.NoError(t, err)
	data := make([]byte, 64<<10)
	const n = 40 // 2.5 MiB: more than the hub may hold
	for range n {
		_, err := pa.Put(ctx, data)
		require.NoError(t, err)
	}
	require.Eventually(t, func() bool {
		packets, _ := alice.Outbox()
		return packets > 0 && packets < n
	}, 30*time.Second, 20*time.Millisecond, "the hub took some, then filled up")
	time.Sleep(300 * time.Millisecond)
	packets, _ := alice.Outbox()
	require.Positive(t, packets, "the rest waits in the outbox")

	// The hub restarts with room.
	addr := hub.addr
	hub.stop()
	ln := listenAgain(t, addr)
	startHubOn(t, HubConfig{UserKeys: keys.UserKeys, Dir: hubDir}, ln)
	require.NoError(t, alice.Flush(ctx))
	bob := openNode(t, keys, "bob", addr, "")
	pb, err := bob.Pipeline("CHAT", &PipelineOptions{Persistent: true})
	require.NoError(t, err)
	c := newCollector()
	pb.Listen(c.listen)
	got := c.waitFor(t, ctx, n)
	for i, p := range got {
		require.Equal(t, uint64(i+1), p.Seq)
	}
}

func TestCorruptHubDatabaseIsAStorageError(t *testing.T) {
	keys := newTestKeys("alice")
	dir := t.TempDir()
	path := filepath.Join(dir, "hub.db")

	t.Run("garbage", func(t *testing.T) {
		require.NoError(t, os.WriteFile(path, []byte("this is not a database, not even close to one....................................................."), 0o600))
		_, err := NewHub(HubConfig{UserKeys: keys.UserKeys, Dir: dir})
		require.ErrorIs(t, err, ErrStorage)
		var se *StorageError
		require.ErrorAs(t, err, &se)
		assert.Equal(t, path, se.Path)
	})
	t.Run("damaged pages", func(t *testing.T) {
		require.NoError(t, os.Remove(path))
		l, err := OpenBoltLog(BoltLogConfig{Path: path, NoSync: true})
		require.NoError(t, err)
		ctx := testCtx(t, 10*time.Second)
		for i := range 20 {
			_, err := l.Create(ctx, PipelineSpec{Name: fmt.Sprintf("P%d", i), Persistent: true})
			require.NoError(t, err)
			_, err = l.Append(ctx, fmt.Sprintf("P%d", i), Sender{User: "alice"}, []Entry{{N: 1, Data: make([]byte, 3000)}})
			require.NoError(t, err)
		}
		require.NoError(t, l.Close())
		b, err := os.ReadFile(path)
		require.NoError(t, err)
		for i := 4 * 4096; i < len(b); i++ { // keep the meta pages, ruin the rest
			b[i] ^= 0x5a
		}
		require.NoError(t, os.WriteFile(path, b, 0o600))
		h, err := NewHub(HubConfig{UserKeys: keys.UserKeys, Dir: dir})
		if err == nil {
			h.Close()
			t.Fatal("a hub opened a ruined database")
		}
		require.ErrorIs(t, err, ErrStorage)
	})
}

// A hub that comes back with a new, empty log (its data lost): the node
// reports that its cursor no longer applies, then delivers the new log
// from its first packet.
func TestHubLogCreatedAnewIsAResetGap(t *testing.T) {
	keys := newTestKeys("alice")
	ctx := testCtx(t, 60*time.Second)
	hub := startHub(t, HubConfig{UserKeys: keys.UserKeys})
	c := newCollector()
	n := openNode(t, keys, "alice", hub.addr, "")
	p, err := n.Pipeline("CHAT", &PipelineOptions{Persistent: true, OnGap: c.gap})
	require.NoError(t, err)
	p.Listen(c.listen)
	for range 5 {
		_, err := p.Put(ctx, []byte("old"))
		require.NoError(t, err)
	}
	c.waitFor(t, ctx, 5)

	addr := hub.addr
	hub.stop()
	startHubOn(t, HubConfig{UserKeys: keys.UserKeys, Dir: t.TempDir()}, listenAgain(t, addr))
	_, err = p.Put(ctx, []byte("new"))
	require.NoError(t, err)
	got := c.waitFor(t, ctx, 6)
	assert.Equal(t, []Gap{{Pipeline: "CHAT", From: 1, To: 5, Reason: GapReset}}, c.gapList())
	assert.Equal(t, uint64(1), got[5].Seq)
	assert.Equal(t, "new", string(got[5].Data))
	cur, err := n.store.cursor("CHAT")
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		cur, err = n.store.cursor("CHAT")
		return err == nil && cur.Seq == 1
	}, 10*time.Second, 10*time.Millisecond, "the cursor moves to the new log")
}
