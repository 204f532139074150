package jetstream

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/bokbok-go/bokbok"
	"github.com/bokbok-go/bokbok/pipes"
	"github.com/stretchr/testify/require"
)

// testKeys is a fixed table of users and keys.
type testKeys map[string]bokbok.Key

func newKeys(t testing.TB, users ...string) testKeys {
	k := testKeys{}
	for _, u := range users {
		key, err := bokbok.GenerateKey()
		require.NoError(t, err)
		k[u] = key
	}
	return k
}

func (k testKeys) UserKeys(user string) []bokbok.Key {
	if key, ok := k[user]; ok {
		return []bokbok.Key{key}
	}
	return nil
}

func testLogger(who string) *slog.Logger {
	if os.Getenv("PIPES_TEST_LOG") == "" {
		return nil
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})).With("who", who)
}

// testHub is a hub on a loopback listener, over a Log of its own.
type testHub struct {
	*pipes.Hub
	addr string
	done chan error
	once sync.Once
}

func startHub(t testing.TB, keys testKeys, l *Log, name string) *testHub {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	h, err := pipes.NewHub(pipes.HubConfig{Log: l, Dir: t.TempDir(), UserKeys: keys.UserKeys, Logger: testLogger(name), MaxWait: 5 * time.Second})
	require.NoError(t, err)
	th := &testHub{Hub: h, addr: ln.Addr().String(), done: make(chan error, 1)}
	go func() { th.done <- h.Serve(ln) }()
	t.Cleanup(th.stop)
	return th
}

func (th *testHub) stop() {
	th.once.Do(func() {
		th.Close()
		<-th.done
	})
}

func openNode(t testing.TB, keys testKeys, user string, hub string, hubs ...string) *pipes.Node {
	t.Helper()
	cfg := pipes.NodeConfig{Dir: t.TempDir(), Hub: hub, Hubs: hubs, User: user, Key: keys[user], NoSync: true, Logger: testLogger(user)}
	cfg.Client.MinBackoff = 20 * time.Millisecond
	cfg.Client.MaxBackoff = 200 * time.Millisecond
	n, err := pipes.OpenNode(cfg)
	require.NoError(t, err)
	t.Cleanup(func() { n.Close() })
	return n
}

// collector records what a listener is given.
type collector struct {
	mu      sync.Mutex
	packets []pipes.Packet
	gaps    []pipes.Gap
	changed chan struct{}
}

func newCollector() *collector { return &collector{changed: make(chan struct{}, 1)} }

func (c *collector) listen(p pipes.Packet) {
	c.mu.Lock()
	c.packets = append(c.packets, p)
	c.mu.Unlock()
	select {
	case c.changed <- struct{}{}:
	default:
	}
}

func (c *collector) gap(g pipes.Gap) {
	c.mu.Lock()
	c.gaps = append(c.gaps, g)
	c.mu.Unlock()
}

func (c *collector) snapshot() []pipes.Packet {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]pipes.Packet(nil), c.packets...)
}

func (c *collector) waitFor(t testing.TB, ctx context.Context, n int) []pipes.Packet {
	t.Helper()
	for {
		got := c.snapshot()
		if len(got) >= n {
			return got
		}
		select {
		case <-c.changed:
		case <-ctx.Done():
			t.Fatalf("got %d packets, want %d", len(got), n)
		}
	}
}

// TestFailover is the acceptance test of a shared log: three JetStream
// servers, three hubs, three nodes putting and listening on a persistent
// pipeline, each node able to reach every hub. While they put, one hub
// process is killed and one JetStream server is shut down (and later started
// again). Every packet whose Put returned reaches every node exactly
// once, in the same order on all of them, without a gap.
func TestFailover(t *testing.T) {
	c := startCluster(t, 3)
	users := []string{"alice", "bob", "carol"}
	keys := newKeys(t, users...)
	// Hub 0 is a process of its own, to be killed; hubs 1 and 2 run here.
	killed := startChildHub(t, c, keys)
	addrs := []string{killed.addr}
	for i := 1; i < 3; i++ {
		addrs = append(addrs, startHub(t, keys, c.openLog(i), fmt.Sprint("hub", i)).addr)
	}
	const perNode = 300
	const name = "events"
	var cols []*collector
	var pls []*pipes.Pipeline
	for i, u := range users {
		var others []string
		for j := range addrs {
			if j != i {
				others = append(others, addrs[j])
			}
		}
		n := openNode(t, keys, u, addrs[i], others...)
		col := newCollector()
		p, err := n.Pipeline(name, &pipes.PipelineOptions{Persistent: true, OnGap: col.gap})
		require.NoError(t, err)
		p.Listen(col.listen)
		cols, pls = append(cols, col), append(pls, p)
	}
	ctx := testCtx(t, 120*time.Second)
	var mu sync.Mutex
	returned := map[pipes.PacketID]bool{}
	var wg sync.WaitGroup
	progress := make(chan struct{}, 3*perNode)
	for i, p := range pls {
		wg.Go(func() {
			for k := range perNode {
				id, err := p.Put(ctx, fmt.Appendf(nil, "%s %d", users[i], k))
				if err != nil {
					t.Errorf("%s: put %d: %v", users[i], k, err)
					return
				}
				mu.Lock()
				returned[id] = true
				mu.Unlock()
				progress <- struct{}{}
				time.Sleep(5 * time.Millisecond)
			}
		})
	}
	// A third of the way: kill hub 0 (alice's) and shut down JetStream
	// server 1 (hub 1's); start the server again two thirds of the way.
	for range perNode {
		<-progress
	}
	killed.kill()
	for range perNode / 2 {
		<-progress
	}
	c.stop(1)
	for range perNode {
		<-progress
	}
	c.restart(1)
	wg.Wait()

	require.Len(t, returned, 3*perNode)

	var first []pipes.PacketID
	for i, col := range cols {
		got := col.waitFor(t, ctx, 3*perNode)
		time.Sleep(100 * time.Millisecond) // anything more would be a duplicate
		got = col.snapshot()
		require.Len(t, got, 3*perNode, "%s: every packet once", users[i])
		require.Empty(t, col.gaps, "%s: no gap", users[i])
		ids := make([]pipes.PacketID, len(got))
		seen := map[pipes.PacketID]bool{}
		for k, pk := range got {
			require.Equal(t, uint64(k+1), pk.Seq, "%s: packet %d out of order", users[i], k)
			require.False(t, seen[pk.ID], "%s: %v twice", users[i], pk.ID)
			seen[pk.ID] = true
			require.True(t, returned[pk.ID], "%s: %v was never put", users[i], pk.ID)
			ids[k] = pk.ID
		}
		if first == nil {
			first = ids
		} else {
			require.Equal(t, first, ids, "%s sees another order", users[i])
		}
	}
}

// TestTransientAcrossHubs: a node on hub A puts on a transient pipeline,
// a node on hub B listening receives.
func TestTransientAcrossHubs(t *testing.T) {
	c := startCluster(t, 3)
	keys := newKeys(t, "alice", "bob")
	a := startHub(t, keys, c.openLog(0), "hubA")
	b := startHub(t, keys, c.openLog(1), "hubB")
	alice := openNode(t, keys, "alice", a.addr)
	bob := openNode(t, keys, "bob", b.addr)
	ctx := testCtx(t, 60*time.Second)
	col := newCollector()
	pb, err := bob.Pipeline("chat", &pipes.PipelineOptions{OnGap: col.gap})
	require.NoError(t, err)
	pb.Listen(col.listen)
	pa, err := alice.Pipeline("chat", nil)
	require.NoError(t, err)
	// Transient packets reach only the nodes reading when they are put:
	// put until bob has one, then ten more.
	require.Eventually(t, func() bool {
		pa.Put(ctx, []byte("hello?"))
		return len(col.snapshot()) > 0
	}, 30*time.Second, 50*time.Millisecond)
	for k := range 10 {
		_, err := pa.Put(ctx, fmt.Appendf(nil, "msg %d", k))
		require.NoError(t, err)
	}
	var msgs []pipes.Packet
	for {
		msgs = msgs[:0]
		for _, pk := range col.snapshot() {
			if string(pk.Data) != "hello?" {
				msgs = append(msgs, pk)
			}
		}
		if len(msgs) >= 10 {
			break
		}
		select {
		case <-col.changed:
		case <-ctx.Done():
			t.Fatalf("bob has %d of 10 packets", len(msgs))
		}
	}
	for k, pk := range msgs {
		require.Equal(t, fmt.Sprintf("msg %d", k), string(pk.Data))
		require.Equal(t, "alice", pk.Sender)
	}
	require.Empty(t, col.gaps)
}
