package bokbok

import (
	"context"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// clientServer serves h on addr (a fresh loopback port if addr is "")
// until the test ends or stop is called.
type clientServer struct {
	srv  *Server
	addr string
	done chan error
}

func startClientServer(t *testing.T, addr string, srv *Server) *clientServer {
	t.Helper()
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	var ln net.Listener
	var err error
	for range 50 { // the port of a server just stopped may take a moment
		if ln, err = net.Listen("tcp", addr); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	require.NoError(t, err)
	s := &clientServer{srv: srv, addr: ln.Addr().String(), done: make(chan error, 1)}
	go func() { s.done <- srv.Serve(ln) }()
	t.Cleanup(s.stop)
	return s
}

func (s *clientServer) stop() {
	s.srv.Close()
	s.srv.Wait()
}

func echoServer() *Server {
	return &Server{Config: Config{Handler: HandlerFunc(func(ctx context.Context, req *Request) (any, error) {
		var v any
		err := req.Decode(&v)
		return v, err
	})}}
}

func newTestClient(t *testing.T, addr string, cfg *ClientConfig) *Client {
	t.Helper()
	if cfg == nil {
		cfg = &ClientConfig{}
	}
	if cfg.MinBackoff == 0 {
		cfg.MinBackoff = 10 * time.Millisecond
		cfg.MaxBackoff = 100 * time.Millisecond
	}
	c, err := NewClient(addr, cfg)
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	return c
}

func TestClientDialsLazily(t *testing.T) {
	var opened atomic.Int32
	srv := echoServer()
	srv.OnOpen = func(*Conn) error { opened.Add(1); return nil }
	s := startClientServer(t, "", srv)
	c := newTestClient(t, s.addr, nil)
	time.Sleep(50 * time.Millisecond)
	assert.Zero(t, opened.Load(), "NewClient does not dial")

	var got string
	require.NoError(t, c.Call(testCtx(t), "hi", &got))
	assert.Equal(t, "hi", got)
	assert.EqualValues(t, 1, opened.Load())
}

// A server stopped and started again on the same address: the Client
// reconnects by itself, runs OnConnect on every connection, and its calls
// carry on.
func TestClientReconnectsAfterRestart(t *testing.T) {
	s := startClientServer(t, "", echoServer())
	var (
		mu    sync.Mutex
		conns []*Conn
	)
	c := newTestClient(t, s.addr, &ClientConfig{OnConnect: func(ctx context.Context, conn *Conn) error {
		// The hook may call on the connection before anyone else does.
		var got string
		if err := conn.Call(ctx, "hook", &got); err != nil {
			return err
		}
		mu.Lock()
		conns = append(conns, conn)
		mu.Unlock()
		return nil
	}})
	ctx := testCtx(t)
	require.NoError(t, c.Call(ctx, 1, nil))
	addr := s.addr
	for i := range 3 {
		// A graceful stop: the client is told, and no call is lost.
		require.NoError(t, s.srv.Shutdown(ctx))
		s = startClientServer(t, addr, echoServer())
		var got int
		require.NoError(t, c.Call(ctx, i, &got), "after restart %d", i)
		assert.Equal(t, i, got)
	}
	mu.Lock()
	defer mu.Unlock()
	assert.Len(t, conns, 4, "OnConnect ran on each connection")
	cur, err := c.Conn(ctx)
	require.NoError(t, err)
	assert.Same(t, conns[3], cur)
}

// With no server, a call waits within its context and then fails with an
// error that says it was never sent, and why.
func TestClientNotConnected(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now

	c := newTestClient(t, addr, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	err = c.Call(ctx, "x", nil)
	require.Error(t, err)
	assert.ErrorIs(t, err, ErrNotConnected)
	assert.ErrorIs(t, err, ErrNotSent)
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	assert.NotErrorIs(t, err, ErrClosed)
	assert.Contains(t, err.Error(), "not connected to "+addr)
}

// A failure that waiting does not cure (here a wrong key) is given to the
// calls waiting at once, not when their contexts end.
func TestClientFatalDialErrorFailsFast(t *testing.T) {
	good, err := GenerateKey()
	require.NoError(t, err)
	bad, err := GenerateKey()
	require.NoError(t, err)
	srv := echoServer()
	srv.UserKey = func(user string) (Key, bool) { return good, user == "alice" }
	s := startClientServer(t, "", srv)

	c := newTestClient(t, s.addr, &ClientConfig{Config: Config{User: "alice", Key: &bad}})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	start := time.Now()
	err = c.Call(ctx, "x", nil)
	assert.ErrorIs(t, err, ErrNotConnected)
	assert.ErrorIs(t, err, ErrAuth)
	assert.NotErrorIs(t, err, context.DeadlineExceeded)
	assert.Less(t, time.Since(start), 30*time.Second, "it did not wait for the context")
}

func TestClientConfigChecked(t *testing.T) {
	key, err := GenerateKey()
	require.NoError(t, err)
	for _, tc := range []struct {
		name string
		addr string
		cfg  ClientConfig
		want error
	}{
		{"bad address", "nowhere", ClientConfig{}, nil},
		{"key without user", "127.0.0.1:1", ClientConfig{Config: Config{Key: &key}}, nil},
		{"user without key", "127.0.0.1:1", ClientConfig{Config: Config{User: "u"}}, ErrUserWithoutKey},
		{"negative backoff", "127.0.0.1:1", ClientConfig{MinBackoff: -1}, nil},
		{"min above max", "127.0.0.1:1", ClientConfig{MinBackoff: time.Second, MaxBackoff: time.Millisecond}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := NewClient(tc.addr, &tc.cfg)
			require.Error(t, err)
			if tc.want != nil {
				assert.ErrorIs(t, err, tc.want)
			}
		})
	}
}

// A request whose connection is lost after it was sent has an unknown
// fate: it is retried only if marked idempotent. The handler here runs,
// then cuts the connection before answering, the first time only.
func TestClientIdempotentRetry(t *testing.T) {
	var (
		runs atomic.Int32
		mu   sync.Mutex
		seen = map[string]bool{}
	)
	srv := &Server{Config: Config{Handler: HandlerFunc(func(ctx context.Context, req *Request) (any, error) {
		runs.Add(1)
		var s string
		req.Decode(&s)
		mu.Lock()
		first := !seen[s]
		seen[s] = true
		mu.Unlock()
		if first {
			req.Conn().nc.Close() // run, but never answered
			<-ctx.Done()
			return nil, ctx.Err()
		}
		return "ok", nil
	})}}
	s := startClientServer(t, "", srv)
	c := newTestClient(t, s.addr, nil)
	ctx := testCtx(t)

	err := c.Call(ctx, "once", nil)
	assert.ErrorIs(t, err, ErrClosed, "not idempotent: the error is returned")
	assert.NotErrorIs(t, err, ErrNotSent)
	assert.EqualValues(t, 1, runs.Load(), "and the request is not sent again")

	var got string
	require.NoError(t, c.Call(Idempotent(ctx), "again", &got))
	assert.Equal(t, "ok", got)
	assert.EqualValues(t, 3, runs.Load(), "idempotent: sent again on the next connection")
	assert.True(t, IsIdempotent(Idempotent(ctx)))
	assert.False(t, IsIdempotent(ctx))
}

// An attempt that times out is retried only if idempotent.
func TestClientAttemptTimeout(t *testing.T) {
	var runs atomic.Int32
	srv := &Server{Config: Config{Handler: HandlerFunc(func(ctx context.Context, req *Request) (any, error) {
		if runs.Add(1) == 1 {
			<-ctx.Done() // the first attempt hangs
			return nil, ctx.Err()
		}
		return "ok", nil
	})}}
	s := startClientServer(t, "", srv)
	c := newTestClient(t, s.addr, &ClientConfig{AttemptTimeout: 100 * time.Millisecond})
	ctx := testCtx(t)

	err := c.Call(ctx, "x", nil)
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	assert.NoError(t, ctx.Err())
	assert.EqualValues(t, 1, runs.Load())
	runs.Store(0)
	require.NoError(t, c.Call(Idempotent(ctx), "x", nil))
	assert.EqualValues(t, 2, runs.Load())
}

// A request refused as busy never ran: it is sent again after a backoff,
// unless MaxAttempts says otherwise. (The handler limit is per
// connection.)
func TestClientRetriesBusy(t *testing.T) {
	release := make(chan struct{})
	var runs atomic.Int32
	srv := &Server{Config: Config{MaxConcurrentHandlers: 1, MaxQueuedRequests: -1,
		Handler: HandlerFunc(func(ctx context.Context, req *Request) (any, error) {
			runs.Add(1)
			var s string
			req.Decode(&s)
			if s == "hold" {
				<-release
			}
			return s, nil
		})}}
	s := startClientServer(t, "", srv)
	ctx := testCtx(t)
	hold := func(c *Client) <-chan error {
		held := make(chan error, 1)
		before := runs.Load()
		go func() { held <- c.Call(ctx, "hold", nil) }()
		require.Eventually(t, func() bool { return runs.Load() == before+1 }, 10*time.Second, time.Millisecond)
		return held
	}

	one := newTestClient(t, s.addr, &ClientConfig{MaxAttempts: 1})
	held1 := hold(one)
	assert.ErrorIs(t, one.Call(ctx, "x", nil), ErrBusy, "one attempt: busy is returned")

	c := newTestClient(t, s.addr, nil)
	held2 := hold(c)
	got := make(chan error, 1)
	go func() { got <- c.Call(ctx, "later", nil) }()
	time.Sleep(50 * time.Millisecond) // let it be refused at least once
	close(release)
	require.NoError(t, <-held1)
	require.NoError(t, <-held2)
	require.NoError(t, <-got)
	assert.EqualValues(t, 3, runs.Load(), "busy refusals did not run")
}

// A graceful shutdown of the server: the calls still sent on the
// draining connection are refused as not sent and go to the next one.
func TestClientMovesOffDrainingConnection(t *testing.T) {
	s := startClientServer(t, "", echoServer())
	c := newTestClient(t, s.addr, nil)
	ctx := testCtx(t)
	first, err := c.Conn(ctx)
	require.NoError(t, err)

	// The peer's GOAWAY: new requests on first are refused, not sent.
	first.onGoAway()
	_, err = first.Request(ctx, "x")
	assert.ErrorIs(t, err, ErrNotSent)
	assert.ErrorIs(t, err, ErrShutdown)

	var got string
	require.NoError(t, c.Call(ctx, "y", &got))
	assert.Equal(t, "y", got)
	second, err := c.Conn(ctx)
	require.NoError(t, err)
	assert.NotSame(t, first, second)
}

func TestClientNotifyAndTyped(t *testing.T) {
	notes := make(chan string, 4)
	mux := &Mux{}
	Handle(mux, "double", func(ctx context.Context, n int) (int, error) { return 2 * n, nil })
	HandleNotification(mux, "note", func(ctx context.Context, s string) error { notes <- s; return nil })
	s := startClientServer(t, "", &Server{Config: Config{Handler: mux}})
	c := newTestClient(t, s.addr, nil)
	ctx := testCtx(t)

	var inv Invoker = c
	n, err := Invoke[int](ctx, inv, "double", 21)
	require.NoError(t, err)
	assert.Equal(t, 42, n)
	require.NoError(t, c.NotifyMethod(ctx, "note", "hello"))
	assert.Equal(t, "hello", <-notes)
	resp, err := c.RequestMethod(ctx, "double", 2)
	require.NoError(t, err)
	require.NoError(t, resp.Decode(&n))
	assert.Equal(t, 4, n)

	var notPointer int
	assert.ErrorIs(t, c.Invoke(ctx, "double", 1, notPointer), ErrNotPointer)
}

func TestClientClose(t *testing.T) {
	s := startClientServer(t, "", echoServer())
	c := newTestClient(t, s.addr, nil)
	ctx := testCtx(t)
	conn, err := c.Conn(ctx)
	require.NoError(t, err)
	require.NoError(t, c.Close())
	<-conn.Done()
	assert.ErrorIs(t, c.Call(ctx, "x", nil), ErrClientClosed)
	assert.NoError(t, c.Close(), "closing twice is fine")

	// A call waiting for a connection is released by Close.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	ln.Close()
	w := newTestClient(t, addr, nil)
	waiting := make(chan error, 1)
	go func() { waiting <- w.Call(ctx, "x", nil) }()
	time.Sleep(30 * time.Millisecond)
	w.Close()
	assert.ErrorIs(t, <-waiting, ErrClientClosed)

	// Shutdown lets a call in flight finish.
	release := make(chan struct{})
	slow := startClientServer(t, "", &Server{Config: Config{Handler: HandlerFunc(func(ctx context.Context, req *Request) (any, error) {
		<-release
		return "done", nil
	})}})
	g := newTestClient(t, slow.addr, nil)
	got := make(chan error, 1)
	go func() { got <- g.Call(ctx, "x", nil) }()
	time.Sleep(30 * time.Millisecond)
	shut := make(chan error, 1)
	go func() { shut <- g.Shutdown(ctx) }()
	time.Sleep(30 * time.Millisecond)
	close(release)
	assert.NoError(t, <-got)
	assert.NoError(t, <-shut)
}

func TestClientBackoffBounds(t *testing.T) {
	c, err := NewClient("127.0.0.1:1", &ClientConfig{MinBackoff: 100 * time.Millisecond, MaxBackoff: time.Second})
	require.NoError(t, err)
	for _, tc := range []struct {
		n  int
		hi time.Duration
	}{{1, 100 * time.Millisecond}, {2, 200 * time.Millisecond}, {4, 800 * time.Millisecond}, {5, time.Second}, {60, time.Second}} {
		for range 100 {
			d := c.backoff(tc.n)
			if d < tc.hi/2 || d > tc.hi {
				t.Fatalf("backoff(%d) = %v, want it in [%v, %v]", tc.n, d, tc.hi/2, tc.hi)
			}
		}
	}
	d, err := NewClient("127.0.0.1:1", nil)
	require.NoError(t, err)
	assert.Equal(t, DefaultMinBackoff, d.cfg.MinBackoff)
	assert.Equal(t, DefaultMaxBackoff, d.cfg.MaxBackoff)
	assert.Equal(t, DefaultDialTimeout, d.cfg.DialTimeout)
	assert.True(t, errors.Is(d.Close(), nil))
}
