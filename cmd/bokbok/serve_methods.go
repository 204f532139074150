package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/bokbok-go/bokbok"
	"github.com/vmihailenco/msgpack/v5"
)

// The built-in methods of bokbok serve are served through a bokbok.Mux:
// each is registered by its name, as a typed handler (bokbok.Handle), and
// the route "" takes the older form of a request without a method name,
// {"method": NAME, "params": VALUE}, and hands VALUE to the same method's
// implementation. Each method has one implementation, a function of its
// params; builtin makes both of its routes from it.

// maxSleep bounds the sleep method.
const maxSleep = 24 * time.Hour

// inspector is the Handler of bokbok serve.
type inspector struct {
	log    *slog.Logger
	realm  string
	secure bool

	mux     *bokbok.Mux
	methods map[string]builtin // by name, for the body form
	names   []string           // the method names, in the order of the help
}

// builtin is one method of bokbok serve.
type builtin struct {
	name string
	// register registers the method on a Mux, under its name; there the
	// request's message is the method's params.
	register func(*bokbok.Mux)
	// body serves the method for a request in the body form, whose
	// params (nil if it has none) are the "params" of its message.
	body func(ctx context.Context, req *bokbok.Request, params msgpack.RawMessage) (any, error)
}

// newInspector builds bokbok serve's Mux.
func newInspector(log *slog.Logger, realm string, secure bool) *inspector {
	s := &inspector{log: log, realm: realm, secure: secure, mux: bokbok.NewMux(), methods: map[string]builtin{}}
	for _, b := range []builtin{
		typedBuiltin("echo", serveEcho),
		typedBuiltin("ping", func(context.Context, noParams) (string, error) { return "pong", nil }),
		typedBuiltin("info", s.serveInfo),
		typedBuiltin("metadata", serveMetadata),
		typedBuiltin("sleep", serveSleep),
		withStringForm(typedBuiltin("error", serveError), func(ctx context.Context, msg string) (any, error) {
			if msg == "" {
				return serveError(ctx, errorParams{})
			}
			return serveError(ctx, errorParams{Message: &msg})
		}),
	} {
		b.register(s.mux)
		s.methods[b.name] = b
		s.names = append(s.names, b.name)
	}
	s.mux.HandleFunc("", s.serveBody)
	return s
}

// handler returns the Handler of bokbok serve: the Mux behind the logging
// middleware.
func (s *inspector) handler() bokbok.Handler {
	return bokbok.Chain(s.logging)(bokbok.HandlerFunc(s.route))
}

// route serves a request with the Mux. Notifications are only logged (by
// the middleware): the built-in methods serve requests.
func (s *inspector) route(ctx context.Context, req *bokbok.Request) (any, error) {
	if req.IsNotification() {
		return nil, nil
	}
	reply, err := s.mux.ServeBokbok(ctx, req)
	if err != nil && req.Method() != "" && errors.Is(err, bokbok.ErrNoMethod) {
		err = s.noMethod(req.Method()) // the same code, with the list of methods
	}
	return reply, err
}

// noMethod is the answer to a request for a method this server lacks.
func (s *inspector) noMethod(name string) error {
	return bokbok.Errorf(bokbok.CodeNoMethod, "no method %q: this server has %s", name, strings.Join(s.names, ", "))
}

// serveBody serves the route "": a request in the body form.
func (s *inspector) serveBody(ctx context.Context, req *bokbok.Request) (any, error) {
	name, params, err := parseServeMessage(req)
	if err != nil {
		return nil, err
	}
	if note, _ := ctx.Value(bodyMethodKey{}).(*string); note != nil {
		*note = name // for the log
	}
	b, ok := s.methods[name]
	if !ok {
		return nil, s.noMethod(name)
	}
	return b.body(ctx, req, params)
}

// parseServeMessage splits a request in the body form into its method and
// its params (nil if absent).
func parseServeMessage(req *bokbok.Request) (string, msgpack.RawMessage, error) {
	const shape = `send {"method": NAME, "params": VALUE} or "NAME", or name the method (bokbok call --method NAME)`
	var m map[string]msgpack.RawMessage
	if err := req.Decode(&m); err != nil {
		var name string
		if req.Decode(&name) == nil {
			return name, nil, nil
		}
		return "", nil, bokbok.Errorf(bokbok.CodeBadRequest, "the message is not a map with string keys: %s", shape)
	}
	rawMethod, ok := m["method"]
	if !ok {
		return "", nil, bokbok.Errorf(bokbok.CodeBadRequest, "the message has no \"method\": %s", shape)
	}
	var method string
	if err := msgpack.Unmarshal(rawMethod, &method); err != nil {
		return "", nil, bokbok.Errorf(bokbok.CodeBadRequest, "\"method\" is not a string: %s", shape)
	}
	for k := range m {
		if k != "method" && k != "params" {
			return "", nil, bokbok.Errorf(bokbok.CodeBadRequest, "unknown key %q in the message: %s", k, shape)
		}
	}
	return method, m["params"], nil
}

// typedBuiltin makes a method of f: by name, a typed handler
// (bokbok.Handle, which decodes the message strictly into a P); in the
// body form, the params decoded just as strictly into a P, and a missing
// params taken as P's zero value.
func typedBuiltin[P, R any](name string, f func(ctx context.Context, params P) (R, error)) builtin {
	return builtin{
		name:     name,
		register: func(m *bokbok.Mux) { bokbok.Handle(m, name, f) },
		body: func(ctx context.Context, req *bokbok.Request, params msgpack.RawMessage) (any, error) {
			var p P
			if len(params) > 0 {
				if err := decodeBodyParams(req, params, &p); err != nil {
					return nil, bodyBadRequest(name, err)
				}
			}
			return f(ctx, p)
		},
	}
}

// decodeBodyParams decodes the params of req, a request in the body form
// whose params are params, strictly into p.
func decodeBodyParams[P any](req *bokbok.Request, params msgpack.RawMessage, p *P) error {
	switch p := any(p).(type) {
	case *msgpack.RawMessage: // any value: no need to decode it again
		*p = params
		return nil
	case *noParams:
		return nil
	}
	// The whole message, so that bokbok's strict decoding names the field
	// at fault ("params.code").
	var env struct {
		Method string `msgpack:"method"`
		Params P      `msgpack:"params"`
	}
	if err := req.DecodeStrict(&env); err != nil {
		return err
	}
	*p = env.Params
	return nil
}

// bodyBadRequest is the answer to a request in the body form whose params
// did not decode, worded as bokbok's typed handlers word theirs.
func bodyBadRequest(method string, err error) error {
	prefix := method + ": request"
	var de *bokbok.DecodeError
	var msg string
	switch {
	case errors.As(err, &de) && de.Field == "":
		msg = fmt.Sprintf("%s: %v", prefix, de.Err)
	case errors.As(err, &de) && de.Err.Error() == "unknown field":
		msg = fmt.Sprintf("%s has unknown field %q", prefix, de.Field)
	case errors.As(err, &de):
		msg = fmt.Sprintf("%s field %q: %v", prefix, de.Field, de.Err)
	default:
		msg = prefix + ": " + trimBokbok(err)
	}
	return &bokbok.RemoteError{Code: bokbok.CodeBadRequest, Message: msg}
}

// withStringForm makes b take a bare string too, in both forms, which it
// serves with f rather than decoding it into b's params.
func withStringForm(b builtin, f func(ctx context.Context, s string) (any, error)) builtin {
	register, body := b.register, b.body
	b.register = func(m *bokbok.Mux) {
		typed := bokbok.NewMux()
		register(typed)
		m.HandleFunc(b.name, func(ctx context.Context, req *bokbok.Request) (any, error) {
			var s string
			if isMsgpackString(req.Raw()) && req.Decode(&s) == nil {
				return f(ctx, s)
			}
			return typed.ServeBokbok(ctx, req)
		})
	}
	b.body = func(ctx context.Context, req *bokbok.Request, params msgpack.RawMessage) (any, error) {
		var s string
		if isMsgpackString(params) && msgpack.Unmarshal(params, &s) == nil {
			return f(ctx, s)
		}
		return body(ctx, req, params)
	}
	return b
}

// isMsgpackString reports whether raw is a msgpack string.
func isMsgpackString(raw []byte) bool {
	return len(raw) > 0 && (raw[0]&0xe0 == 0xa0 || raw[0] >= 0xd9 && raw[0] <= 0xdb)
}

// noParams is the params of a method that takes none: it takes any value
// and ignores it.
type noParams struct{}

func (*noParams) DecodeMsgpack(d *msgpack.Decoder) error { return d.Skip() }

// serveEcho replies with its params, unchanged, and with the request's
// metadata as the reply's.
func serveEcho(ctx context.Context, v msgpack.RawMessage) (any, error) {
	if req := bokbok.RequestFromContext(ctx); req != nil && len(req.Metadata()) > 0 {
		req.SetReplyMetadata(req.Metadata())
	}
	if len(v) == 0 {
		return nil, nil
	}
	return v, nil
}

// serveMetadata replies with the request's metadata.
func serveMetadata(ctx context.Context, _ noParams) (bokbok.Metadata, error) {
	if req := bokbok.RequestFromContext(ctx); req != nil && req.Metadata() != nil {
		return req.Metadata(), nil
	}
	return bokbok.Metadata{}, nil
}

// serveInfo replies with what the server knows of the connection.
func (s *inspector) serveInfo(ctx context.Context, _ noParams) (map[string]any, error) {
	c := bokbok.RequestFromContext(ctx).Conn()
	return map[string]any{
		"user":   c.User(),
		"remote": remoteName(c.RemoteAddr()),
		"realm":  s.realm,
		"secure": s.secure,
		"time":   time.Now().Format(time.RFC3339Nano),
	}, nil
}

// serveSleep sleeps as asked, but not past the start of a graceful
// shutdown, so that it never holds a drain until its deadline.
func serveSleep(ctx context.Context, ms *float64) (map[string]any, error) {
	if ms == nil {
		return nil, bokbok.Errorf(bokbok.CodeBadRequest, `sleep: want the milliseconds to sleep as params, e.g. --method sleep 500, or {"method": "sleep", "params": 500}`)
	}
	if math.IsNaN(*ms) || *ms < 0 || *ms > float64(maxSleep/time.Millisecond) {
		return nil, bokbok.Errorf(bokbok.CodeBadRequest, "sleep: %v ms is out of range 0 to %d (%v)", *ms, maxSleep/time.Millisecond, maxSleep)
	}
	var draining <-chan struct{}
	if req := bokbok.RequestFromContext(ctx); req != nil {
		draining = req.Conn().Draining()
	}
	start := time.Now()
	t := time.NewTimer(time.Duration(*ms * float64(time.Millisecond)))
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
		return nil, ctx.Err() // sent as bokbok.canceled or bokbok.deadline_exceeded
	case <-draining:
		slept := time.Since(start).Milliseconds()
		return map[string]any{"slept_ms": slept, "cut_short": "the server is shutting down"}, nil
	}
	var slept any = *ms
	if *ms == math.Trunc(*ms) {
		slept = int64(*ms)
	}
	return map[string]any{"slept_ms": slept}, nil
}

// errorParams is the params of the error method (which takes a bare
// message string too).
type errorParams struct {
	Code    *string `msgpack:"code"`
	Message *string `msgpack:"message"`
}

// serveError fails as asked.
func serveError(_ context.Context, p errorParams) (any, error) {
	e := &bokbok.RemoteError{Code: "example", Message: "an error, as requested"}
	if p.Code != nil {
		e.Code = *p.Code
	}
	if p.Message != nil {
		e.Message = *p.Message
	}
	return nil, e
}

// bodyMethodKey is the context key under which the logging middleware
// leaves a *string for the route "" to fill with the method it serves.
type bodyMethodKey struct{}

// logging is bokbok serve's middleware. It logs notifications (at info),
// and requests: when one arrives (at debug, with its message), and when
// it is answered, with its method, user, duration and outcome, at debug
// if it succeeded and at info if it failed. --verbose shows debug.
// Metadata values are not logged (they may be tokens), only their keys.
func (s *inspector) logging(next bokbok.Handler) bokbok.Handler {
	return bokbok.HandlerFunc(func(ctx context.Context, req *bokbok.Request) (any, error) {
		c := req.Conn()
		if req.IsNotification() {
			s.log.Info("notification", connAttrs(c, s.callAttrs(req, "", "message", messageSummary(req))...)...)
			return next.ServeBokbok(ctx, req)
		}
		if s.log.Enabled(ctx, slog.LevelDebug) {
			s.log.Debug("request", connAttrs(c, s.callAttrs(req, "", "message", messageSummary(req))...)...)
		}
		var bodyMethod *string
		if req.Method() == "" {
			bodyMethod = new(string)
			ctx = context.WithValue(ctx, bodyMethodKey{}, bodyMethod)
		}
		start := time.Now()
		reply, err := next.ServeBokbok(ctx, req)
		took := time.Since(start)
		level, outcome := slog.LevelDebug, []any{"outcome", "ok"}
		if err != nil {
			code, message := errorCodeOf(err)
			level, outcome = slog.LevelInfo, []any{"outcome", "error", "code", code, "err", message}
		}
		if s.log.Enabled(ctx, level) {
			name := req.Method()
			if bodyMethod != nil {
				name = *bodyMethod
			}
			s.log.Log(ctx, level, "replied", connAttrs(c, s.callAttrs(req, name, append([]any{"took", took.Round(time.Microsecond)}, outcome...)...)...)...)
		}
		return reply, err
	})
}

// callAttrs returns the log attributes of a call: its method (name if not
// "", else the request's), its form, its metadata keys, then more.
func (s *inspector) callAttrs(req *bokbok.Request, name string, more ...any) []any {
	var attrs []any
	if name == "" {
		name = req.Method()
	}
	if name != "" {
		attrs = append(attrs, "method", name)
	}
	if req.Method() == "" && !req.IsNotification() {
		attrs = append(attrs, "form", "body")
	}
	if md := req.Metadata(); len(md) > 0 {
		attrs = append(attrs, "metadata_keys", strings.Join(slices.Sorted(maps.Keys(md)), ","))
	}
	return append(attrs, more...)
}

// errorCodeOf is the code and message a handler's error is sent with.
func errorCodeOf(err error) (code, message string) {
	var re *bokbok.RemoteError
	switch {
	case errors.As(err, &re):
		return re.Code, re.Message
	case errors.Is(err, context.DeadlineExceeded):
		return bokbok.CodeDeadline, err.Error()
	case errors.Is(err, context.Canceled):
		return bokbok.CodeCanceled, err.Error()
	}
	return "", trimBokbok(err)
}
