package otelbokbok

import (
	"context"
	"errors"
	"sync"

	"github.com/bokbok-go/bokbok"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/semconv/v1.43.0/rpcconv"
)

// Metric names beside the semantic conventions' (see the package doc).
const (
	ClientRequestSizeName  = "rpc.client.request.size"
	ClientResponseSizeName = "rpc.client.response.size"
	ServerRequestSizeName  = "rpc.server.request.size"
	ServerResponseSizeName = "rpc.server.response.size"
	ConnOpenedName         = "bokbok.connection.opened"
	ConnClosedName         = "bokbok.connection.closed"
	ConnRefusedName        = "bokbok.connection.refused"
	ConnActiveName         = "bokbok.connection.active"
)

// defaultMaxSets bounds the attribute sets a Stats handler keeps.
const defaultMaxSets = 1024

// sizeBuckets are the bucket boundaries of the size histograms, in bytes:
// from one small message to bokbok's largest by powers of four.
var sizeBuckets = []float64{0, 64, 256, 1 << 10, 4 << 10, 16 << 10, 64 << 10, 256 << 10, 1 << 20, 4 << 20, 16 << 20, 64 << 20}

// statsHandler records the metrics of calls and connections.
type statsHandler struct {
	filter func(string) bool

	clientDuration, serverDuration metric.Float64Histogram
	clientReq, clientResp          metric.Int64Histogram
	serverReq, serverResp          metric.Int64Histogram
	opened, closed, refused        metric.Int64Counter
	active                         metric.Int64UpDownCounter

	connOpts    []metric.AddOption // rpc.system.name alone
	refusedOpts sync.Map           // error.type (string) → []metric.AddOption; a small fixed set of values

	sets    sync.Map   // setKey → []metric.RecordOption; read without mu
	mu      sync.Mutex // guards nsets and adding to sets
	nsets   int
	maxSets int
}

// setKey identifies the attribute set of a call's measurements.
type setKey struct {
	served, notify bool
	method         string
	code, errType  string
}

func newStatsHandler(m metric.Meter, filter func(string) bool, maxSets int) *statsHandler {
	s := &statsHandler{filter: filter, maxSets: maxSets}
	var errs []error
	check := func(err error) {
		if err != nil {
			errs = append(errs, err)
		}
	}
	cd, err := rpcconv.NewClientCallDuration(m)
	check(err)
	sd, err := rpcconv.NewServerCallDuration(m)
	check(err)
	s.clientDuration, s.serverDuration = cd.Inst(), sd.Inst()
	size := func(name, desc string) metric.Int64Histogram {
		h, err := m.Int64Histogram(name, metric.WithUnit("By"), metric.WithDescription(desc),
			metric.WithExplicitBucketBoundaries(sizeBuckets...))
		check(err)
		return h
	}
	s.clientReq = size(ClientRequestSizeName, "Measures the size of RPC request messages sent, as encoded.")
	s.clientResp = size(ClientResponseSizeName, "Measures the size of RPC response messages received, as encoded.")
	s.serverReq = size(ServerRequestSizeName, "Measures the size of RPC request messages received, as encoded.")
	s.serverResp = size(ServerResponseSizeName, "Measures the size of RPC response messages sent, as encoded.")
	counter := func(name, desc string) metric.Int64Counter {
		c, err := m.Int64Counter(name, metric.WithUnit("{connection}"), metric.WithDescription(desc))
		check(err)
		return c
	}
	s.opened = counter(ConnOpenedName, "Counts the bokbok connections opened.")
	s.closed = counter(ConnClosedName, "Counts the bokbok connections closed.")
	s.refused = counter(ConnRefusedName, "Counts the bokbok connections a server refused while they opened.")
	s.active, err = m.Int64UpDownCounter(ConnActiveName, metric.WithUnit("{connection}"),
		metric.WithDescription("Counts the bokbok connections open."))
	check(err)
	if len(errs) > 0 {
		otel.Handle(errors.Join(errs...))
	}
	s.connOpts = []metric.AddOption{metric.WithAttributeSet(attribute.NewSet(systemAttr))}
	return s
}

// HandleCall records a finished call.
func (s *statsHandler) HandleCall(st bokbok.CallStats) {
	if s.filter != nil && !s.filter(st.Method) {
		return
	}
	k := setKey{served: st.Served, notify: st.Notification, method: st.Method}
	switch {
	case st.Code != "":
		k.code, k.errType = st.Code, st.Code
		if st.Served && st.Code == bokbok.CodeNoMethod && k.method != "" {
			k.method = otherValue // a method this side does not serve
		}
	case st.Err != nil:
		k.code, k.errType = classify(st.Err, st.Served)
	}
	opts := s.recordOpts(k)
	ctx := context.Background()
	ok := st.Err == nil && st.Code == ""
	if st.Served {
		s.serverDuration.Record(ctx, st.Duration.Seconds(), opts...)
		if st.RequestBytes > 0 {
			s.serverReq.Record(ctx, int64(st.RequestBytes), opts...)
		}
		if ok && !st.Notification {
			s.serverResp.Record(ctx, int64(st.ReplyBytes), opts...)
		}
		return
	}
	s.clientDuration.Record(ctx, st.Duration.Seconds(), opts...)
	if st.RequestBytes > 0 {
		s.clientReq.Record(ctx, int64(st.RequestBytes), opts...)
	}
	if ok && !st.Notification {
		s.clientResp.Record(ctx, int64(st.ReplyBytes), opts...)
	}
}

// recordOpts returns the measurement options of the attribute set k,
// from the cache when it has been seen.
func (s *statsHandler) recordOpts(k setKey) []metric.RecordOption {
	if v, ok := s.sets.Load(k); ok {
		return v.([]metric.RecordOption)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if v, ok := s.sets.Load(k); ok {
		return v.([]metric.RecordOption)
	}
	if s.nsets >= s.maxSets {
		// Full: new methods and codes become _OTHER. The sets this leaves
		// are few (directions, kinds and the local error types), so they
		// are kept beyond the bound.
		if k.method != "" {
			k.method = otherValue
		}
		if k.code != "" {
			if k.errType == k.code {
				k.errType = otherValue
			}
			k.code = otherValue
		}
		if v, ok := s.sets.Load(k); ok {
			return v.([]metric.RecordOption)
		}
	}
	attrs := make([]attribute.KeyValue, 0, 5)
	attrs = append(attrs, systemAttr)
	if k.method != "" {
		attrs = append(attrs, semconv.RPCMethodKey.String(k.method))
	}
	if k.code != "" {
		attrs = append(attrs, semconv.RPCResponseStatusCodeKey.String(k.code))
	}
	if k.errType != "" {
		attrs = append(attrs, semconv.ErrorTypeKey.String(k.errType))
	}
	if k.notify {
		attrs = append(attrs, notifyAttr)
	}
	opts := []metric.RecordOption{metric.WithAttributeSet(attribute.NewSet(attrs...))}
	s.sets.Store(k, opts)
	s.nsets++
	return opts
}

// HandleConn counts connections opening, closing and refused.
func (s *statsHandler) HandleConn(st bokbok.ConnStats) {
	ctx := context.Background()
	switch {
	case st.Refused:
		s.refused.Add(ctx, 1, s.refusedAddOpts(refusedType(st.Err))...)
	case st.Closed:
		s.closed.Add(ctx, 1, s.connOpts...)
		s.active.Add(ctx, -1, s.connOpts...)
	default:
		s.opened.Add(ctx, 1, s.connOpts...)
		s.active.Add(ctx, 1, s.connOpts...)
	}
}

// refusedAddOpts returns the options of a refused connection of errType.
func (s *statsHandler) refusedAddOpts(errType string) []metric.AddOption {
	if v, ok := s.refusedOpts.Load(errType); ok {
		return v.([]metric.AddOption)
	}
	opts := []metric.AddOption{metric.WithAttributeSet(attribute.NewSet(systemAttr, semconv.ErrorTypeKey.String(errType)))}
	v, _ := s.refusedOpts.LoadOrStore(errType, opts)
	return v.([]metric.AddOption)
}

// refusedType is the error.type of a connection refused with err: one of
// a fixed few.
func refusedType(err error) string {
	switch {
	case errors.Is(err, bokbok.ErrServerBusy):
		return "server_busy"
	case errors.Is(err, bokbok.ErrAuth):
		return "auth"
	case errors.Is(err, bokbok.ErrMode):
		return "mode"
	case errors.Is(err, bokbok.ErrVersion):
		return "version"
	case errors.Is(err, bokbok.ErrHandshakeTimeout):
		return "handshake_timeout"
	case errors.Is(err, bokbok.ErrProtocol):
		return "protocol"
	case errors.Is(err, bokbok.ErrShutdown), errors.Is(err, bokbok.ErrServerClosed):
		return "shutdown"
	}
	return otherValue
}
