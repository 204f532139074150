// Package otelbokbok instruments bokbok connections with OpenTelemetry:
// a span for every call made and every call served, the trace context
// carried in the call's metadata so that the two spans join one trace,
// and metrics of calls and connections.
//
// It lives in a module of its own (github.com/bokbok-go/bokbok/otel), so
// that the bokbok module itself does not depend on OpenTelemetry.
//
// # Wiring
//
// One Instrumentation gives the three hooks bokbok has:
//
//   - Interceptor, for Config.Interceptors: a CLIENT span for every
//     request and notification this side sends, with the trace context
//     injected into the call's metadata.
//   - Middleware, to wrap Config.Handler: a SERVER span for every request
//     and notification this side serves, a child of the caller's span
//     (extracted from the request's metadata).
//   - Stats, for Config.Stats: the metrics.
//
// Instrument sets all three on a Config. Connections are symmetric, so
// the same call suits both sides, and each side gets client spans for
// the calls it makes and server spans for those it serves:
//
//	inst := otelbokbok.New()                 // the global providers and propagator
//	cfg := &bokbok.Config{Handler: h}
//	inst.Instrument(cfg)
//	conn, err := bokbok.Dial(ctx, addr, cfg)
//
//	srv := &bokbok.Server{Config: bokbok.Config{Handler: mux}}
//	inst.Instrument(&srv.Config)
//
// or, by hand:
//
//	cfg.Interceptors = append(cfg.Interceptors, inst.Interceptor())
//	cfg.Handler = inst.Middleware()(cfg.Handler)
//	cfg.Stats = inst.Stats()
//
// By default New uses otel.GetTracerProvider, otel.GetMeterProvider and
// otel.GetTextMapPropagator, as otelgrpc does. The global propagator
// propagates nothing until one is set, so a program (on both sides) sets
// one, typically
//
//	otel.SetTextMapPropagator(propagation.NewCompositeTextMapPropagator(
//		propagation.TraceContext{}, propagation.Baggage{}))
//
// or passes WithPropagators. The trace context travels as metadata
// entries ("traceparent", "tracestate", "baggage" for W3C); a peer that
// does not read metadata (an earlier protocol version) gets none, and its
// spans start new traces.
//
// # Semantic conventions
//
// Spans and metrics follow the OpenTelemetry semantic conventions for
// RPC, version 1.43.0 (go.opentelemetry.io/otel/semconv/v1.43.0, the
// newest that go.opentelemetry.io/otel v1.47.0 ships), with bokbok as
// rpc.system.name. A span is named by its method; a call without a
// method is named "bokbok" (the rpc.system.name, as the conventions say).
// Spans carry:
//
//	rpc.system.name           "bokbok"
//	rpc.method                the method, if the call has one
//	rpc.method_original       the method, on a server span whose method the Mux does not serve (rpc.method is then "_OTHER")
//	server.address, .port     the side serving the call: the peer for a client span, this side's address for a server span
//	network.peer.address, .port  the peer's address
//	rpc.response.status_code  the error code of a failed call, when it has one (see bokbok.RemoteError)
//	error.type                why the call failed; absent on success (see below)
//	rpc.bokbok.notification   true for a notification (absent for a request)
//	rpc.bokbok.request.size   the encoded request in bytes: on a client span with its header (Outgoing.RequestSize), on a server span without it (len(Request.Raw()))
//	rpc.bokbok.response.size  the encoded reply in bytes, on a client span whose call succeeded
//
// A failed call sets the span's status to Error, with the error's text as
// its description, on both sides. error.type is the call's error code
// when it has one (bokbok's own, such as "bokbok.busy", "bokbok.panic"
// for a handler that panicked, "bokbok.no_method", or the application's,
// such as "kv.not_found"); a context deadline or cancellation is
// "bokbok.deadline_exceeded" or "bokbok.canceled" (as bokbok sends them),
// a message over the peer's limit "bokbok.too_large"; a call that failed
// because the connection closed is "closed", one refused because it is
// shutting down "shutdown", one with bad metadata "bad_metadata", one
// with a method for a peer without method names "no_headers"; any other
// error with no code is "_OTHER" for an error from (or sent to) the
// peer, and for any other local failure its Go type (semconv.ErrorType).
//
// A notification gets a CLIENT span that ends when it is queued and a
// SERVER span that covers its handler. Requests that bokbok refuses
// without running them (busy, malformed) get no server span, since no
// handler runs; they are counted in the metrics.
//
// # Metrics
//
// The Stats handler records, for every call, with the attributes
// rpc.system.name, rpc.method (if any), rpc.response.status_code (if the
// call failed with a code), error.type (if it failed) and
// rpc.bokbok.notification (true for notifications):
//
//	rpc.client.call.duration  histogram, s   calls this side made (semconv v1.43.0)
//	rpc.server.call.duration  histogram, s   calls this side served (semconv v1.43.0)
//	rpc.client.request.size   histogram, By  encoded requests sent, header included
//	rpc.client.response.size  histogram, By  encoded replies received (successful requests)
//	rpc.server.request.size   histogram, By  encoded requests received, header included
//	rpc.server.response.size  histogram, By  encoded replies sent (successful requests)
//
// The durations are those of the semantic conventions v1.43.0 (which
// replaced rpc.client.duration and rpc.server.duration, in
// milliseconds). That version has no size metrics: it obsoleted the
// earlier ones "with no replacement at this time", so the size
// histograms keep the earlier conventions' names and unit. A client
// notification's duration is the time to queue it; a served one's the
// time from its arrival to its handler's return.
//
// server.address and server.port are left out of the metrics: on a
// connection either side calls, the "server" of a call made by the side
// that accepted the connection is a client's ephemeral address, which
// would make one time series per connection.
//
// rpc.method is the peer's choice for the calls this side serves, and
// error codes are the peer's choice for the calls it makes. To bound the
// number of time series a peer can create, the handler keeps at most
// 1024 distinct attribute sets per Instrumentation; beyond that, new
// methods are recorded as "_OTHER", and new codes too.
//
// Connections are counted with attribute rpc.system.name (and error.type
// for refused ones):
//
//	bokbok.connection.opened   counter, {connection}
//	bokbok.connection.closed   counter, {connection}
//	bokbok.connection.refused  counter, {connection}  refused by a Server during their opening
//	bokbok.connection.active   up-down counter, {connection}  open now
//
// # Cost
//
// With no tracer provider or meter provider set, spans and measurements
// are no-ops. The interceptor and middleware add to each call the span
// itself and one copy of the call's metadata (to add the trace context);
// attributes beyond the sampling-relevant ones are only computed for a
// span that records. The Stats handler looks a call's attribute set up
// in a cache: a call that succeeded, or failed with an error code, costs
// it no allocation once its set has been seen.
package otelbokbok
