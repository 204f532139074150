package otelbokbok_test

import (
	"context"
	"fmt"
	"net"
	"slices"
	"sort"

	"github.com/bokbok-go/bokbok"
	otelbokbok "github.com/bokbok-go/bokbok/otel"
	"go.opentelemetry.io/otel/propagation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
)

// Instrument wires spans, trace propagation and metrics into a server and
// a client. Here both run in one process and share one tracer provider,
// which records in memory; a real program passes its own providers (or
// sets the global ones and calls New()).
func Example() {
	ctx := context.Background()
	spans := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans))
	defer tp.Shutdown(ctx)

	inst := otelbokbok.New(
		otelbokbok.WithTracerProvider(tp),
		// Or otel.SetTextMapPropagator(...) once, and leave this out.
		otelbokbok.WithPropagators(propagation.NewCompositeTextMapPropagator(
			propagation.TraceContext{}, propagation.Baggage{})),
	)

	// The server.
	mux := bokbok.NewMux()
	bokbok.Handle(mux, "greet", func(ctx context.Context, name string) (string, error) {
		return "hello, " + name, nil
	})
	srv := &bokbok.Server{Config: bokbok.Config{Handler: mux}}
	inst.Instrument(&srv.Config)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Println(err)
		return
	}
	go srv.Serve(ln)
	defer srv.Shutdown(ctx)

	// The client.
	cfg := &bokbok.Config{}
	inst.Instrument(cfg)
	conn, err := bokbok.Dial(ctx, ln.Addr().String(), cfg)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer conn.Close()

	var reply string
	if err := conn.Invoke(ctx, "greet", "world", &reply); err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(reply)

	// The server's span ends before its reply is sent, so both are there.
	ended := spans.Ended()
	var lines []string
	for _, s := range ended {
		lines = append(lines, s.SpanKind().String()+" "+s.Name())
	}
	sort.Strings(lines)
	for _, l := range lines {
		fmt.Println(l)
	}
	server, client := ended[0], ended[1]
	if server.SpanKind() != trace.SpanKindServer {
		server, client = client, server
	}
	fmt.Println("one trace:", server.SpanContext().TraceID() == client.SpanContext().TraceID())
	fmt.Println("server span's parent is the client span:", server.Parent().SpanID() == client.SpanContext().SpanID())
	// Output:
	// hello, world
	// client greet
	// server greet
	// one trace: true
	// server span's parent is the client span: true
}

// The three hooks can be set one by one: here on a side that only calls,
// with the metrics read from a ManualReader.
func ExampleInstrumentation_Stats() {
	ctx := context.Background()
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	defer mp.Shutdown(ctx)
	inst := otelbokbok.New(otelbokbok.WithMeterProvider(mp))

	srv := &bokbok.Server{Config: bokbok.Config{Handler: bokbok.HandlerFunc(
		func(ctx context.Context, req *bokbok.Request) (any, error) { return "pong", nil })}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Println(err)
		return
	}
	go srv.Serve(ln)
	defer srv.Shutdown(ctx)

	closed := make(chan struct{})
	cfg := &bokbok.Config{
		Interceptors: []bokbok.Interceptor{inst.Interceptor()}, // client spans
		Handler:      inst.Middleware()(nil),                   // server spans (this side serves nothing: stays nil)
		Stats:        inst.Stats(),                             // metrics
		OnClose:      func(*bokbok.Conn, error) { close(closed) },
	}
	conn, err := bokbok.Dial(ctx, ln.Addr().String(), cfg)
	if err != nil {
		fmt.Println(err)
		return
	}
	if _, err := conn.RequestMethod(ctx, "ping", nil); err != nil {
		fmt.Println(err)
	}
	conn.Close()
	<-closed

	var rm metricdata.ResourceMetrics
	if err := reader.Collect(ctx, &rm); err != nil {
		fmt.Println(err)
		return
	}
	var names []string
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			names = append(names, m.Name+" ("+m.Unit+")")
		}
	}
	slices.Sort(names)
	for _, n := range names {
		fmt.Println(n)
	}
	// Output:
	// bokbok.connection.active ({connection})
	// bokbok.connection.closed ({connection})
	// bokbok.connection.opened ({connection})
	// rpc.client.call.duration (s)
	// rpc.client.request.size (By)
	// rpc.client.response.size (By)
}

// MetadataCarrier carries a trace context in bokbok.Metadata by hand, for
// example into the metadata of a context (bokbok.WithMetadata).
func ExampleMetadataCarrier() {
	ctx := context.Background()
	tp := sdktrace.NewTracerProvider()
	defer tp.Shutdown(ctx)
	ctx, span := tp.Tracer("example").Start(ctx, "work")
	defer span.End()

	md := bokbok.Metadata{}
	propagation.TraceContext{}.Inject(ctx, otelbokbok.MetadataCarrier(md))
	ctx = bokbok.WithMetadata(ctx, md)
	fmt.Println(otelbokbok.MetadataCarrier(bokbok.OutgoingMetadata(ctx)).Keys())
	// Output:
	// [traceparent]
}
