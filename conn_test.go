package bokbok

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Shared vocabulary of the behaviour specs (bokbok_test.go, conn_test.go,
// call_test.go, limits_test.go, shutdown_test.go). Every name starts with
// "spec" so as not to collide with other test files of the package.

// specMsg is the request most specs send.
type specMsg struct {
	Op   string `msgpack:"op"`
	N    int    `msgpack:"n"`
	Data []byte `msgpack:"data,omitempty"`
}

// specReply says which side answered and with what.
type specReply struct {
	Side string `msgpack:"side"`
	N    int    `msgpack:"n"`
}

// specSide is a handler that answers as the side called name:
//
//	double:   {name, 2n}
//	ask-back: calls the peer back with double(n) from inside the handler and
//	          answers {name<-peer, peer's answer + 1}
func specSide(name string) HandlerFunc {
	return func(ctx context.Context, req *Request) (any, error) {
		var m specMsg
		if err := req.Decode(&m); err != nil {
			return nil, err
		}
		switch m.Op {
		case "double":
			return specReply{Side: name, N: 2 * m.N}, nil
		case "ask-back":
			var r specReply
			if err := req.Conn().Call(ctx, specMsg{Op: "double", N: m.N}, &r); err != nil {
				return nil, err
			}
			return specReply{Side: name + "<-" + r.Side, N: r.N + 1}, nil
		}
		return nil, fmt.Errorf("unknown op %q", m.Op)
	}
}

// specUnixPair opens a connection over a Unix socket in a temporary
// directory: the server listens on the path with Listen and serves it with
// srv.Serve, the client dials the path. It returns the dialling end and the
// server's end, and closes everything at the end of the test.
func specUnixPair(t *testing.T, client *Config, srv *Server) (*Conn, *Conn) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "bokbok.sock")
	ln, err := Listen(path)
	require.NoError(t, err)
	require.Equal(t, "unix", ln.Addr().Network())

	opened := make(chan *Conn, 1)
	srv.OnOpen = func(c *Conn) error { opened <- c; return nil }
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()

	c, err := Dial(testCtx(t), path, client)
	require.NoError(t, err)
	var s *Conn
	select {
	case s = <-opened:
	case <-testCtx(t).Done():
		t.Fatal("the server never opened the connection")
	}
	t.Cleanup(func() {
		c.Close()
		srv.Close()
		srv.Wait()
		assert.ErrorIs(t, <-served, ErrServerClosed)
	})
	return c, s
}

// specTransports are the three ways the specs open a connection.
var specTransports = []struct {
	name string
	open func(t *testing.T, client, server *Config) (*Conn, *Conn)
}{
	{"net.Pipe", func(t *testing.T, client, server *Config) (*Conn, *Conn) {
		return pipePair(t, client, server)
	}},
	{"TCP loopback", func(t *testing.T, client, server *Config) (*Conn, *Conn) {
		return tcpPair(t, client, &Server{Config: *server})
	}},
	{"Unix socket", func(t *testing.T, client, server *Config) (*Conn, *Conn) {
		return specUnixPair(t, client, &Server{Config: *server})
	}},
}

// specAwait waits for ch to close or yield, failing the test if ctx ends
// first.
func specAwait[T any](t testing.TB, ctx context.Context, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-ctx.Done():
		t.Fatalf("timed out waiting for %s", what)
		panic("unreachable")
	}
}

// specReleaser returns a channel that handlers wait on and the function
// that closes it; the function may be called more than once, and is called
// at the end of the test in any case, so that no handler stays blocked.
func specReleaser(t testing.TB) (chan struct{}, func()) {
	ch := make(chan struct{})
	release := sync.OnceFunc(func() { close(ch) })
	t.Cleanup(release)
	return ch, release
}

// specCloseLog records OnClose calls.
type specCloseLog struct {
	mu      sync.Mutex
	reasons []error
	first   chan struct{}
}

func newSpecCloseLog() *specCloseLog { return &specCloseLog{first: make(chan struct{})} }

func (l *specCloseLog) onClose(_ *Conn, reason error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.reasons = append(l.reasons, reason)
	if len(l.reasons) == 1 {
		close(l.first)
	}
}

// wait waits for the first OnClose and returns every reason seen so far.
func (l *specCloseLog) wait(t testing.TB, ctx context.Context) []error {
	t.Helper()
	specAwait(t, ctx, l.first, "OnClose")
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.reasons)
}

// specEcho is the request of the concurrency spec; the reply carries the
// same id and the data reversed, so each reply can be checked against its
// own request.
type specEcho struct {
	ID   int    `msgpack:"id"`
	Data []byte `msgpack:"data"`
}

func specReversed(b []byte) []byte {
	r := slices.Clone(b)
	slices.Reverse(r)
	return r
}

// specSlowEcho answers a specEcho after a random pause of 0-5 ms, so
// handlers finish in random order.
func specSlowEcho(ctx context.Context, req *Request) (any, error) {
	var m specEcho
	if err := req.Decode(&m); err != nil {
		return nil, err
	}
	select {
	case <-time.After(time.Duration(rand.IntN(6)) * time.Millisecond):
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return specEcho{ID: m.ID, Data: specReversed(m.Data)}, nil
}

func TestHandlerCallsBackIntoCaller(t *testing.T) {
	const n = 300
	ctx := testCtx(t)
	clientHandler := HandlerFunc(func(ctx context.Context, req *Request) (any, error) {
		var m specMsg
		if err := req.Decode(&m); err != nil {
			return nil, err
		}
		time.Sleep(time.Duration(rand.IntN(3)) * time.Millisecond)
		return specReply{Side: "client", N: m.N * 3}, nil
	})
	serverHandler := HandlerFunc(func(ctx context.Context, req *Request) (any, error) {
		var m specMsg
		if err := req.Decode(&m); err != nil {
			return nil, err
		}
		// From inside the handler, ask the caller something, on the same
		// connection, while the caller waits for this very reply.
		var r specReply
		if err := req.Conn().Call(ctx, specMsg{N: m.N}, &r); err != nil {
			return nil, err
		}
		return specReply{Side: "server<-" + r.Side, N: r.N + 1}, nil
	})
	client, _ := tcpPair(t, &Config{Handler: clientHandler}, &Server{Config: Config{Handler: serverHandler}})

	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			var r specReply
			if assert.NoError(t, client.Call(ctx, specMsg{N: i}, &r)) {
				assert.Equal(t, specReply{Side: "server<-client", N: 3*i + 1}, r)
			}
		})
	}
	wg.Wait()
}

// specNote is a notification carrying a sequence number and a payload
// derived from it.
type specNote struct {
	Seq  int    `msgpack:"seq"`
	Data []byte `msgpack:"data"`
}

// specNotePayload is the payload of notification seq: mostly small, every
// tenth 20 KiB, and some larger than one 64 KiB frame so that they span
// several frames.
func specNotePayload(seq int) []byte {
	var n int
	switch {
	case seq%250 == 17:
		n = 200 << 10 // four frames
	case seq%100 == 50:
		n = 70 << 10 // just over one frame
	case seq%10 == 3:
		n = 20 << 10
	default:
		n = seq % 97
	}
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(seq*31 + i*7)
	}
	return b
}

func TestNotificationsArriveInOrderSent(t *testing.T) {
	const count = 2000
	for _, tr := range specTransports[:2] {
		t.Run(tr.name, func(t *testing.T) {
			ctx := testCtx(t)
			notes := make(chan specNote, count)
			serverHandler := HandlerFunc(func(ctx context.Context, req *Request) (any, error) {
				if !req.IsNotification() {
					return specSlowEcho(ctx, req)
				}
				var n specNote
				if err := req.Decode(&n); err != nil {
					t.Errorf("decoding notification: %v", err)
					return nil, err
				}
				notes <- n
				return nil, nil
			})
			client, _ := tr.open(t, &Config{}, &Config{Handler: serverHandler})

			// Requests run alongside, so that notification frames
			// interleave with other traffic.
			stop := make(chan struct{})
			var wg sync.WaitGroup
			for g := range 4 {
				wg.Go(func() {
					for i := 0; ; i++ {
						select {
						case <-stop:
							return
						default:
						}
						data := bytes.Repeat([]byte{byte(g)}, 100<<10*(i%2))
						var got specEcho
						if !assert.NoError(t, client.Call(ctx, specEcho{ID: i, Data: data}, &got)) {
							return
						}
					}
				})
			}

			for seq := range count {
				require.NoError(t, client.Notify(ctx, specNote{Seq: seq, Data: specNotePayload(seq)}))
			}
			for want := range count {
				got := specAwait(t, ctx, notes, fmt.Sprintf("notification %d", want))
				require.Equal(t, want, got.Seq, "notifications out of order")
				require.True(t, bytes.Equal(specNotePayload(want), got.Data), "notification %d has the wrong content", want)
			}
			close(stop)
			wg.Wait()
		})
	}
}

func TestNotifyAppliesBackpressure(t *testing.T) {
	const window, total = 4, 200
	ctx := testCtx(t)
	gate, openGate := specReleaser(t)
	notes := make(chan int, total+1)
	var once sync.Once
	serverHandler := HandlerFunc(func(ctx context.Context, req *Request) (any, error) {
		var n specNote
		if err := req.Decode(&n); err != nil {
			return nil, err
		}
		once.Do(func() { <-gate }) // stuck on the first until the gate opens
		time.Sleep(time.Duration(rand.IntN(2)) * time.Millisecond)
		notes <- n.Seq
		return nil, nil
	})
	client, _ := pipePair(t, &Config{}, &Config{Handler: serverHandler, NotifyWindow: window})

	seq := 0
	for range window {
		require.NoError(t, client.Notify(ctx, specNote{Seq: seq}), "within the window Notify does not wait")
		seq++
	}

	// The window is full and the handler is stuck: Notify waits, and gives
	// up with the context's error. That notification is never sent.
	short, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	err := client.Notify(short, specNote{Seq: -1})
	cancel()
	require.ErrorIs(t, err, context.DeadlineExceeded)

	cancelled, cancel := context.WithCancel(ctx)
	notified := make(chan error, 1)
	go func() { notified <- client.Notify(cancelled, specNote{Seq: -2}) }()
	select {
	case err := <-notified:
		t.Fatalf("Notify returned %v with a full window", err)
	case <-time.After(20 * time.Millisecond):
	}
	cancel()
	require.ErrorIs(t, specAwait(t, ctx, notified, "Notify to give up"), context.Canceled)

	// Once the handler moves, every later notification goes through, in
	// order, the window refilling as the handler catches up.
	openGate()
	for ; seq < total; seq++ {
		require.NoError(t, client.Notify(ctx, specNote{Seq: seq}))
	}
	for want := range total {
		require.Equal(t, want, specAwait(t, ctx, notes, "a notification"))
	}
	require.NoError(t, client.Err())
	select {
	case extra := <-notes:
		t.Fatalf("notification %d was delivered although Notify failed", extra)
	default:
	}
}

func TestKeepaliveKeepsIdleConnectionOpen(t *testing.T) {
	// A generous timeout: a loaded machine may hold up a PONG for a second
	// or more, and the test is about PINGs flowing, not about how soon a
	// silent peer is detected (see the tests below for that).
	const interval = 50 * time.Millisecond
	pinging := Config{KeepaliveInterval: interval, KeepaliveTimeout: 20 * time.Second}
	cases := []struct {
		name   string
		server Config
	}{
		{"both sides ping", pinging},
		{"only the dialler pings; the other only answers", Config{KeepaliveInterval: -1}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx := testCtx(t)
			clientCfg := pinging
			clientCfg.Handler = specSide("client")
			serverCfg := tc.server
			serverCfg.Handler = specSide("server")
			client, server := tcpPair(t, &clientCfg, &Server{Config: serverCfg})

			// Idle for many keepalive periods: only PINGs and PONGs flow,
			// and each side keeps hearing from the other.
			idle := time.Now()
			heardSince := func(c *Conn, d time.Duration) bool {
				return time.Duration(c.lastRecv.Load()) > idle.Sub(c.epoch)+d
			}
			for !heardSince(client, 10*interval) || !heardSince(server, 10*interval) {
				select {
				case <-client.Done():
					t.Fatalf("idle connection closed: %v", client.Err())
				case <-server.Done():
					t.Fatalf("idle connection closed: %v", server.Err())
				case <-ctx.Done():
					t.Fatal("no keepalive traffic")
				case <-time.After(interval):
				}
			}
			require.NoError(t, client.Err())
			require.NoError(t, server.Err())

			var r specReply
			require.NoError(t, client.Call(ctx, specMsg{Op: "double", N: 1}, &r))
			require.NoError(t, server.Call(ctx, specMsg{Op: "double", N: 2}, &r))
			assert.Equal(t, 4, r.N)
		})
	}
}

// TestKeepaliveTimeoutCountsFromThePing drives the keepalive check by hand,
// as if its timer fired very late (as on a loaded machine): a peer that
// answered the PING keeps the connection open however late the check
// runs, and one that did not is cut off once the timeout has passed since
// the PING.
func TestKeepaliveTimeoutCountsFromThePing(t *testing.T) {
	const hour = time.Hour // interval and timeout: the timer itself never fires in the test
	cases := []struct {
		name       string
		ping, last time.Duration // before now: when the PING went out, when the peer was last heard
		closes     bool
	}{
		{"answered, checked two timeouts late", 3 * hour, 3*hour - time.Millisecond, false},
		{"silent since the PING, within the timeout", hour - time.Minute, hour + time.Minute, false},
		{"silent since the PING, past the timeout", hour + time.Minute, 2 * hour, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, _ := pipePair(t, &Config{KeepaliveInterval: hour, KeepaliveTimeout: hour}, &Config{})
			now := time.Since(c.epoch)
			c.kaPing = now - tc.ping
			c.lastRecv.Store(int64(now - tc.last))
			c.keepaliveTick()
			if tc.closes {
				require.ErrorIs(t, c.Err(), ErrKeepaliveTimeout)
			} else {
				require.NoError(t, c.Err())
			}
		})
	}
}

func TestKeepaliveTimeoutClosesSilentConnection(t *testing.T) {
	ctx := testCtx(t)
	na, nb := net.Pipe()
	t.Cleanup(func() { nb.Close() })

	// A silent peer: it mirrors the opening exchange (preamble and
	// SETTINGS), then never reads or writes again.
	mirrored := make(chan error, 1)
	go func() {
		opening := make([]byte, 16) // preamble, SETTINGS header
		if _, err := io.ReadFull(nb, opening); err != nil {
			mirrored <- err
			return
		}
		settings := make([]byte, binary.BigEndian.Uint16(opening[10:12]))
		if _, err := io.ReadFull(nb, settings); err != nil {
			mirrored <- err
			return
		}
		_, err := nb.Write(append(opening, settings...))
		mirrored <- err
	}()

	closes := newSpecCloseLog()
	c, err := NewConn(ctx, na, &Config{
		KeepaliveInterval: 50 * time.Millisecond,
		KeepaliveTimeout:  100 * time.Millisecond,
		OnClose:           closes.onClose,
	})
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	require.NoError(t, <-mirrored)

	err = c.Call(ctx, specMsg{Op: "double"}, nil)
	require.ErrorIs(t, err, ErrClosed, "a call pending on a dead peer fails")
	require.ErrorIs(t, err, ErrKeepaliveTimeout)
	specAwait(t, ctx, c.Done(), "Done")
	reasons := closes.wait(t, ctx)
	require.Len(t, reasons, 1)
	assert.ErrorIs(t, reasons[0], ErrClosed)
	assert.ErrorIs(t, reasons[0], ErrKeepaliveTimeout)
}

func TestPingMeasuresRoundTrip(t *testing.T) {
	for _, tr := range specTransports {
		t.Run(tr.name, func(t *testing.T) {
			ctx := testCtx(t)
			client, server := tr.open(t, &Config{}, &Config{})
			for _, c := range []*Conn{client, server} {
				for range 3 {
					d, err := c.Ping(ctx)
					require.NoError(t, err)
					assert.Positive(t, d)
				}
			}
			require.NoError(t, client.Close())
			_, err := client.Ping(ctx)
			assert.ErrorIs(t, err, ErrClosed)
			specAwait(t, ctx, server.Done(), "the peer to close")
			_, err = server.Ping(ctx)
			assert.ErrorIs(t, err, ErrClosed)
		})
	}
}
