package pipes

import (
	"context"
	"log/slog"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/bokbok-go/bokbok"
	"github.com/stretchr/testify/require"
)

// testKeys is a fixed table of users and keys for test hubs.
type testKeys struct {
	mu   sync.Mutex
	keys map[string]bokbok.Key
}

func newTestKeys(users ...string) *testKeys {
	k := &testKeys{keys: map[string]bokbok.Key{}}
	for _, u := range users {
		k.add(u)
	}
	return k
}

func (k *testKeys) add(user string) bokbok.Key {
	key, err := bokbok.GenerateKey()
	if err != nil {
		panic(err)
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	k.keys[user] = key
	return key
}

func (k *testKeys) key(user string) bokbok.Key {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.keys[user]
}

func (k *testKeys) UserKeys(user string) []bokbok.Key {
	k.mu.Lock()
	defer k.mu.Unlock()
	if key, ok := k.keys[user]; ok {
		return []bokbok.Key{key}
	}
	return nil
}

// testHub is a hub serving a loopback listener, stopped at the end of
// the test.
type testHub struct {
	*Hub
	addr string
	ln   net.Listener
	done chan error
	once sync.Once
}

func startHub(t testing.TB, cfg HubConfig) *testHub {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	return startHubOn(t, cfg, ln)
}

func startHubOn(t testing.TB, cfg HubConfig, ln net.Listener) *testHub {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = testLogger("hub")
	}
	if cfg.Dir == "" && cfg.Log == nil {
		cfg.Dir = t.TempDir()
	}
	h, err := NewHub(cfg)
	require.NoError(t, err)
	th := &testHub{Hub: h, addr: ln.Addr().String(), ln: ln, done: make(chan error, 1)}
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

// openNode opens a node of user on the hub at addr, closed at the end of
// the test.
func openNode(t testing.TB, keys *testKeys, user, addr, dir string, tune ...func(*NodeConfig)) *Node {
	t.Helper()
	if dir == "" {
		dir = t.TempDir()
	}
	cfg := NodeConfig{Dir: dir, Hub: addr, User: user, Key: keys.key(user), Logger: testLogger(user)}
	cfg.Client.MinBackoff = 20 * time.Millisecond
	cfg.Client.MaxBackoff = 200 * time.Millisecond
	for _, f := range tune {
		f(&cfg)
	}
	n, err := OpenNode(cfg)
	require.NoError(t, err)
	t.Cleanup(func() { n.Close() })
	return n
}

// collector records the packets a listener is given.
type collector struct {
	mu      sync.Mutex
	packets []Packet
	gaps    []Gap
	changed chan struct{}
}

func newCollector() *collector { return &collector{changed: make(chan struct{}, 1)} }

func (c *collector) listen(p Packet) {
	c.mu.Lock()
	c.packets = append(c.packets, p)
	c.mu.Unlock()
	select {
	case c.changed <- struct{}{}:
	default:
	}
}

func (c *collector) gap(g Gap) {
	c.mu.Lock()
	c.gaps = append(c.gaps, g)
	c.mu.Unlock()
	select {
	case c.changed <- struct{}{}:
	default:
	}
}

func (c *collector) snapshot() []Packet {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]Packet(nil), c.packets...)
}

func (c *collector) gapList() []Gap {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]Gap(nil), c.gaps...)
}

// waitFor waits until the collector holds n packets, failing the test
// after the context's deadline.
func (c *collector) waitFor(t testing.TB, ctx context.Context, n int) []Packet {
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

// testLogger logs to stderr when PIPES_TEST_LOG is set, and nowhere
// otherwise.
func testLogger(who string) *slog.Logger {
	if os.Getenv("PIPES_TEST_LOG") == "" {
		return nil
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug})).With("who", who)
}

func testCtx(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// listenAgain listens on an address a stopped hub used, retrying while
// the port is not yet free.
func listenAgain(t testing.TB, addr string) net.Listener {
	t.Helper()
	var ln net.Listener
	var err error
	for range 100 {
		if ln, err = net.Listen("tcp", addr); err == nil {
			return ln
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("listen %s again: %v", addr, err)
	return nil
}
