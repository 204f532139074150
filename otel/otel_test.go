package otelbokbok_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bokbok-go/bokbok"
	otelbokbok "github.com/bokbok-go/bokbok/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/goleak"
)

// TestMain fails the run if any test leaves a goroutine behind.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// side is one process's telemetry: its own tracer and meter providers,
// recording in memory, as two programs on either end of a connection
// would have.
type side struct {
	spans  *tracetest.SpanRecorder
	reader *sdkmetric.ManualReader
	tp     *sdktrace.TracerProvider
	inst   *otelbokbok.Instrumentation
}

func newSide(t *testing.T, opts ...otelbokbok.Option) *side {
	t.Helper()
	s := &side{spans: tracetest.NewSpanRecorder(), reader: sdkmetric.NewManualReader()}
	s.tp = sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(s.spans))
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(s.reader))
	t.Cleanup(func() {
		_ = s.tp.Shutdown(context.Background())
		_ = mp.Shutdown(context.Background())
	})
	s.inst = otelbokbok.New(append([]otelbokbok.Option{
		otelbokbok.WithTracerProvider(s.tp),
		otelbokbok.WithMeterProvider(mp),
		otelbokbok.WithPropagators(propagation.NewCompositeTextMapPropagator(
			propagation.TraceContext{}, propagation.Baggage{})),
	}, opts...)...)
	return s
}

// pair is a server and a client connected over loopback TCP, each side
// instrumented with its own providers.
type pair struct {
	server, client *side
	conn           *bokbok.Conn // the client's end
	serverConn     *bokbok.Conn // the server's end
	port           int          // the server's port
	clientClosed   chan struct{}
	notified       chan string // what kv.put notifications carried
}

// newPair serves kv.get, kv.put (a notification), callback (which calls
// the client back) and boom (which panics), and the client serves
// client.hello.
func newPair(t *testing.T, opts ...otelbokbok.Option) *pair {
	t.Helper()
	p := &pair{
		server:       newSide(t, opts...),
		client:       newSide(t, opts...),
		clientClosed: make(chan struct{}),
		notified:     make(chan string, 16),
	}
	mux := bokbok.NewMux()
	bokbok.Handle(mux, "kv.get", func(ctx context.Context, key string) (string, error) {
		if key == "a" {
			return "apple", nil
		}
		return "", bokbok.Errorf("kv.not_found", "no key %q", key)
	})
	bokbok.HandleNotification(mux, "kv.put", func(ctx context.Context, key string) error {
		p.notified <- key
		return nil
	})
	bokbok.Handle(mux, "callback", func(ctx context.Context, name string) (string, error) {
		var s string
		err := bokbok.RequestFromContext(ctx).Conn().Invoke(ctx, "client.hello", name, &s)
		return s, err
	})
	mux.HandleFunc("boom", func(ctx context.Context, req *bokbok.Request) (any, error) {
		panic("boom")
	})

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p.port = ln.Addr().(*net.TCPAddr).Port
	opened := make(chan *bokbok.Conn, 1)
	srv := &bokbok.Server{Config: bokbok.Config{Handler: mux}}
	srv.OnOpen = func(c *bokbok.Conn) error { opened <- c; return nil }
	p.server.inst.Instrument(&srv.Config)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	t.Cleanup(func() {
		// The server shuts down gracefully first, so that nothing is cut
		// short (a notification's handler may have returned, and its span
		// ended, before bokbok has finished with it).
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		if err := <-served; !errors.Is(err, bokbok.ErrServerClosed) {
			t.Errorf("Serve: %v", err)
		}
		if p.conn != nil {
			p.conn.Close()
			<-p.clientClosed
		}
	})

	cmux := bokbok.NewMux()
	bokbok.Handle(cmux, "client.hello", func(ctx context.Context, name string) (string, error) {
		return "hello, " + name, nil
	})
	cfg := &bokbok.Config{Handler: cmux, OnClose: func(*bokbok.Conn, error) { close(p.clientClosed) }}
	p.client.inst.Instrument(cfg)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	p.conn, err = bokbok.Dial(ctx, ln.Addr().String(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	p.serverConn = <-opened
	return p
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// eventually waits up to 5 s for cond.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// ended waits for n ended spans and returns them.
func ended(t *testing.T, s *side, n int) []sdktrace.ReadOnlySpan {
	t.Helper()
	eventually(t, strconv.Itoa(n)+" spans", func() bool { return len(s.spans.Ended()) >= n })
	got := s.spans.Ended()
	if len(got) != n {
		t.Fatalf("%d spans ended, want %d: %v", len(got), n, names(got))
	}
	return got
}

func names(spans []sdktrace.ReadOnlySpan) []string {
	var out []string
	for _, s := range spans {
		out = append(out, s.SpanKind().String()+" "+s.Name())
	}
	return out
}

func attrs(s sdktrace.ReadOnlySpan) map[attribute.Key]attribute.Value {
	m := map[attribute.Key]attribute.Value{}
	for _, kv := range s.Attributes() {
		m[kv.Key] = kv.Value
	}
	return m
}

// wantAttrs checks that span has each of want, and has none of the keys
// in absent.
func wantAttrs(t *testing.T, span sdktrace.ReadOnlySpan, want map[string]any, absent ...string) {
	t.Helper()
	got := attrs(span)
	for k, w := range want {
		v, ok := got[attribute.Key(k)]
		if !ok {
			t.Errorf("%s %q: no attribute %s (has %v)", span.SpanKind(), span.Name(), k, span.Attributes())
			continue
		}
		if fmt.Sprint(v.AsInterface()) != fmt.Sprint(w) {
			t.Errorf("%s %q: %s = %v, want %v", span.SpanKind(), span.Name(), k, v.AsInterface(), w)
		}
	}
	for _, k := range absent {
		if v, ok := got[attribute.Key(k)]; ok {
			t.Errorf("%s %q: has %s = %v, want none", span.SpanKind(), span.Name(), k, v.AsInterface())
		}
	}
}

// checkPair checks that client and server are one call's two spans.
func checkPair(t *testing.T, client, server sdktrace.ReadOnlySpan, name string) {
	t.Helper()
	if client.SpanKind() != trace.SpanKindClient || client.Name() != name {
		t.Errorf("client span: %v %q, want client %q", client.SpanKind(), client.Name(), name)
	}
	if server.SpanKind() != trace.SpanKindServer || server.Name() != name {
		t.Errorf("server span: %v %q, want server %q", server.SpanKind(), server.Name(), name)
	}
	if server.SpanContext().TraceID() != client.SpanContext().TraceID() {
		t.Errorf("server span in trace %v, client span in %v", server.SpanContext().TraceID(), client.SpanContext().TraceID())
	}
	if server.Parent().SpanID() != client.SpanContext().SpanID() || !server.Parent().IsRemote() {
		t.Errorf("server span's parent %v (remote %v), want the client span %v",
			server.Parent().SpanID(), server.Parent().IsRemote(), client.SpanContext().SpanID())
	}
}

func portOf(a net.Addr) int { return a.(*net.TCPAddr).Port }

func TestCallSpans(t *testing.T) {
	p := newPair(t)
	var v string
	if err := p.conn.Invoke(ctxT(t), "kv.get", "a", &v); err != nil || v != "apple" {
		t.Fatalf("Invoke: %q, %v", v, err)
	}
	c := ended(t, p.client, 1)[0]
	s := ended(t, p.server, 1)[0]
	checkPair(t, c, s, "kv.get")
	if c.Parent().IsValid() {
		t.Errorf("client span has parent %v, want a root span", c.Parent())
	}
	for _, span := range []sdktrace.ReadOnlySpan{c, s} {
		if span.Status().Code != codes.Unset {
			t.Errorf("%v span status %v, want Unset", span.SpanKind(), span.Status())
		}
		if span.InstrumentationScope().Name != otelbokbok.ScopeName {
			t.Errorf("scope %q", span.InstrumentationScope().Name)
		}
	}
	wantAttrs(t, c, map[string]any{
		"rpc.system.name":      "bokbok",
		"rpc.method":           "kv.get",
		"server.address":       "127.0.0.1",
		"server.port":          p.port,
		"network.peer.address": "127.0.0.1",
		"network.peer.port":    p.port,
	}, "error.type", "rpc.response.status_code", "rpc.bokbok.notification")
	wantAttrs(t, s, map[string]any{
		"rpc.system.name":      "bokbok",
		"rpc.method":           "kv.get",
		"server.address":       "127.0.0.1",
		"server.port":          p.port,
		"network.peer.address": "127.0.0.1",
		"network.peer.port":    portOf(p.conn.LocalAddr()),
	}, "error.type", "rpc.response.status_code", "rpc.bokbok.notification")
	ca, sa := attrs(c), attrs(s)
	if n := ca["rpc.bokbok.request.size"].AsInt64(); n <= 0 {
		t.Errorf("client request size %d", n)
	}
	if n := ca["rpc.bokbok.response.size"].AsInt64(); n != 6 { // msgpack "apple"
		t.Errorf("client response size %d, want 6", n)
	}
	if n := sa["rpc.bokbok.request.size"].AsInt64(); n != 2 { // msgpack "a"
		t.Errorf("server request size %d, want 2", n)
	}
}

func TestParentFromContext(t *testing.T) {
	p := newPair(t)
	ctx, parent := p.client.tp.Tracer("test").Start(ctxT(t), "operation")
	if err := p.conn.Invoke(ctx, "kv.get", "a", nil); err != nil {
		t.Fatal(err)
	}
	parent.End()
	spans := ended(t, p.client, 2)
	c := spans[0]
	if c.Name() != "kv.get" || c.Parent().SpanID() != parent.SpanContext().SpanID() {
		t.Errorf("client span %q has parent %v, want %v", c.Name(), c.Parent().SpanID(), parent.SpanContext().SpanID())
	}
	s := ended(t, p.server, 1)[0]
	checkPair(t, c, s, "kv.get")
	if s.SpanContext().TraceID() != parent.SpanContext().TraceID() {
		t.Error("server span is not in the caller's trace")
	}
}

func TestErrorSpans(t *testing.T) {
	p := newPair(t)
	err := p.conn.Invoke(ctxT(t), "kv.get", "nope", nil)
	var re *bokbok.RemoteError
	if !errors.As(err, &re) || re.Code != "kv.not_found" {
		t.Fatalf("Invoke: %v, want kv.not_found", err)
	}
	c := ended(t, p.client, 1)[0]
	s := ended(t, p.server, 1)[0]
	checkPair(t, c, s, "kv.get")
	for _, span := range []sdktrace.ReadOnlySpan{c, s} {
		if span.Status().Code != codes.Error || !strings.Contains(span.Status().Description, `no key "nope"`) {
			t.Errorf("%v span status %v, want Error with the message", span.SpanKind(), span.Status())
		}
		wantAttrs(t, span, map[string]any{
			"rpc.response.status_code": "kv.not_found",
			"error.type":               "kv.not_found",
		}, "rpc.bokbok.response.size")
	}
}

func TestNotificationSpans(t *testing.T) {
	p := newPair(t)
	if err := p.conn.NotifyMethod(ctxT(t), "kv.put", "b"); err != nil {
		t.Fatal(err)
	}
	if got := <-p.notified; got != "b" {
		t.Fatalf("notified %q", got)
	}
	c := ended(t, p.client, 1)[0]
	s := ended(t, p.server, 1)[0]
	checkPair(t, c, s, "kv.put")
	for _, span := range []sdktrace.ReadOnlySpan{c, s} {
		wantAttrs(t, span, map[string]any{
			"rpc.system.name":         "bokbok",
			"rpc.method":              "kv.put",
			"rpc.bokbok.notification": true,
		}, "rpc.bokbok.response.size", "error.type")
	}
}

func TestNoMethodName(t *testing.T) {
	// A call without a method: the span is named by the system.
	srv := newSide(t)
	cli := newSide(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &bokbok.Server{Config: bokbok.Config{Handler: bokbok.HandlerFunc(func(ctx context.Context, req *bokbok.Request) (any, error) {
		return "ok", nil
	})}}
	srv.inst.Instrument(&s.Config)
	done := make(chan struct{})
	go func() { defer close(done); _ = s.Serve(ln) }()
	defer func() { _ = s.Shutdown(context.Background()); <-done }()
	cfg := &bokbok.Config{}
	cli.inst.Instrument(cfg)
	conn, err := bokbok.Dial(ctxT(t), ln.Addr().String(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := conn.Call(ctxT(t), 1, nil); err != nil {
		t.Fatal(err)
	}
	c := ended(t, cli, 1)[0]
	sv := ended(t, srv, 1)[0]
	checkPair(t, c, sv, "bokbok")
	wantAttrs(t, c, map[string]any{"rpc.system.name": "bokbok"}, "rpc.method")
}

func TestUnknownMethod(t *testing.T) {
	p := newPair(t)
	err := p.conn.Invoke(ctxT(t), "no.such", 1, nil)
	if !errors.Is(err, bokbok.ErrNoMethod) {
		t.Fatalf("Invoke: %v", err)
	}
	c := ended(t, p.client, 1)[0]
	s := ended(t, p.server, 1)[0]
	wantAttrs(t, c, map[string]any{"rpc.method": "no.such", "error.type": "bokbok.no_method"})
	if c.Name() != "no.such" {
		t.Errorf("client span %q", c.Name())
	}
	// The server does not serve the method: it is _OTHER there.
	if s.Name() != "bokbok" {
		t.Errorf("server span %q, want bokbok", s.Name())
	}
	wantAttrs(t, s, map[string]any{
		"rpc.method":               "_OTHER",
		"rpc.method_original":      "no.such",
		"rpc.response.status_code": "bokbok.no_method",
	})
	eventually(t, "server metrics", func() bool {
		return histCount(collect(t, p.server), "rpc.server.call.duration", map[string]any{
			"rpc.system.name": "bokbok", "rpc.method": "_OTHER",
			"rpc.response.status_code": "bokbok.no_method", "error.type": "bokbok.no_method",
		}) == 1
	})
}

func TestPanicSpan(t *testing.T) {
	p := newPair(t)
	err := p.conn.Invoke(ctxT(t), "boom", 1, nil)
	var re *bokbok.RemoteError
	if !errors.As(err, &re) || re.Code != bokbok.CodePanic {
		t.Fatalf("Invoke: %v", err)
	}
	c := ended(t, p.client, 1)[0]
	s := ended(t, p.server, 1)[0]
	checkPair(t, c, s, "boom")
	for _, span := range []sdktrace.ReadOnlySpan{c, s} {
		if span.Status().Code != codes.Error {
			t.Errorf("%v status %v", span.SpanKind(), span.Status())
		}
		wantAttrs(t, span, map[string]any{"error.type": bokbok.CodePanic})
	}
}

func TestReverseCall(t *testing.T) {
	// The server calls the client on the connection the client opened.
	p := newPair(t)
	var s string
	if err := p.serverConn.Invoke(ctxT(t), "client.hello", "server", &s); err != nil || s != "hello, server" {
		t.Fatalf("Invoke: %q, %v", s, err)
	}
	c := ended(t, p.server, 1)[0] // the server side made the call
	sv := ended(t, p.client, 1)[0]
	checkPair(t, c, sv, "client.hello")
	wantAttrs(t, c, map[string]any{
		"server.address":    "127.0.0.1",
		"server.port":       portOf(p.conn.LocalAddr()),
		"network.peer.port": portOf(p.conn.LocalAddr()),
	})
	wantAttrs(t, sv, map[string]any{"network.peer.port": p.port})

	eventually(t, "client-side server metrics", func() bool {
		return histCount(collect(t, p.client), "rpc.server.call.duration",
			map[string]any{"rpc.system.name": "bokbok", "rpc.method": "client.hello"}) == 1
	})
	rm := collect(t, p.server)
	if n := histCount(rm, "rpc.client.call.duration", map[string]any{"rpc.system.name": "bokbok", "rpc.method": "client.hello"}); n != 1 {
		t.Errorf("server side: %d client calls recorded, want 1", n)
	}
}

func TestNestedCallback(t *testing.T) {
	// client → callback → (the server's handler) → client.hello: one trace
	// of four spans, each the child of the one before.
	p := newPair(t)
	var s string
	if err := p.conn.Invoke(ctxT(t), "callback", "you", &s); err != nil || s != "hello, you" {
		t.Fatalf("Invoke: %q, %v", s, err)
	}
	cs := ended(t, p.client, 2) // the server span of client.hello ends first
	ss := ended(t, p.server, 2) // the client span of client.hello ends first
	byName := func(spans []sdktrace.ReadOnlySpan, kind trace.SpanKind, name string) sdktrace.ReadOnlySpan {
		for _, s := range spans {
			if s.SpanKind() == kind && s.Name() == name {
				return s
			}
		}
		t.Fatalf("no %v span %q in %v", kind, name, names(spans))
		return nil
	}
	c1 := byName(cs, trace.SpanKindClient, "callback")
	s1 := byName(ss, trace.SpanKindServer, "callback")
	c2 := byName(ss, trace.SpanKindClient, "client.hello")
	s2 := byName(cs, trace.SpanKindServer, "client.hello")
	checkPair(t, c1, s1, "callback")
	checkPair(t, c2, s2, "client.hello")
	if c2.Parent().SpanID() != s1.SpanContext().SpanID() || c2.Parent().IsRemote() {
		t.Errorf("the callback's client span has parent %v, want the server span %v", c2.Parent().SpanID(), s1.SpanContext().SpanID())
	}
}

func TestFilter(t *testing.T) {
	p := newPair(t, otelbokbok.WithFilter(func(method string) bool { return method != "kv.get" }))
	if err := p.conn.Invoke(ctxT(t), "kv.get", "a", nil); err != nil {
		t.Fatal(err)
	}
	if err := p.conn.Invoke(ctxT(t), "callback", "x", nil); err != nil {
		t.Fatal(err)
	}
	ended(t, p.client, 2)
	ended(t, p.server, 2)
	for _, s := range append(p.client.spans.Ended(), p.server.spans.Ended()...) {
		if s.Name() == "kv.get" {
			t.Errorf("filtered call has a span: %v", s)
		}
	}
	eventually(t, "server metrics", func() bool {
		return histCount(collect(t, p.server), "rpc.server.call.duration", map[string]any{"rpc.system.name": "bokbok", "rpc.method": "callback"}) == 1
	})
	rm := collect(t, p.server)
	if n := histCount(rm, "rpc.server.call.duration", map[string]any{"rpc.system.name": "bokbok", "rpc.method": "kv.get"}); n != 0 {
		t.Errorf("filtered call measured %d times", n)
	}
}

func TestSpanNameFormatter(t *testing.T) {
	p := newPair(t, otelbokbok.WithSpanNameFormatter(func(m string) string { return "kv/" + m }))
	if err := p.conn.Invoke(ctxT(t), "kv.get", "a", nil); err != nil {
		t.Fatal(err)
	}
	checkPair(t, ended(t, p.client, 1)[0], ended(t, p.server, 1)[0], "kv/kv.get")
}

// collect reads s's metrics.
func collect(t *testing.T, s *side) metricdata.ResourceMetrics {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := s.reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	return rm
}

func findMetric(rm metricdata.ResourceMetrics, name string) (metricdata.Metrics, bool) {
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name == name {
				return m, true
			}
		}
	}
	return metricdata.Metrics{}, false
}

func setOf(want map[string]any) attribute.Set {
	var kvs []attribute.KeyValue
	for k, v := range want {
		switch v := v.(type) {
		case string:
			kvs = append(kvs, attribute.String(k, v))
		case bool:
			kvs = append(kvs, attribute.Bool(k, v))
		case int:
			kvs = append(kvs, attribute.Int(k, v))
		}
	}
	return attribute.NewSet(kvs...)
}

// histCount returns the count of the histogram name's data point with
// exactly the attributes want, 0 if none.
func histCount(rm metricdata.ResourceMetrics, name string, want map[string]any) uint64 {
	m, ok := findMetric(rm, name)
	if !ok {
		return 0
	}
	set := setOf(want)
	switch d := m.Data.(type) {
	case metricdata.Histogram[float64]:
		for _, dp := range d.DataPoints {
			if dp.Attributes.Equals(&set) {
				return dp.Count
			}
		}
	case metricdata.Histogram[int64]:
		for _, dp := range d.DataPoints {
			if dp.Attributes.Equals(&set) {
				return dp.Count
			}
		}
	}
	return 0
}

// sumValue returns the value of the sum name's data point with exactly
// the attributes want.
func sumValue(rm metricdata.ResourceMetrics, name string, want map[string]any) (int64, bool) {
	m, ok := findMetric(rm, name)
	if !ok {
		return 0, false
	}
	set := setOf(want)
	if d, ok := m.Data.(metricdata.Sum[int64]); ok {
		for _, dp := range d.DataPoints {
			if dp.Attributes.Equals(&set) {
				return dp.Value, true
			}
		}
	}
	return 0, false
}

func TestMetrics(t *testing.T) {
	p := newPair(t)
	ctx := ctxT(t)
	for range 2 {
		if err := p.conn.Invoke(ctx, "kv.get", "a", nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.conn.Invoke(ctx, "kv.get", "zz", nil); err == nil {
		t.Fatal("no error")
	}
	if err := p.conn.NotifyMethod(ctx, "kv.put", "b"); err != nil {
		t.Fatal(err)
	}
	<-p.notified

	ok := map[string]any{"rpc.system.name": "bokbok", "rpc.method": "kv.get"}
	failed := map[string]any{"rpc.system.name": "bokbok", "rpc.method": "kv.get",
		"rpc.response.status_code": "kv.not_found", "error.type": "kv.not_found"}
	notif := map[string]any{"rpc.system.name": "bokbok", "rpc.method": "kv.put", "rpc.bokbok.notification": true}

	// The server records a call once its reply is queued, perhaps after
	// the client has it.
	eventually(t, "the server's metrics", func() bool {
		rm := collect(t, p.server)
		// A call's measurements are recorded one after the other: wait
		// for the last of each.
		return histCount(rm, "rpc.server.response.size", ok) == 2 &&
			histCount(rm, "rpc.server.request.size", failed) == 1 &&
			histCount(rm, "rpc.server.request.size", notif) == 1
	})

	for _, tc := range []struct {
		side *side
		dir  string
	}{{p.client, "client"}, {p.server, "server"}} {
		rm := collect(t, tc.side)
		dur := "rpc." + tc.dir + ".call.duration"
		m, found := findMetric(rm, dur)
		if !found {
			t.Fatalf("%s: no %s", tc.dir, dur)
		}
		if m.Unit != "s" {
			t.Errorf("%s unit %q, want s", dur, m.Unit)
		}
		for _, c := range []struct {
			name  string
			attrs map[string]any
			want  uint64
		}{
			{dur, ok, 2}, {dur, failed, 1}, {dur, notif, 1},
			{"rpc." + tc.dir + ".request.size", ok, 2},
			{"rpc." + tc.dir + ".request.size", failed, 1},
			{"rpc." + tc.dir + ".request.size", notif, 1},
			{"rpc." + tc.dir + ".response.size", ok, 2},
			{"rpc." + tc.dir + ".response.size", failed, 0},
			{"rpc." + tc.dir + ".response.size", notif, 0},
		} {
			if got := histCount(rm, c.name, c.attrs); got != c.want {
				t.Errorf("%s side: %s%v count %d, want %d", tc.dir, c.name, c.attrs, got, c.want)
			}
		}
		for _, name := range []string{"rpc.client.request.size", "rpc.server.request.size"} {
			if m, found := findMetric(rm, name); found && m.Unit != "By" {
				t.Errorf("%s unit %q, want By", name, m.Unit)
			}
		}
		other := "server"
		if tc.dir == "server" {
			other = "client"
		}
		if n := histCount(rm, "rpc."+other+".call.duration", ok); n != 0 {
			t.Errorf("%s side recorded %d %s calls", tc.dir, n, other)
		}
		sys := map[string]any{"rpc.system.name": "bokbok"}
		if v, _ := sumValue(rm, "bokbok.connection.opened", sys); v != 1 {
			t.Errorf("%s side: %d connections opened, want 1", tc.dir, v)
		}
		if v, _ := sumValue(rm, "bokbok.connection.active", sys); v != 1 {
			t.Errorf("%s side: %d connections active, want 1", tc.dir, v)
		}
	}

	// Closing shows on both sides.
	p.conn.Close()
	<-p.clientClosed
	for _, s := range []*side{p.client, p.server} {
		eventually(t, "the close to be counted", func() bool {
			rm := collect(t, s)
			closed, _ := sumValue(rm, "bokbok.connection.closed", map[string]any{"rpc.system.name": "bokbok"})
			active, _ := sumValue(rm, "bokbok.connection.active", map[string]any{"rpc.system.name": "bokbok"})
			return closed == 1 && active == 0
		})
	}
}

func TestLocalErrorType(t *testing.T) {
	p := newPair(t)
	p.conn.Close()
	<-p.clientClosed
	if err := p.conn.Invoke(ctxT(t), "kv.get", "a", nil); !errors.Is(err, bokbok.ErrClosed) {
		t.Fatalf("Invoke on a closed connection: %v", err)
	}
	c := ended(t, p.client, 1)[0]
	if c.Status().Code != codes.Error {
		t.Errorf("status %v", c.Status())
	}
	wantAttrs(t, c, map[string]any{"error.type": "closed"}, "rpc.response.status_code")

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_ = p.conn.Invoke(ctx, "kv.get", "a", nil)
	c = ended(t, p.client, 2)[1]
	wantAttrs(t, c, map[string]any{"error.type": bokbok.CodeCanceled}, "rpc.response.status_code")
}

func TestRefusedConnection(t *testing.T) {
	// A client that sends garbage is refused, and counted.
	srv := newSide(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &bokbok.Server{Config: bokbok.Config{Handler: bokbok.NewMux(), HandshakeTimeout: time.Second}}
	srv.inst.Instrument(&s.Config)
	done := make(chan struct{})
	go func() { defer close(done); _ = s.Serve(ln) }()
	defer func() { _ = s.Shutdown(context.Background()); <-done }()
	nc, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	_, _ = nc.Write([]byte("GET / HTTP/1.1\r\n\r\n"))
	defer nc.Close()
	eventually(t, "a refusal", func() bool {
		m, ok := findMetric(collect(t, srv), "bokbok.connection.refused")
		if !ok {
			return false
		}
		d := m.Data.(metricdata.Sum[int64])
		return len(d.DataPoints) == 1 && d.DataPoints[0].Value == 1
	})
}

func TestInstrument(t *testing.T) {
	inst := otelbokbok.New()
	// A nil Handler stays nil: bokbok then answers as it does without one.
	var cfg bokbok.Config
	inst.Instrument(&cfg)
	if cfg.Handler != nil {
		t.Error("Instrument gave a Config without a Handler one")
	}
	if len(cfg.Interceptors) != 1 || cfg.Stats == nil {
		t.Errorf("Instrument set %d interceptors, stats %v", len(cfg.Interceptors), cfg.Stats)
	}
	// Existing interceptors stay, after it; an existing StatsHandler
	// still gets everything.
	var calls atomic.Int32
	own := bokbok.Interceptor(func(ctx context.Context, o *bokbok.Outgoing, next bokbok.CallFunc) error {
		calls.Add(1)
		return next(ctx, o)
	})
	counting := &countingStats{}
	cfg = bokbok.Config{Interceptors: []bokbok.Interceptor{own}, Stats: counting}
	inst.Instrument(&cfg)
	if len(cfg.Interceptors) != 2 {
		t.Fatalf("%d interceptors", len(cfg.Interceptors))
	}
	cfg.Stats.HandleCall(bokbok.CallStats{Method: "m"})
	cfg.Stats.HandleConn(bokbok.ConnStats{})
	if counting.calls.Load() != 1 || counting.conns.Load() != 1 {
		t.Errorf("the Config's own StatsHandler got %d calls, %d conns", counting.calls.Load(), counting.conns.Load())
	}
}

type countingStats struct{ calls, conns atomic.Int32 }

func (c *countingStats) HandleCall(bokbok.CallStats) { c.calls.Add(1) }
func (c *countingStats) HandleConn(bokbok.ConnStats) { c.conns.Add(1) }

func TestStatsAllocs(t *testing.T) {
	s := newSide(t)
	h := s.inst.Stats()
	calls := []bokbok.CallStats{
		{Method: "kv.get", RequestBytes: 20, ReplyBytes: 30, Duration: time.Millisecond},
		{Served: true, Method: "kv.get", RequestBytes: 20, ReplyBytes: 30, Duration: time.Millisecond},
		{Method: "kv.get", RequestBytes: 20, Duration: time.Millisecond, Code: "kv.not_found",
			Err: bokbok.Errorf("kv.not_found", "no")},
		{Notification: true, Method: "kv.put", RequestBytes: 20, Duration: time.Millisecond},
	}
	for _, st := range calls {
		h.HandleCall(st) // fill the cache
	}
	for _, st := range calls {
		if n := testing.AllocsPerRun(100, func() { h.HandleCall(st) }); n != 0 {
			t.Errorf("HandleCall(%+v) allocates %v times", st, n)
		}
	}
	conn := bokbok.ConnStats{}
	if n := testing.AllocsPerRun(100, func() { h.HandleConn(conn) }); n != 0 {
		t.Errorf("HandleConn allocates %v times", n)
	}
}

func TestStatsBound(t *testing.T) {
	// A peer calling ever new methods makes at most about 1024 series.
	s := newSide(t)
	h := s.inst.Stats()
	const n = 3000
	for i := range n {
		h.HandleCall(bokbok.CallStats{Served: true, Method: "m" + strconv.Itoa(i), Duration: time.Microsecond})
	}
	m, ok := findMetric(collect(t, s), "rpc.server.call.duration")
	if !ok {
		t.Fatal("no rpc.server.call.duration")
	}
	d := m.Data.(metricdata.Histogram[float64])
	if len(d.DataPoints) > 1030 {
		t.Errorf("%d series for %d methods", len(d.DataPoints), n)
	}
	var total, other uint64
	for _, dp := range d.DataPoints {
		total += dp.Count
		if v, _ := dp.Attributes.Value("rpc.method"); v.AsString() == "_OTHER" {
			other = dp.Count
		}
	}
	if total != n || other == 0 || other > n-1000 {
		t.Errorf("%d calls recorded, %d as _OTHER", total, other)
	}
}

func TestMetadataCarrier(t *testing.T) {
	md := bokbok.Metadata{}
	tp := sdktrace.NewTracerProvider()
	defer func() { _ = tp.Shutdown(context.Background()) }()
	ctx, span := tp.Tracer("t").Start(context.Background(), "x")
	defer span.End()
	prop := propagation.TraceContext{}
	prop.Inject(ctx, otelbokbok.MetadataCarrier(md))
	if md["traceparent"] == "" {
		t.Fatalf("nothing injected: %v", md)
	}
	got := trace.SpanContextFromContext(prop.Extract(context.Background(), otelbokbok.MetadataCarrier(md)))
	if got.SpanID() != span.SpanContext().SpanID() {
		t.Errorf("extracted %v, want %v", got.SpanID(), span.SpanContext().SpanID())
	}
	if keys := otelbokbok.MetadataCarrier(md).Keys(); len(keys) != 1 || keys[0] != "traceparent" {
		t.Errorf("Keys %v", keys)
	}
}

func BenchmarkHandleCall(b *testing.B) {
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()))
	defer func() { _ = mp.Shutdown(context.Background()) }()
	h := otelbokbok.New(otelbokbok.WithMeterProvider(mp)).Stats()
	st := bokbok.CallStats{Method: "kv.get", RequestBytes: 20, ReplyBytes: 30, Duration: time.Millisecond}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			h.HandleCall(st)
		}
	})
}

// BenchmarkInvoke measures a call over loopback, without and with the
// instrumentation (tracing to an SDK provider that records nothing, and
// metrics to a ManualReader).
func BenchmarkInvoke(b *testing.B) {
	for _, instrumented := range []bool{false, true} {
		b.Run("instrumented="+strconv.FormatBool(instrumented), func(b *testing.B) {
			tp := sdktrace.NewTracerProvider()
			mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()))
			defer func() { _ = tp.Shutdown(context.Background()); _ = mp.Shutdown(context.Background()) }()
			inst := otelbokbok.New(otelbokbok.WithTracerProvider(tp), otelbokbok.WithMeterProvider(mp),
				otelbokbok.WithPropagators(propagation.TraceContext{}))
			mux := bokbok.NewMux()
			bokbok.Handle(mux, "echo", func(ctx context.Context, s string) (string, error) { return s, nil })
			srv := &bokbok.Server{Config: bokbok.Config{Handler: mux}}
			cfg := &bokbok.Config{}
			if instrumented {
				inst.Instrument(&srv.Config)
				inst.Instrument(cfg)
			}
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				b.Fatal(err)
			}
			done := make(chan struct{})
			go func() { defer close(done); _ = srv.Serve(ln) }()
			conn, err := bokbok.Dial(context.Background(), ln.Addr().String(), cfg)
			if err != nil {
				b.Fatal(err)
			}
			ctx := context.Background()
			b.ReportAllocs()
			for b.Loop() {
				var out string
				if err := conn.Invoke(ctx, "echo", "hi", &out); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			_ = srv.Shutdown(context.Background())
			conn.Close()
			<-done
		})
	}
}
