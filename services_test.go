package bokbok

import (
	"context"
	"errors"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Method names, metadata, client interceptors, server middleware and the
// stats hook, as an application sees them over a real connection.

// seen is what a handler saw of a request.
type seen struct {
	method  string
	md      Metadata
	notify  bool
	fromCtx bool
}

// recordingHandler records what each request carried and answers with
// reply metadata {"served": method}.
type recordingHandler struct {
	mu   sync.Mutex
	seen []seen
	err  error // returned instead of a reply, if set
}

func (h *recordingHandler) ServeBokbok(ctx context.Context, req *Request) (any, error) {
	h.mu.Lock()
	h.seen = append(h.seen, seen{req.Method(), req.Metadata(), req.IsNotification(), RequestFromContext(ctx) == req})
	err := h.err
	h.mu.Unlock()
	req.SetReplyMetadata(Metadata{"served": req.Method()})
	if err != nil {
		return nil, err
	}
	return "ok", nil
}

func (h *recordingHandler) last(t *testing.T) seen {
	t.Helper()
	h.mu.Lock()
	defer h.mu.Unlock()
	require.NotEmpty(t, h.seen)
	return h.seen[len(h.seen)-1]
}

func TestMethodAndMetadataReachTheHandler(t *testing.T) {
	binary := string([]byte{0xff, 0x00, 0xfe})
	cases := []struct {
		name   string
		method string
		md     Metadata
	}{
		{"neither", "", nil},
		{"method only", "kv.get", nil},
		{"metadata only", "", Metadata{"tenant": "t1"}},
		{"both, binary value", "kv.put", Metadata{"traceparent": "00-abc-def-01", "token-bin": binary}},
		{"longest method", strings.Repeat("m", maxMethodLen), nil},
		{"most entries", "", manyMetadata(maxMetadataEntries)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := &recordingHandler{}
			client, _ := pipePair(t, nil, &Config{Handler: h})
			ctx := testCtx(t)
			if tc.md != nil {
				ctx = WithMetadata(ctx, tc.md)
			}
			resp, err := client.RequestMethod(ctx, tc.method, "hi")
			require.NoError(t, err)
			got := h.last(t)
			assert.Equal(t, tc.method, got.method)
			assert.Equal(t, tc.md, got.md)
			assert.True(t, got.fromCtx, "RequestFromContext gives the request")
			assert.Equal(t, Metadata{"served": tc.method}, resp.Metadata())

			require.NoError(t, client.NotifyMethod(ctx, tc.method, "note"))
			require.Eventually(t, func() bool { return h.last(t).notify }, testWait, testTick)
			assert.Equal(t, tc.method, h.last(t).method)
			assert.Equal(t, tc.md, h.last(t).md)
		})
	}
}

func manyMetadata(n int) Metadata {
	md := make(Metadata, n)
	for i := range n {
		md[strings.Repeat("k", i+1)] = "v"
	}
	return md
}

func TestErrorRepliesCarryMetadata(t *testing.T) {
	h := &recordingHandler{err: Errorf("kv.not_found", "no key")}
	client, _ := pipePair(t, nil, &Config{Handler: h})
	err := client.Invoke(testCtx(t), "kv.get", "x", nil)
	var re *RemoteError
	require.ErrorAs(t, err, &re)
	assert.Equal(t, "kv.not_found", re.Code)
	assert.Equal(t, Metadata{"served": "kv.get"}, re.Metadata())
	assert.Nil(t, (&RemoteError{}).Metadata())
}

func TestMetadataOutOfBoundsIsRefusedBeforeSending(t *testing.T) {
	h := &recordingHandler{}
	client, _ := pipePair(t, nil, &Config{Handler: h})
	cases := []struct {
		name   string
		method string
		md     Metadata
	}{
		{"method too long", strings.Repeat("m", maxMethodLen+1), nil},
		{"too many entries", "", manyMetadata(maxMetadataEntries + 1)},
		{"empty key", "", Metadata{"": "v"}},
		{"key too long", "", Metadata{strings.Repeat("k", maxMetadataKeyLen+1): "v"}},
		{"header too large", "", Metadata{"a": strings.Repeat("v", maxHeaderBytes)}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx := WithMetadata(testCtx(t), tc.md)
			_, err := client.RequestMethod(ctx, tc.method, "hi")
			require.ErrorIs(t, err, ErrBadMetadata)
			require.ErrorIs(t, client.NotifyMethod(ctx, tc.method, "hi"), ErrBadMetadata)
		})
	}
	h.mu.Lock()
	assert.Empty(t, h.seen, "nothing was sent")
	h.mu.Unlock()
	_, err := client.Request(testCtx(t), "still open")
	require.NoError(t, err)
}

func TestWithMetadataMergesAndCopies(t *testing.T) {
	md := Metadata{"a": "1", "b": "2"}
	ctx := WithMetadata(context.Background(), md)
	ctx = WithMetadata(ctx, Metadata{"b": "3", "c": "4"})
	md["a"] = "changed"
	assert.Equal(t, Metadata{"a": "1", "b": "3", "c": "4"}, OutgoingMetadata(ctx))
	assert.Nil(t, OutgoingMetadata(context.Background()))
	assert.Nil(t, RequestFromContext(context.Background()))
}

func TestHandlerMetadataIsNotForwardedOnNestedCalls(t *testing.T) {
	// A handler that calls back with its own context sends none of the
	// metadata it received: incoming and outgoing metadata are separate.
	back := &recordingHandler{}
	var client *Conn
	h := HandlerFunc(func(ctx context.Context, req *Request) (any, error) {
		_, err := req.Conn().RequestMethod(ctx, "callback", "x")
		return nil, err
	})
	client, _ = pipePair(t, &Config{Handler: back}, &Config{Handler: h})
	_, err := client.RequestMethod(WithMetadata(testCtx(t), Metadata{"token": "secret"}), "outer", "x")
	require.NoError(t, err)
	assert.Equal(t, "callback", back.last(t).method)
	assert.Nil(t, back.last(t).md)
}

func TestInterceptorsSeeEveryCallInOrder(t *testing.T) {
	var (
		mu  sync.Mutex
		log []string
	)
	record := func(s string) { mu.Lock(); log = append(log, s); mu.Unlock() }
	outer := func(ctx context.Context, o *Outgoing, next CallFunc) error {
		record("outer>" + o.Method())
		o.SetMetadata("outer", "1")
		err := next(ctx, o)
		record("outer<")
		return err
	}
	var sizes []int
	var replied []bool
	inner := func(ctx context.Context, o *Outgoing, next CallFunc) error {
		record("inner>" + o.Method())
		assert.Equal(t, "1", o.Metadata()["outer"])
		assert.Same(t, o.Conn(), o.Conn())
		err := next(ctx, o)
		mu.Lock()
		sizes = append(sizes, o.RequestSize())
		replied = append(replied, o.Response() != nil)
		mu.Unlock()
		record("inner<")
		return err
	}
	h := &recordingHandler{}
	client, _ := pipePair(t, &Config{Interceptors: []Interceptor{outer, inner}}, &Config{Handler: h})
	callerMD := Metadata{"caller": "c"}
	ctx := WithMetadata(testCtx(t), callerMD)

	var reply string
	require.NoError(t, client.Invoke(ctx, "kv.get", "x", &reply))
	assert.Equal(t, "ok", reply)
	assert.Equal(t, Metadata{"caller": "c", "outer": "1"}, h.last(t).md)
	assert.Equal(t, Metadata{"caller": "c"}, OutgoingMetadata(ctx), "the caller's metadata is not changed")

	require.NoError(t, client.NotifyMethod(ctx, "kv.watch", "x"))
	require.NoError(t, client.Call(ctx, "x", nil))

	mu.Lock()
	defer mu.Unlock()
	assert.Equal(t, []string{
		"outer>kv.get", "inner>kv.get", "inner<", "outer<",
		"outer>kv.watch", "inner>kv.watch", "inner<", "outer<",
		"outer>", "inner>", "inner<", "outer<",
	}, log)
	for _, n := range sizes {
		assert.Positive(t, n)
	}
	assert.Equal(t, []bool{true, false, true}, replied)
}

func TestInterceptorMayRefuseACall(t *testing.T) {
	errNoToken := errors.New("no token")
	auth := func(ctx context.Context, o *Outgoing, next CallFunc) error {
		if o.Metadata()["token"] == "" {
			return errNoToken
		}
		return next(ctx, o)
	}
	h := &recordingHandler{}
	client, _ := pipePair(t, &Config{Interceptors: []Interceptor{auth}}, &Config{Handler: h})
	_, err := client.RequestMethod(testCtx(t), "kv.get", "x")
	require.ErrorIs(t, err, errNoToken)
	require.ErrorIs(t, client.Notify(testCtx(t), "x"), errNoToken)
	_, err = client.RequestMethod(WithMetadata(testCtx(t), Metadata{"token": "t"}), "kv.get", "x")
	require.NoError(t, err)
	h.mu.Lock()
	defer h.mu.Unlock()
	assert.Len(t, h.seen, 1, "refused calls never reached the peer")
}

func TestMiddlewareChainOrder(t *testing.T) {
	var log []string
	var mu sync.Mutex
	mw := func(name string) Middleware {
		return func(next Handler) Handler {
			return HandlerFunc(func(ctx context.Context, req *Request) (any, error) {
				mu.Lock()
				log = append(log, name+":"+req.Method())
				mu.Unlock()
				return next.ServeBokbok(ctx, req)
			})
		}
	}
	deny := func(next Handler) Handler {
		return HandlerFunc(func(ctx context.Context, req *Request) (any, error) {
			if req.Metadata()["token"] != "t" {
				return nil, Errorf("auth.denied", "no token")
			}
			return next.ServeBokbok(ctx, req)
		})
	}
	h := &recordingHandler{}
	client, _ := pipePair(t, nil, &Config{Handler: Chain(mw("a"), mw("b"), deny)(h)})
	_, err := client.RequestMethod(testCtx(t), "m", "x")
	var re *RemoteError
	require.ErrorAs(t, err, &re)
	assert.Equal(t, "auth.denied", re.Code)
	_, err = client.RequestMethod(WithMetadata(testCtx(t), Metadata{"token": "t"}), "m", "x")
	require.NoError(t, err)
	mu.Lock()
	defer mu.Unlock()
	assert.Equal(t, []string{"a:m", "b:m", "a:m", "b:m"}, log)
	assert.Len(t, h.seen, 1)
}

// statsRecorder keeps every record it is given.
type statsRecorder struct {
	mu    sync.Mutex
	calls []CallStats
	conns []ConnStats
}

func (s *statsRecorder) HandleCall(st CallStats) {
	s.mu.Lock()
	s.calls = append(s.calls, st)
	s.mu.Unlock()
}
func (s *statsRecorder) HandleConn(st ConnStats) {
	s.mu.Lock()
	s.conns = append(s.conns, st)
	s.mu.Unlock()
}

func (s *statsRecorder) snapshot() ([]CallStats, []ConnStats) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]CallStats(nil), s.calls...), append([]ConnStats(nil), s.conns...)
}

func TestStatsRecordCallsBothWays(t *testing.T) {
	cs, ss := &statsRecorder{}, &statsRecorder{}
	release, started := make(chan struct{}), make(chan struct{})
	h := HandlerFunc(func(ctx context.Context, req *Request) (any, error) {
		switch req.Method() {
		case "fail":
			return nil, Errorf("kv.not_found", "no")
		case "block":
			close(started)
			<-release
		}
		return strings.Repeat("r", 100), nil
	})
	client, server := pipePair(t, &Config{Stats: cs},
		&Config{Stats: ss, Handler: h, MaxConcurrentHandlers: 1, MaxQueuedRequests: -1})
	ctx := testCtx(t)

	_, err := client.RequestMethod(ctx, "ok", "ping")
	require.NoError(t, err)
	_, err = client.RequestMethod(ctx, "fail", "ping")
	require.Error(t, err)
	require.NoError(t, client.NotifyMethod(ctx, "note", "n"))

	blocked := make(chan error, 1)
	go func() { _, err := client.RequestMethod(ctx, "block", "x"); blocked <- err }()
	select {
	case <-started:
	case err := <-blocked:
		t.Fatalf("the blocking request ended before its handler ran: %v", err)
	}
	_, err = client.RequestMethod(ctx, "busy", "x")
	require.ErrorIs(t, err, ErrBusy)
	close(release)
	require.NoError(t, <-blocked)

	byMethod := func(all []CallStats, served bool, method string) CallStats {
		for _, st := range all {
			if st.Served == served && st.Method == method {
				return st
			}
		}
		t.Fatalf("no stats for served=%v method %q in %+v", served, method, all)
		return CallStats{}
	}
	require.Eventually(t, func() bool { calls, _ := ss.snapshot(); return len(calls) >= 5 }, testWait, testTick)
	ccalls, _ := cs.snapshot()
	scalls, _ := ss.snapshot()

	ok := byMethod(ccalls, false, "ok")
	assert.Same(t, client, ok.Conn)
	assert.Positive(t, ok.RequestBytes)
	assert.Greater(t, ok.ReplyBytes, 100)
	assert.Positive(t, ok.Duration)
	assert.NoError(t, ok.Err)
	sok := byMethod(scalls, true, "ok")
	assert.Same(t, server, sok.Conn)
	assert.Equal(t, ok.RequestBytes, sok.RequestBytes, "both count the whole body")
	assert.Equal(t, ok.ReplyBytes, sok.ReplyBytes)

	fail := byMethod(ccalls, false, "fail")
	assert.Equal(t, "kv.not_found", fail.Code)
	assert.Error(t, fail.Err)
	assert.Equal(t, "kv.not_found", byMethod(scalls, true, "fail").Code)

	note := byMethod(ccalls, false, "note")
	assert.True(t, note.Notification)
	assert.True(t, byMethod(scalls, true, "note").Notification)

	busy := byMethod(scalls, true, "busy")
	assert.True(t, busy.Refused)
	assert.Equal(t, CodeBusy, busy.Code)
	assert.Equal(t, CodeBusy, byMethod(ccalls, false, "busy").Code)

	client.Close()
	<-server.Done()
	require.Eventually(t, func() bool { _, conns := ss.snapshot(); return len(conns) == 2 }, testWait, testTick)
	_, conns := ss.snapshot()
	assert.False(t, conns[0].Closed)
	assert.True(t, conns[1].Closed)
	assert.ErrorIs(t, conns[1].Err, ErrClosed)
}

func TestServerStatsSeeRefusedConnections(t *testing.T) {
	st := &statsRecorder{}
	key := mustKey(t)
	srv := &Server{Config: Config{Stats: st}, UserKey: func(string) (Key, bool) { return key, true }}
	ln := listenLoopback(t)
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	_, err := Dial(testCtx(t), ln.Addr().String(), nil) // insecure client, secure server
	require.Error(t, err)
	require.Eventually(t, func() bool {
		_, conns := st.snapshot()
		return len(conns) == 1 && conns[0].Refused && conns[0].Conn == nil && errors.Is(conns[0].Err, ErrMode)
	}, testWait, testTick)
}

const (
	testWait = 10 * time.Second
	testTick = 5 * time.Millisecond
)

// listenLoopback listens on a free loopback TCP port until the test ends.
func listenLoopback(t *testing.T) net.Listener {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { ln.Close() })
	return ln
}

type nopStats struct{}

func (nopStats) HandleCall(CallStats) {}
func (nopStats) HandleConn(ConnStats) {}

// TestStatsCostNoAllocation: a stats handler that keeps nothing adds no
// allocation to a call, on either side.
func TestStatsCostNoAllocation(t *testing.T) {
	perCall := func(stats StatsHandler) float64 {
		h := HandlerFunc(func(ctx context.Context, req *Request) (any, error) { return 1, nil })
		client, _ := pipePair(t, &Config{Stats: stats}, &Config{Stats: stats, Handler: h})
		ctx := context.Background()
		call := func() {
			if _, err := client.RequestMethod(ctx, "m", 1); err != nil {
				t.Fatal(err)
			}
		}
		return allocsPerRun(200, call)
	}
	// Take the lower of a few rounds: a GC or a goroutine starting can
	// add an allocation to one round.
	low := func(stats StatsHandler) float64 {
		best := perCall(stats)
		for range 2 {
			best = min(best, perCall(stats))
		}
		return best
	}
	if raceEnabled() {
		t.Skip("the race detector makes allocation counts vary")
	}
	off, on := low(nil), low(nopStats{})
	t.Logf("allocations per call: %.2f without stats, %.2f with", off, on)
	assert.LessOrEqual(t, on, off+0.5)
}
