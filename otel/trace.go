package otelbokbok

import (
	"context"
	"errors"
	"net"
	"strconv"

	"github.com/bokbok-go/bokbok"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
)

// Custom attribute keys, for what the semantic conventions have no key for.
const (
	// NotificationKey is true on the spans and metrics of notifications.
	NotificationKey = attribute.Key("rpc.bokbok.notification")
	// RequestSizeKey is the encoded size of a request, in bytes.
	RequestSizeKey = attribute.Key("rpc.bokbok.request.size")
	// ResponseSizeKey is the encoded size of a reply, in bytes.
	ResponseSizeKey = attribute.Key("rpc.bokbok.response.size")
)

var (
	systemAttr  = semconv.RPCSystemNameKey.String(SystemName)
	notifyAttr  = NotificationKey.Bool(true)
	methodOther = semconv.RPCMethodKey.String(otherValue)
)

// otherValue stands for a method or code that is not recorded as itself.
const otherValue = "_OTHER"

// intercept is the client interceptor: a CLIENT span around the call, with
// the trace context injected into the call's metadata.
func (i *Instrumentation) intercept(ctx context.Context, o *bokbok.Outgoing, next bokbok.CallFunc) error {
	method := o.Method()
	if i.filter != nil && !i.filter(method) {
		return next(ctx, o)
	}
	// The attributes that matter for sampling go in at the start: system,
	// method and the server (here the peer, which serves the call).
	attrs := make([]attribute.KeyValue, 0, 8)
	attrs = append(attrs, systemAttr)
	if method != "" {
		attrs = append(attrs, semconv.RPCMethodKey.String(method))
	}
	if o.IsNotification() {
		attrs = append(attrs, notifyAttr)
	}
	var peerHost string
	var peerPort int
	if c := o.Conn(); c != nil {
		peerHost, peerPort = splitAddr(c.RemoteAddr())
	}
	attrs = appendHostPort(attrs, semconv.ServerAddressKey, semconv.ServerPortKey, peerHost, peerPort)
	opts := append(i.clientStart[:len(i.clientStart):len(i.clientStart)], trace.WithAttributes(attrs...))
	ctx, span := i.tracer.Start(ctx, i.name(method), opts...)
	i.prop.Inject(ctx, outgoingCarrier{o})

	err := next(ctx, o)

	if span.IsRecording() {
		attrs = appendHostPort(attrs[:0], semconv.NetworkPeerAddressKey, semconv.NetworkPeerPortKey, peerHost, peerPort)
		if n := o.RequestSize(); n > 0 {
			attrs = append(attrs, RequestSizeKey.Int(n))
		}
		if r := o.Response(); err == nil && r != nil {
			attrs = append(attrs, ResponseSizeKey.Int(len(r.Raw())))
		}
		if err != nil {
			code, errType := classify(err, false)
			if code != "" {
				attrs = append(attrs, semconv.RPCResponseStatusCodeKey.String(code))
			}
			attrs = append(attrs, semconv.ErrorTypeKey.String(errType))
			span.SetStatus(codes.Error, err.Error())
		}
		span.SetAttributes(attrs...)
	}
	span.End()
	return err
}

// serverHandler is the server middleware: a SERVER span around the
// handler, a child of the span the request's metadata carries.
type serverHandler struct {
	i    *Instrumentation
	next bokbok.Handler
}

func (s *serverHandler) ServeBokbok(ctx context.Context, req *bokbok.Request) (reply any, err error) {
	i := s.i
	method := req.Method()
	if i.filter != nil && !i.filter(method) {
		return s.next.ServeBokbok(ctx, req)
	}
	ctx = i.prop.Extract(ctx, MetadataCarrier(req.Metadata()))

	attrs := make([]attribute.KeyValue, 0, 8)
	attrs = append(attrs, systemAttr)
	if method != "" {
		attrs = append(attrs, semconv.RPCMethodKey.String(method))
	}
	if req.IsNotification() {
		attrs = append(attrs, notifyAttr)
	}
	c := req.Conn()
	if c != nil {
		host, port := splitAddr(c.LocalAddr())
		attrs = appendHostPort(attrs, semconv.ServerAddressKey, semconv.ServerPortKey, host, port)
	}
	opts := append(i.serverStart[:len(i.serverStart):len(i.serverStart)], trace.WithAttributes(attrs...))
	ctx, span := i.tracer.Start(ctx, i.name(method), opts...)
	finished := false
	defer func() {
		if !finished {
			// The handler panicked: bokbok recovers the panic (this lets it
			// go on untouched) and answers with CodePanic.
			if span.IsRecording() {
				span.SetAttributes(semconv.RPCResponseStatusCodeKey.String(bokbok.CodePanic),
					semconv.ErrorTypeKey.String(bokbok.CodePanic))
				span.SetStatus(codes.Error, "handler panicked")
			}
			span.End()
		}
	}()

	reply, err = s.next.ServeBokbok(ctx, req)
	finished = true

	if span.IsRecording() {
		attrs = attrs[:0]
		if c != nil {
			host, port := splitAddr(c.RemoteAddr())
			attrs = appendHostPort(attrs, semconv.NetworkPeerAddressKey, semconv.NetworkPeerPortKey, host, port)
		}
		attrs = append(attrs, RequestSizeKey.Int(len(req.Raw())))
		if err != nil {
			code, errType := classify(err, true)
			if code != "" {
				attrs = append(attrs, semconv.RPCResponseStatusCodeKey.String(code))
			}
			attrs = append(attrs, semconv.ErrorTypeKey.String(errType))
			if code == bokbok.CodeNoMethod && method != "" {
				// The Mux does not know the method: the conventions want
				// it as _OTHER, with the name it was called by beside it.
				attrs = append(attrs, methodOther, semconv.RPCMethodOriginalKey.String(method))
				span.SetName(i.name(""))
			}
			span.SetStatus(codes.Error, err.Error())
		}
		span.SetAttributes(attrs...)
	}
	span.End()
	return reply, err
}

// classify returns the error code that err carries or will be sent with
// (see bokbok.RemoteError), "" if none, and the call's error.type. served
// says err is a handler's, which reaches the peer as a *RemoteError.
func classify(err error, served bool) (code, errType string) {
	var re *bokbok.RemoteError
	switch {
	case errors.As(err, &re):
		if re.Code != "" {
			return re.Code, re.Code
		}
		return "", otherValue
	case errors.Is(err, context.DeadlineExceeded):
		return codeIfServed(bokbok.CodeDeadline, served), bokbok.CodeDeadline
	case errors.Is(err, context.Canceled):
		return codeIfServed(bokbok.CodeCanceled, served), bokbok.CodeCanceled
	case served:
		return "", otherValue // sent without a code
	case errors.Is(err, bokbok.ErrClosed):
		return "", "closed"
	case errors.Is(err, bokbok.ErrShutdown):
		return "", "shutdown"
	case errors.Is(err, bokbok.ErrMessageTooLarge):
		return "", bokbok.CodeTooLarge
	case errors.Is(err, bokbok.ErrBadMetadata):
		return "", "bad_metadata"
	case errors.Is(err, bokbok.ErrNoHeaders):
		return "", "no_headers"
	}
	return "", semconv.ErrorType(err).Value.AsString()
}

// codeIfServed is code for a handler's error, which bokbok sends with
// that code, and "" for a local failure of a call this side made.
func codeIfServed(code string, served bool) string {
	if served {
		return code
	}
	return ""
}

// splitAddr returns the host (an IP address or a socket path) and port
// (0 if none) of a. The host is "" if a names nothing.
func splitAddr(a net.Addr) (host string, port int) {
	switch a := a.(type) {
	case nil:
		return "", 0
	case *net.TCPAddr:
		if a == nil {
			return "", 0
		}
		return a.IP.String(), a.Port
	case *net.UnixAddr:
		if a == nil || a.Name == "@" {
			return "", 0
		}
		return a.Name, 0
	}
	s := a.String()
	h, p, err := net.SplitHostPort(s)
	if err != nil {
		return s, 0
	}
	n, _ := strconv.Atoi(p)
	return h, n
}

// appendHostPort appends host and port as the given attributes, leaving
// out what is unknown.
func appendHostPort(attrs []attribute.KeyValue, hostKey, portKey attribute.Key, host string, port int) []attribute.KeyValue {
	if host == "" {
		return attrs
	}
	attrs = append(attrs, hostKey.String(host))
	if port > 0 {
		attrs = append(attrs, portKey.Int(port))
	}
	return attrs
}

// MetadataCarrier adapts bokbok.Metadata to propagation.TextMapCarrier,
// to inject a trace context into metadata or extract one from it by hand
// (Interceptor and Middleware do it for every call). Set writes into the
// map, so it must not be used on a Request's or Response's metadata,
// which must not be modified.
type MetadataCarrier bokbok.Metadata

// Get returns the value of key, "" if none.
func (c MetadataCarrier) Get(key string) string { return c[key] }

// Set sets key to value.
func (c MetadataCarrier) Set(key, value string) { c[key] = value }

// Keys returns the keys.
func (c MetadataCarrier) Keys() []string {
	keys := make([]string, 0, len(c))
	for k := range c {
		keys = append(keys, k)
	}
	return keys
}

// outgoingCarrier injects into an outgoing call's metadata.
type outgoingCarrier struct{ o *bokbok.Outgoing }

func (c outgoingCarrier) Get(key string) string { return c.o.Metadata()[key] }

func (c outgoingCarrier) Set(key, value string) { c.o.SetMetadata(key, value) }

func (c outgoingCarrier) Keys() []string { return MetadataCarrier(c.o.Metadata()).Keys() }
