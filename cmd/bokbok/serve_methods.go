package main

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/bokbok-go/bokbok"
	"github.com/vmihailenco/msgpack/v5"
)

// The built-in methods of bokbok serve, served through a bokbok.Mux: each
// method is registered by its name, and the route "" takes the older form
// of a request without a method name, {"method": NAME, "params": VALUE},
// and hands VALUE to the same method.

// inspector is the Handler of bokbok serve.
type inspector struct {
	log     *slog.Logger
	realm   string
	secure  bool
	verbose bool
}

// builtin is one method of bokbok serve, given the request and its params
// (nil if there are none).
type builtin func(ctx context.Context, req *bokbok.Request, params msgpack.RawMessage) (any, error)

// builtins returns the methods by name.
func (s *inspector) builtins() map[string]builtin {
	return map[string]builtin{
		"echo": func(ctx context.Context, req *bokbok.Request, params msgpack.RawMessage) (any, error) {
			req.SetReplyMetadata(req.Metadata())
			if len(params) == 0 {
				return nil, nil
			}
			return params, nil
		},
		"ping": func(context.Context, *bokbok.Request, msgpack.RawMessage) (any, error) { return "pong", nil },
		"info": func(ctx context.Context, req *bokbok.Request, params msgpack.RawMessage) (any, error) {
			c := req.Conn()
			return map[string]any{
				"user":   c.User(),
				"remote": remoteName(c.RemoteAddr()),
				"realm":  s.realm,
				"secure": s.secure,
				"time":   time.Now().Format(time.RFC3339Nano),
			}, nil
		},
		"sleep": func(ctx context.Context, req *bokbok.Request, params msgpack.RawMessage) (any, error) {
			return serveSleep(ctx, params, req.Conn().Draining())
		},
		"error": func(ctx context.Context, req *bokbok.Request, params msgpack.RawMessage) (any, error) {
			return nil, remoteErrorFor(params)
		},
		"metadata": func(ctx context.Context, req *bokbok.Request, params msgpack.RawMessage) (any, error) {
			if md := req.Metadata(); md != nil {
				return md, nil
			}
			return bokbok.Metadata{}, nil
		},
	}
}

// handler returns the Mux of the built-in methods behind the logging
// middleware.
func (s *inspector) handler() bokbok.Handler {
	methods := s.builtins()
	names := slices.Sorted(maps.Keys(methods))
	mux := bokbok.NewMux()
	for name, f := range methods {
		mux.HandleFunc(name, func(ctx context.Context, req *bokbok.Request) (any, error) {
			return f(ctx, req, req.Raw()) // a named method's message is its params
		})
	}
	mux.HandleFunc("", func(ctx context.Context, req *bokbok.Request) (any, error) {
		method, params, err := parseServeMessage(req)
		if err != nil {
			return nil, err
		}
		f, ok := methods[method]
		if !ok {
			return nil, &bokbok.RemoteError{Code: bokbok.CodeNoMethod, Message: fmt.Sprintf(
				"no method %q: this server has %s", method, strings.Join(names, ", "))}
		}
		return f(ctx, req, params)
	})
	return s.logging(mux)
}

// logging is bokbok serve's middleware: it logs notifications (and does
// not pass them on: the built-in methods serve requests only) and, with
// --verbose, every request and its outcome.
func (s *inspector) logging(next bokbok.Handler) bokbok.Handler {
	return bokbok.HandlerFunc(func(ctx context.Context, req *bokbok.Request) (any, error) {
		c := req.Conn()
		attrs := func(more ...any) []any {
			if m := req.Method(); m != "" {
				more = append([]any{"method", m}, more...)
			}
			if md := req.Metadata(); len(md) > 0 {
				more = append(more, "metadata", metadataSummary(md))
			}
			return connAttrs(c, more...)
		}
		if req.IsNotification() {
			s.log.Info("notification", attrs("message", messageSummary(req))...)
			return nil, nil
		}
		if !s.verbose {
			return next.ServeBokbok(ctx, req)
		}
		s.log.Info("request", attrs("message", messageSummary(req))...)
		start := time.Now()
		reply, err := next.ServeBokbok(ctx, req)
		outcome := "ok"
		if err != nil {
			outcome = trimBokbok(err)
		}
		s.log.Info("replied", attrs("took", time.Since(start).Round(time.Microsecond), "outcome", outcome)...)
		return reply, err
	})
}

// metadataSummary renders metadata for the log, keys sorted; binary
// values are quoted.
func metadataSummary(md bokbok.Metadata) string {
	var b strings.Builder
	for i, k := range slices.Sorted(maps.Keys(md)) {
		if i > 0 {
			b.WriteByte(' ')
		}
		fmt.Fprintf(&b, "%s=%q", k, md[k])
	}
	return b.String()
}
