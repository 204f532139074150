package pipes

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bokbok-go/bokbok"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// rawNode dials the hub as user with a plain bokbok connection, to send
// requests no well-behaved node would.
func rawNode(t *testing.T, keys *testKeys, user, addr string) *bokbok.Conn {
	t.Helper()
	key := keys.key(user)
	c, err := bokbok.Dial(testCtx(t, 10*time.Second), addr, &bokbok.Config{User: user, Key: &key})
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	return c
}

func TestHubRefusesBadRequests(t *testing.T) {
	keys := newTestKeys("mallory")
	hub := startHub(t, HubConfig{UserKeys: keys.UserKeys, MaxPacketSize: 1024, MaxBatch: 4, MaxPipelines: 3})
	c := rawNode(t, keys, "mallory", hub.addr)
	ctx := testCtx(t, 20*time.Second)
	var open openReply
	require.NoError(t, c.Invoke(ctx, methodOpen, openRequest{Name: "P", Persistent: true, Create: true}, &open))
	require.NoError(t, c.Invoke(ctx, methodOpen, openRequest{Name: "T", Create: true}, &open))
	node := make([]byte, 16)
	pk := func(ns ...uint64) []wirePacket {
		var out []wirePacket
		for _, n := range ns {
			out = append(out, wirePacket{N: n, Data: []byte("x")})
		}
		return out
	}
	cases := []struct {
		name   string
		method string
		req    any
		want   error
	}{
		{"empty name", methodOpen, openRequest{Name: "", Create: true}, ErrBadRequest},
		{"long name", methodOpen, openRequest{Name: strings.Repeat("n", MaxNameLen+1), Create: true}, ErrBadRequest},
		{"control character", methodOpen, openRequest{Name: "a\x00b", Create: true}, ErrBadRequest},
		{"not UTF-8", methodOpen, openRequest{Name: "a\xffb", Create: true}, ErrBadRequest},
		{"unknown, no create", methodOpen, openRequest{Name: "NOPE"}, ErrUnknownPipeline},
		{"other kind", methodOpen, openRequest{Name: "P", Create: true}, ErrKindMismatch},
		{"too many pipelines", methodOpen, openRequest{Name: "Q", Create: true}, nil},
		{"beyond the limit", methodOpen, openRequest{Name: "R", Create: true}, ErrLimit},
		{"put unknown pipeline", methodPut, putRequest{Pipeline: "NOPE", Node: node, Packets: pk(1)}, ErrUnknownPipeline},
		{"put short node", methodPut, putRequest{Pipeline: "P", Node: node[:3], Packets: pk(1)}, ErrBadRequest},
		{"put nothing", methodPut, putRequest{Pipeline: "P", Node: node}, ErrBadRequest},
		{"put too many", methodPut, putRequest{Pipeline: "P", Node: node, Packets: pk(1, 2, 3, 4, 5)}, ErrBadRequest},
		{"put decreasing", methodPut, putRequest{Pipeline: "P", Node: node, Packets: pk(2, 1)}, ErrBadRequest},
		{"put repeated", methodPut, putRequest{Pipeline: "P", Node: node, Packets: pk(2, 2)}, ErrBadRequest},
		{"put too large", methodPut, putRequest{Pipeline: "P", Node: node, Packets: []wirePacket{{N: 1, Data: make([]byte, 1025)}}}, ErrTooLarge},
		{"transient too large", methodPut, putRequest{Pipeline: "T", Node: node, Packets: []wirePacket{{N: 1, Data: make([]byte, 1025)}}}, ErrTooLarge},
		{"read unknown", methodRead, readRequest{Pipeline: "NOPE"}, ErrUnknownPipeline},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var out any
			err := hubError(c.Invoke(ctx, tc.method, tc.req, &out))
			if tc.want == nil {
				require.NoError(t, err)
				return
			}
			require.ErrorIs(t, err, tc.want)
			var he *HubError
			require.ErrorAs(t, err, &he)
		})
	}
	// None of it was appended, and the connection still works.
	var r readReply
	require.NoError(t, c.Invoke(ctx, methodRead, readRequest{Pipeline: "P"}, &r))
	assert.Empty(t, r.Packets)
	assert.Zero(t, r.Last)
}

func TestHubReadLimits(t *testing.T) {
	keys := newTestKeys("mallory")
	hub := startHub(t, HubConfig{UserKeys: keys.UserKeys, MaxReadsPerConn: 2, MaxBatch: 3, MaxReadBytes: 250, MaxWait: 300 * time.Millisecond})
	c := rawNode(t, keys, "mallory", hub.addr)
	ctx := testCtx(t, 20*time.Second)
	var open openReply
	require.NoError(t, c.Invoke(ctx, methodOpen, openRequest{Name: "P", Persistent: true, Create: true}, &open))
	var put putReply
	require.NoError(t, c.Invoke(ctx, methodPut, putRequest{Pipeline: "P", Node: make([]byte, 16), Packets: []wirePacket{{N: 1, Data: make([]byte, 200)}, {N: 2, Data: []byte("a")}, {N: 3, Data: []byte("b")}}}, &put))

	t.Run("max and bytes are capped by the hub", func(t *testing.T) {
		var r readReply
		require.NoError(t, c.Invoke(ctx, methodRead, readRequest{Pipeline: "P", Max: 1 << 30}, &r))
		require.Len(t, r.Packets, 1, "the first packet fills MaxReadBytes")
		require.NoError(t, c.Invoke(ctx, methodRead, readRequest{Pipeline: "P", After: 1, Max: 1 << 30}, &r))
		require.Len(t, r.Packets, 2)
	})
	t.Run("a read waits at most MaxWait", func(t *testing.T) {
		var r readReply
		start := time.Now()
		require.NoError(t, c.Invoke(ctx, methodRead, readRequest{Pipeline: "P", After: 3, WaitMillis: 1 << 40}, &r))
		assert.Empty(t, r.Packets)
		assert.Less(t, time.Since(start), 15*time.Second)
	})
	t.Run("reads beyond MaxReadsPerConn are refused", func(t *testing.T) {
		var wg sync.WaitGroup
		errs := make(chan error, 8)
		for range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				var r readReply
				errs <- c.Invoke(ctx, methodRead, readRequest{Pipeline: "P", After: 3, WaitMillis: 250}, &r)
			}()
		}
		wg.Wait()
		close(errs)
		limited := 0
		for err := range errs {
			if err != nil {
				require.ErrorIs(t, hubError(err), ErrLimit)
				limited++
			}
		}
		assert.GreaterOrEqual(t, limited, 1)
	})
}

func TestHubTransientMemoryBudget(t *testing.T) {
	keys := newTestKeys("mallory")
	hub := startHub(t, HubConfig{UserKeys: keys.UserKeys, TransientMemory: 1000, TransientBytes: 600, TransientWindow: 100})
	c := rawNode(t, keys, "mallory", hub.addr)
	ctx := testCtx(t, 20*time.Second)
	var open openReply
	for _, name := range []string{"A", "B"} {
		require.NoError(t, c.Invoke(ctx, methodOpen, openRequest{Name: name, Create: true}, &open))
	}
	put := func(name string, n uint64, size int) error {
		var r putReply
		return hubError(c.Invoke(ctx, methodPut, putRequest{Pipeline: name, Node: make([]byte, 16), Packets: []wirePacket{{N: n, Data: make([]byte, size)}}}, &r))
	}
	for i := range uint64(10) {
		require.NoError(t, put("A", i+1, 100)) // A's window keeps the last 600 bytes
	}
	require.NoError(t, put("B", 1, 400))
	require.ErrorIs(t, put("B", 2, 500), ErrLimit, "the hub's transient memory is spent, even after dropping B's own")
	assert.LessOrEqual(t, hub.transientBytes.Load(), int64(1000))
}

func TestHubRefusesInsecureAndUnknownNodes(t *testing.T) {
	keys := newTestKeys("alice")
	hub := startHub(t, HubConfig{UserKeys: keys.UserKeys})
	ctx := testCtx(t, 20*time.Second)
	_, err := bokbok.Dial(ctx, hub.addr, nil)
	require.Error(t, err, "an insecure client")
	wrong, _ := bokbok.GenerateKey()
	_, err = bokbok.Dial(ctx, hub.addr, &bokbok.Config{User: "alice", Key: &wrong})
	require.ErrorIs(t, err, bokbok.ErrAuth)

	// A node with the wrong key keeps its packets and never reaches the
	// hub; it is told why.
	keysWrong := newTestKeys("alice")
	failures := make(chan error, 16)
	n := openNode(t, keysWrong, "alice", hub.addr, "", func(c *NodeConfig) {
		c.OnDisconnect = func(err error) {
			select {
			case failures <- err:
			default:
			}
		}
	})
	p, err := n.Pipeline("CHAT", &PipelineOptions{Persistent: true})
	require.NoError(t, err)
	_, err = p.Put(ctx, []byte("hello"))
	require.NoError(t, err)
	select {
	case err := <-failures:
		require.ErrorIs(t, err, bokbok.ErrAuth)
	case <-ctx.Done():
		t.Fatal("no connection failure reported")
	}
	packets, _ := n.Outbox()
	assert.Equal(t, 1, packets)
}

func TestHubAuthorize(t *testing.T) {
	keys := newTestKeys("alice", "eve")
	hub := startHub(t, HubConfig{UserKeys: keys.UserKeys, Authorize: func(user, pipeline string, a Access) error {
		if user == "eve" && (pipeline == "STAFF" || a == AccessCreate) {
			return errors.New("not staff")
		}
		return nil
	}})
	ctx := testCtx(t, 20*time.Second)
	alice := openNode(t, keys, "alice", hub.addr, "")
	pa, err := alice.Pipeline("STAFF", &PipelineOptions{Persistent: true})
	require.NoError(t, err)
	ca := newCollector()
	pa.Listen(ca.listen)
	_, err = pa.Put(ctx, []byte("secret"))
	require.NoError(t, err)
	ca.waitFor(t, ctx, 1)

	refused := make(chan error, 4)
	eve := openNode(t, keys, "eve", hub.addr, "")
	pe, err := eve.Pipeline("STAFF", &PipelineOptions{Persistent: true, OnError: func(err error) { refused <- err }})
	require.NoError(t, err)
	ce := newCollector()
	pe.Listen(ce.listen)
	_, err = pe.Put(ctx, []byte("let me in"))
	require.NoError(t, err, "stored in eve's outbox")
	select {
	case err := <-refused:
		require.ErrorIs(t, err, ErrForbidden)
	case <-ctx.Done():
		t.Fatal("eve was not refused")
	}
	packets, _ := eve.Outbox()
	assert.Equal(t, 1, packets, "a refused pipeline's packets stay in the outbox")
	assert.Empty(t, ce.snapshot())

	// eve cannot create pipelines either.
	_, err = eve.Pipeline("NEW", &PipelineOptions{Persistent: true, OnError: func(err error) { refused <- err }})
	require.NoError(t, err)
	select {
	case err := <-refused:
		require.ErrorIs(t, err, ErrForbidden)
	case <-ctx.Done():
		t.Fatal("eve created a pipeline")
	}
	assert.Len(t, ca.snapshot(), 1)
}

func TestNodeRefusesOversizedPacketLocally(t *testing.T) {
	keys := newTestKeys("alice")
	hub := startHub(t, HubConfig{UserKeys: keys.UserKeys, MaxPacketSize: 100})
	ctx := testCtx(t, 20*time.Second)
	n := openNode(t, keys, "alice", hub.addr, "")
	p, err := n.Pipeline("CHAT", &PipelineOptions{Persistent: true})
	require.NoError(t, err)
	_, err = p.Put(ctx, make([]byte, DefaultMaxPacketSize+1))
	require.ErrorIs(t, err, ErrTooLarge, "beyond the default before the hub's limit is known")
	require.Eventually(t, n.Connected, 10*time.Second, 10*time.Millisecond)
	require.Eventually(t, func() bool {
		_, err := p.Put(ctx, make([]byte, 101))
		return errors.Is(err, ErrTooLarge)
	}, 10*time.Second, 10*time.Millisecond, "the hub's limit once connected")
	_, err = p.Put(ctx, bytes.Repeat([]byte("y"), 100))
	require.NoError(t, err)
	require.NoError(t, n.Flush(ctx))
	_ = context.Background
}

// Keys a hub does not know are ignored, so that newer nodes may add some.
func TestHubIgnoresUnknownKeys(t *testing.T) {
	keys := newTestKeys("alice")
	hub := startHub(t, HubConfig{UserKeys: keys.UserKeys})
	c := rawNode(t, keys, "alice", hub.addr)
	ctx := testCtx(t, 10*time.Second)
	var open openReply
	req := map[string]any{"name": "P", "persistent": true, "create": true, "colour": "blue"}
	require.NoError(t, c.Invoke(ctx, methodOpen, req, &open))
	assert.Equal(t, "P", open.Name)
	assert.True(t, open.Persistent)
}
