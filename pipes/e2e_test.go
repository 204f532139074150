package pipes

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/vmihailenco/msgpack/v5"
	bolt "go.etcd.io/bbolt"
)

// errCollector records what OnError is told.
type errCollector struct {
	mu   sync.Mutex
	errs []error
}

func (e *errCollector) add(err error) {
	e.mu.Lock()
	e.errs = append(e.errs, err)
	e.mu.Unlock()
}

func encrypted(members ...string) *PipelineOptions {
	return &PipelineOptions{Persistent: true, Encrypted: true, Members: members}
}

// Alice creates an encrypted pipeline and writes before Bob's node ever
// connected; Bob's hello reaches Alice's node, which seals the key to
// it; Bob then reads everything, answers, and searches his copy. The
// hub's files hold none of the words.
func TestEncryptedPipelineHubHoldsNoPlaintext(t *testing.T) {
	keys := newTestKeys("alice", "bob")
	dir := t.TempDir()
	hub := startHub(t, HubConfig{UserKeys: keys.UserKeys, Dir: dir})
	ctx := testCtx(t, 60*time.Second)

	alice := openNode(t, keys, "alice", hub.addr, "")
	pa, err := alice.Pipeline("SECRET", encrypted("bob"))
	require.NoError(t, err)
	gotA := newCollector()
	pa.Listen(gotA.listen)
	require.Eventually(t, func() bool { _, ok := pa.currentKey(); return ok }, 20*time.Second, 5*time.Millisecond)
	const words = "zanzibar quokka marmalade"
	for i := range 5 {
		_, err := pa.Put(ctx, fmt.Appendf(nil, `{"text":"%s %d"}`, words, i))
		require.NoError(t, err)
	}

	bob := openNode(t, keys, "bob", hub.addr, "")
	pb, err := bob.Pipeline("SECRET", encrypted())
	require.NoError(t, err)
	gotB := newCollector()
	pb.Listen(gotB.listen)
	got := gotB.waitFor(t, ctx, 5)
	for i, p := range got[:5] {
		assert.Equal(t, fmt.Sprintf(`{"text":"%s %d"}`, words, i), string(p.Data))
		assert.Equal(t, "alice", p.Sender)
	}
	_, err = pb.Put(ctx, []byte(`{"text":"received, over and out"}`))
	require.NoError(t, err)
	fromBob := gotA.waitFor(t, ctx, 6)
	assert.Equal(t, `{"text":"received, over and out"}`, string(fromBob[5].Data))

	// Search runs on each node's own copy (written just after delivery).
	found := func(p *Pipeline, q string, n int) []SearchResult {
		var res SearchPage
		require.Eventually(t, func() bool {
			res, err = p.Search(ctx, q, 10)
			return err == nil && len(res.Results) == n
		}, 20*time.Second, 5*time.Millisecond, "search %q", q)
		return res.Results
	}
	found(pb, "quokka", 5)
	assert.Equal(t, "bob", found(pa, "over", 1)[0].Sender)

	// History opens what the node's keys open.
	page, err := pb.History(ctx, HistoryQuery{})
	require.NoError(t, err)
	assert.Len(t, page.Packets, 6)

	// The hub cannot search it, and holds ciphertext only.
	_, err = pb.searchHub(ctx, "quokka")
	require.ErrorIs(t, err, ErrKindMismatch)
	hub.stop()
	for _, f := range []string{"hub.db", "index.db"} {
		raw, err := os.ReadFile(filepath.Join(dir, f))
		require.NoError(t, err)
		for _, w := range []string{"zanzibar", "quokka", "marmalade", "over and out"} {
			assert.False(t, bytes.Contains(raw, []byte(w)), "%s holds %q", f, w)
		}
	}
	// And its log holds only hellos, key packets and sealed packets.
	db, err := bolt.Open(filepath.Join(dir, "hub.db"), 0o600, &bolt.Options{ReadOnly: true})
	require.NoError(t, err)
	defer db.Close()
	kinds := map[byte]int{}
	require.NoError(t, db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(logBucket("SECRET")).ForEach(func(k, v []byte) error {
			var sp storedPacket
			require.NoError(t, decodeStored(v, &sp))
			kinds[sp.Data[0]]++
			return nil
		})
	}))
	assert.Equal(t, map[byte]int{packetHello: 2, packetKey: 2, packetSealed: 6}, kinds)
}

// Removing a member rotates the key: the next key packet is sealed to the
// remaining member nodes only, and the removed member's node cannot open
// what is put after it.
func TestRemovingAMemberRotatesTheKey(t *testing.T) {
	keys := newTestKeys("alice", "bob", "carol")
	hub := startHub(t, HubConfig{UserKeys: keys.UserKeys})
	ctx := testCtx(t, 60*time.Second)
	alice := openNode(t, keys, "alice", hub.addr, "")
	pa, err := alice.Pipeline("TEAM", encrypted("bob", "carol"))
	require.NoError(t, err)
	pa.Listen(func(Packet) {})
	waitOpened(t, ctx, alice, pa)

	bob := openNode(t, keys, "bob", hub.addr, "")
	carol := openNode(t, keys, "carol", hub.addr, "")
	pb, err := bob.Pipeline("TEAM", encrypted())
	require.NoError(t, err)
	pc, err := carol.Pipeline("TEAM", encrypted())
	require.NoError(t, err)
	gotB, gotC := newCollector(), newCollector()
	pb.Listen(gotB.listen)
	pc.Listen(gotC.listen)
	// Every node holds the first key once Alice's node shared it.
	for _, p := range []*Pipeline{pa, pb, pc} {
		require.Eventually(t, func() bool { _, ok := p.currentKey(); return ok }, 20*time.Second, 5*time.Millisecond)
	}
	_, err = pb.Put(ctx, []byte("before"))
	require.NoError(t, err)
	gotC.waitFor(t, ctx, 1)
	first, _ := pa.currentKey()

	require.NoError(t, pa.SetMembers(ctx, []string{"bob"}))
	second, _ := pa.currentKey()
	require.NotEqual(t, first.ID, second.ID)
	require.Eventually(t, func() bool { k, _ := pb.currentKey(); return k.ID == second.ID }, 20*time.Second, 5*time.Millisecond)
	id, err := pb.Put(ctx, []byte("after"))
	require.NoError(t, err)
	after := gotB.waitFor(t, ctx, 2)[1]
	assert.Equal(t, "after", string(after.Data))

	// The rotation's key packet names Alice's and Bob's nodes, not Carol's.
	page, err := pa.historyRaw(ctx)
	require.NoError(t, err)
	var rotation *keyPacket
	var sealedAfter []byte
	for _, sp := range page {
		if len(sp.Data) > 0 && sp.Data[0] == packetKey {
			kp, err := parseKeyPacket(sp.Data, &[32]byte{})
			require.NoError(t, err)
			if kp.ID == second.ID {
				rotation = &kp
			}
		}
		if sp.N == id.N && bytes.Equal(sp.Node, id.Node[:]) {
			sealedAfter = sp.Data
		}
	}
	require.NotNil(t, rotation)
	assert.ElementsMatch(t, [][32]byte{alice.PublicKey(), bob.PublicKey()}, rotation.To)
	require.NotNil(t, sealedAfter)
	_, err = pc.unseal(sealedAfter)
	require.ErrorIs(t, err, ErrNoKey, "carol's node cannot open what was put after she left")
	data, err := pb.unseal(sealedAfter)
	require.NoError(t, err)
	assert.Equal(t, "after", string(data))
}

// A node's keys survive its restart, and TrustKey can refuse a member
// node's key.
func TestEncryptedKeysSurviveRestartAndTrustKeyRefuses(t *testing.T) {
	keys := newTestKeys("alice", "bob")
	hub := startHub(t, HubConfig{UserKeys: keys.UserKeys})
	ctx := testCtx(t, 60*time.Second)
	dirA := t.TempDir()
	alice := openNode(t, keys, "alice", hub.addr, dirA, func(c *NodeConfig) {
		c.TrustKey = func(user string, key [32]byte) bool { return user != "bob" }
	})
	pa, err := alice.Pipeline("SAFE", encrypted("bob"))
	require.NoError(t, err)
	pa.Listen(func(Packet) {})
	require.Eventually(t, func() bool { _, ok := pa.currentKey(); return ok }, 20*time.Second, 5*time.Millisecond)
	k1, _ := pa.currentKey()

	bob := openNode(t, keys, "bob", hub.addr, "")
	pb, err := bob.Pipeline("SAFE", encrypted())
	require.NoError(t, err)
	pb.Listen(func(Packet) {})
	waitOpened(t, ctx, bob, pb)
	_, err = pa.Put(ctx, []byte("for alice only"))
	require.NoError(t, err)
	require.NoError(t, alice.Flush(ctx))
	require.NoError(t, bob.Flush(ctx)) // bob's hello is on the hub
	// Alice's node delivers everything, Bob's hello included.
	list, err := alice.Pipelines(ctx)
	require.NoError(t, err)
	require.Len(t, list, 1)
	require.Eventually(t, func() bool {
		pa.mu.Lock()
		defer pa.mu.Unlock()
		return pa.delivered >= list[0].Last
	}, 20*time.Second, 5*time.Millisecond)
	require.NoError(t, alice.Flush(ctx)) // a key packet it (wrongly) put would be on the hub
	bob.Flush(ctx)
	time.Sleep(50 * time.Millisecond)
	pb.Put(ctx, nil) // nothing: Bob holds no key
	page, err := pb.History(ctx, HistoryQuery{})
	require.NoError(t, err)
	assert.Empty(t, page.Packets, "bob's node opens nothing")
	_, ok := pb.currentKey()
	assert.False(t, ok, "alice's node shared its key with a node it does not trust")
	_, err = pb.Put(ctx, []byte("x"))
	require.ErrorIs(t, err, ErrNoKey)

	require.NoError(t, alice.Close())
	alice = openNode(t, keys, "alice", hub.addr, dirA)
	pa, err = alice.Pipeline("SAFE", encrypted("bob"))
	require.NoError(t, err)
	k2, ok := pa.currentKey()
	require.True(t, ok)
	assert.Equal(t, k1, k2)
	got := newCollector()
	pa.Listen(got.listen)
	res, err := pa.Search(ctx, "alice", 5)
	require.NoError(t, err)
	require.Len(t, res.Results, 1)
	assert.Equal(t, "for alice only", string(res.Results[0].Data))
}

func decodeStored(v []byte, sp *storedPacket) error { return msgpack.Unmarshal(v, sp) }

// searchHub asks the hub to search the pipeline, as a plain one would.
func (p *Pipeline) searchHub(ctx context.Context, query string) (searchReply, error) {
	s, err := p.openedSession()
	if err != nil {
		return searchReply{}, err
	}
	var reply searchReply
	return reply, hubError(s.conn.Invoke(ctx, methodSearch, searchRequest{Pipeline: p.name, Query: query}, &reply))
}

// historyRaw returns the pipeline's packets as the hub holds them.
func (p *Pipeline) historyRaw(ctx context.Context) ([]storedPacket, error) {
	s, err := p.openedSession()
	if err != nil {
		return nil, err
	}
	var reply historyReply
	return reply.Packets, hubError(s.conn.Invoke(ctx, methodHistory, historyRequest{Pipeline: p.name}, &reply))
}
