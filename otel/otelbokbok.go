package otelbokbok

import (
	"slices"

	"github.com/bokbok-go/bokbok"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
)

// ScopeName is the instrumentation scope name of the tracer and meter.
const ScopeName = "github.com/bokbok-go/bokbok/otel"

// SystemName is the value of the rpc.system.name attribute, and the name
// of the span of a call without a method.
const SystemName = "bokbok"

// Version returns the version of this instrumentation, reported as the
// instrumentation scope's version.
func Version() string { return "0.1.0" }

// Option configures New.
type Option interface {
	apply(*config)
}

type optionFunc func(*config)

func (f optionFunc) apply(c *config) { f(c) }

type config struct {
	tp       trace.TracerProvider
	mp       metric.MeterProvider
	prop     propagation.TextMapPropagator
	spanName func(method string) string
	filter   func(method string) bool
	spanOpts []trace.SpanStartOption
	maxSets  int // bound of the Stats handler's attribute sets
}

// WithTracerProvider sets the tracer provider the spans come from. The
// default is otel.GetTracerProvider(); nil keeps it.
func WithTracerProvider(tp trace.TracerProvider) Option {
	return optionFunc(func(c *config) {
		if tp != nil {
			c.tp = tp
		}
	})
}

// WithMeterProvider sets the meter provider of the metrics. The default
// is otel.GetMeterProvider(); nil keeps it.
func WithMeterProvider(mp metric.MeterProvider) Option {
	return optionFunc(func(c *config) {
		if mp != nil {
			c.mp = mp
		}
	})
}

// WithPropagators sets the propagator that carries the trace context (and
// baggage) in a call's metadata. The default is otel.GetTextMapPropagator(),
// which propagates nothing until a program sets one; nil keeps it. Both
// sides of a connection must use the same format.
func WithPropagators(p propagation.TextMapPropagator) Option {
	return optionFunc(func(c *config) {
		if p != nil {
			c.prop = p
		}
	})
}

// WithSpanNameFormatter sets how spans are named from the call's method
// ("" for a call without one), on both sides. The default names a span
// by its method, or SystemName ("bokbok") if it has none, as the
// semantic conventions say. nil keeps the default.
func WithSpanNameFormatter(f func(method string) string) Option {
	return optionFunc(func(c *config) {
		if f != nil {
			c.spanName = f
		}
	})
}

// WithFilter sets which calls are instrumented: a call whose method f
// returns false for gets no span (the trace context still flows through
// it unchanged) and is not measured. nil instruments every call, the
// default.
func WithFilter(f func(method string) bool) Option {
	return optionFunc(func(c *config) { c.filter = f })
}

// WithSpanOptions adds options to every span started, client and server
// (for example trace.WithAttributes with attributes of every call).
func WithSpanOptions(opts ...trace.SpanStartOption) Option {
	return optionFunc(func(c *config) { c.spanOpts = append(c.spanOpts, opts...) })
}

// Instrumentation creates the spans and metrics of bokbok connections.
// Make one with New and share it between any number of connections and
// servers; it is safe for concurrent use.
type Instrumentation struct {
	tracer   trace.Tracer
	prop     propagation.TextMapPropagator
	spanName func(string) string
	filter   func(string) bool

	clientStart []trace.SpanStartOption // the options every client span starts with
	serverStart []trace.SpanStartOption // and every server span

	stats *statsHandler
}

// New returns an Instrumentation configured by opts.
func New(opts ...Option) *Instrumentation {
	c := config{
		tp:      otel.GetTracerProvider(),
		mp:      otel.GetMeterProvider(),
		prop:    otel.GetTextMapPropagator(),
		maxSets: defaultMaxSets,
	}
	for _, o := range opts {
		o.apply(&c)
	}
	i := &Instrumentation{
		tracer: c.tp.Tracer(ScopeName,
			trace.WithInstrumentationVersion(Version()),
			trace.WithSchemaURL(semconv.SchemaURL)),
		prop:     c.prop,
		spanName: c.spanName,
		filter:   c.filter,
	}
	i.clientStart = append(slices.Clip(c.spanOpts), trace.WithSpanKind(trace.SpanKindClient))
	i.serverStart = append(slices.Clip(c.spanOpts), trace.WithSpanKind(trace.SpanKindServer))
	meter := c.mp.Meter(ScopeName,
		metric.WithInstrumentationVersion(Version()),
		metric.WithSchemaURL(semconv.SchemaURL))
	i.stats = newStatsHandler(meter, c.filter, c.maxSets)
	return i
}

// name returns the span name of a call to method.
func (i *Instrumentation) name(method string) string {
	if i.spanName != nil {
		return i.spanName(method)
	}
	if method == "" {
		return SystemName
	}
	return method
}

// Interceptor returns the client-side hook, for Config.Interceptors: every
// request and notification the connection sends gets a span of kind
// CLIENT, a child of the span in the caller's context, and carries the
// trace context in its metadata. Put it first in Config.Interceptors for
// its span to cover the other interceptors too.
func (i *Instrumentation) Interceptor() bokbok.Interceptor { return i.intercept }

// Middleware returns the server-side hook, to wrap Config.Handler: every
// request and notification the handler serves gets a span of kind SERVER,
// a child of the caller's span when the request's metadata carries it,
// and the handler's context holds that span (so calls the handler makes,
// back to the peer or elsewhere, are its children). The middleware keeps
// a nil Handler nil, so a side that serves nothing still answers as
// bokbok does without one.
func (i *Instrumentation) Middleware() bokbok.Middleware {
	return func(h bokbok.Handler) bokbok.Handler {
		if h == nil {
			return nil
		}
		return &serverHandler{i: i, next: h}
	}
}

// Stats returns the metrics hook, for Config.Stats. The same handler may
// serve any number of connections and servers.
func (i *Instrumentation) Stats() bokbok.StatsHandler { return i.stats }

// Instrument sets all three hooks on cfg, which must not be in use yet:
// it puts Interceptor first in cfg.Interceptors (in a new slice), wraps
// cfg.Handler with Middleware, and sets cfg.Stats to Stats (or, if cfg
// already has a StatsHandler, to one that calls both). Use it on a
// dialling side's Config and on a Server's (&srv.Config) alike.
func (i *Instrumentation) Instrument(cfg *bokbok.Config) {
	cfg.Interceptors = slices.Concat([]bokbok.Interceptor{i.Interceptor()}, cfg.Interceptors)
	cfg.Handler = i.Middleware()(cfg.Handler)
	if cfg.Stats == nil {
		cfg.Stats = i.stats
	} else {
		cfg.Stats = bothStats{cfg.Stats, i.stats}
	}
}

// bothStats passes statistics to two handlers.
type bothStats struct{ a, b bokbok.StatsHandler }

func (s bothStats) HandleCall(st bokbok.CallStats) { s.a.HandleCall(st); s.b.HandleCall(st) }
func (s bothStats) HandleConn(st bokbok.ConnStats) { s.a.HandleConn(st); s.b.HandleConn(st) }
