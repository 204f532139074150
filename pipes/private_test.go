package pipes

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A private pipeline: its members read, write and read its history; a
// third authenticated user is refused all of it, however it asks.
func TestPrivatePipelineRefusesNonMembers(t *testing.T) {
	keys := newTestKeys("alice", "bob", "carol")
	hub := startHub(t, HubConfig{UserKeys: keys.UserKeys})
	ctx := testCtx(t, 30*time.Second)

	alice := openNode(t, keys, "alice", hub.addr, "")
	dm, err := alice.Pipeline("DM", &PipelineOptions{Persistent: true, Members: []string{"bob"}})
	require.NoError(t, err)
	waitOpened(t, ctx, alice, dm)
	assert.Equal(t, []string{"alice", "bob"}, dm.Members())
	_, err = dm.Put(ctx, []byte("hi bob"))
	require.NoError(t, err)
	require.NoError(t, alice.Flush(ctx))

	bob := openNode(t, keys, "bob", hub.addr, "")
	pb, err := bob.Pipeline("DM", &PipelineOptions{Persistent: true})
	require.NoError(t, err)
	got := newCollector()
	pb.Listen(got.listen)
	assert.Equal(t, "hi bob", string(got.waitFor(t, ctx, 1)[0].Data))
	page, err := pb.History(ctx, HistoryQuery{})
	require.NoError(t, err)
	assert.Len(t, page.Packets, 1)

	// Carol, through a node: the open is refused and reported.
	carol := openNode(t, keys, "carol", hub.addr, "")
	refused := make(chan error, 1)
	pc, err := carol.Pipeline("DM", &PipelineOptions{Persistent: true, OnError: func(err error) {
		select {
		case refused <- err:
		default:
		}
	}})
	require.NoError(t, err)
	select {
	case err := <-refused:
		require.ErrorIs(t, err, ErrForbidden)
	case <-ctx.Done():
		t.Fatal("carol's open was not refused")
	}
	_, err = pc.History(ctx, HistoryQuery{})
	require.ErrorIs(t, err, ErrForbidden)
	list, err := carol.Pipelines(ctx)
	require.NoError(t, err)
	assert.Empty(t, list, "a non-member does not see the pipeline listed")

	// Carol, raw: every method is refused.
	c := rawNode(t, keys, "carol", hub.addr)
	node := make([]byte, 16)
	for _, tc := range []struct {
		name   string
		method string
		req    any
	}{
		{"open", methodOpen, openRequest{Name: "DM", Persistent: true}},
		{"open to create", methodOpen, openRequest{Name: "DM", Persistent: true, Create: true}},
		{"put", methodPut, putRequest{Pipeline: "DM", Node: node, Packets: []wirePacket{{N: 1, Data: []byte("x")}}}},
		{"read", methodRead, readRequest{Pipeline: "DM"}},
		{"history", methodHistory, historyRequest{Pipeline: "DM"}},
		{"search", methodSearch, searchRequest{Pipeline: "DM", Query: "bob"}},
		{"members", methodMembers, membersRequest{Pipeline: "DM", Members: []string{"carol"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var reply any
			err := c.Invoke(ctx, tc.method, tc.req, &reply)
			require.ErrorIs(t, hubError(err), ErrForbidden)
		})
	}
	// Bob is a member, not the owner: he may not change the members.
	var reply any
	err = rawNode(t, keys, "bob", hub.addr).Invoke(ctx, methodMembers, membersRequest{Pipeline: "DM", Members: []string{"bob", "carol"}}, &reply)
	require.ErrorIs(t, hubError(err), ErrForbidden)
}

// The owner removes a member: the member's waiting read ends refused, and
// nothing put afterwards reaches it.
func TestRemovedMemberIsRefusedAtOnce(t *testing.T) {
	keys := newTestKeys("alice", "bob")
	hub := startHub(t, HubConfig{UserKeys: keys.UserKeys})
	ctx := testCtx(t, 30*time.Second)
	alice := openNode(t, keys, "alice", hub.addr, "")
	pa, err := alice.Pipeline("ROOM", &PipelineOptions{Persistent: true, Members: []string{"bob"}})
	require.NoError(t, err)
	waitOpened(t, ctx, alice, pa)

	// Bob's raw read waits for a packet.
	c := rawNode(t, keys, "bob", hub.addr)
	done := make(chan error, 1)
	go func() {
		var reply readReply
		done <- c.Invoke(ctx, methodRead, readRequest{Pipeline: "ROOM", WaitMillis: 20_000}, &reply)
	}()
	time.Sleep(100 * time.Millisecond) // let it wait; the test holds either way

	require.NoError(t, pa.SetMembers(ctx, []string{"alice"}))
	assert.Equal(t, []string{"alice"}, pa.Members())
	_, err = pa.Put(ctx, []byte("after"))
	require.NoError(t, err)
	select {
	case err := <-done:
		require.ErrorIs(t, hubError(err), ErrForbidden)
	case <-ctx.Done():
		t.Fatal("the read of a removed member did not end")
	}

	// The owner stays a member whatever it asks for.
	require.NoError(t, pa.SetMembers(ctx, []string{"bob"}))
	assert.Equal(t, []string{"alice", "bob"}, pa.Members())
}

func TestPrivateMembersAreChecked(t *testing.T) {
	keys := newTestKeys("alice")
	hub := startHub(t, HubConfig{UserKeys: keys.UserKeys})
	ctx := testCtx(t, 20*time.Second)
	c := rawNode(t, keys, "alice", hub.addr)
	many := make([]string, MaxMembers+1)
	for i := range many {
		many[i] = string(rune('a'+i%26)) + string(rune('A'+i/26))
	}
	for _, tc := range []struct {
		name string
		req  openRequest
	}{
		{"too many members", openRequest{Name: "A", Persistent: true, Create: true, Members: many}},
		{"a bad member name", openRequest{Name: "B", Persistent: true, Create: true, Members: []string{"x\x00"}}},
		{"encrypted and open", openRequest{Name: "C", Persistent: true, Create: true, Encrypted: true}},
		{"encrypted and transient", openRequest{Name: "D", Create: true, Encrypted: true, Members: []string{"bob"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var reply openReply
			require.ErrorIs(t, hubError(c.Invoke(ctx, methodOpen, tc.req, &reply)), ErrBadRequest)
		})
	}
}
