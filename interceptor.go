package bokbok

import (
	"context"
	"maps"
)

// Outgoing is one request or notification this side is sending, as the
// client interceptors see it (see Config.Interceptors). Before the next
// step runs, an interceptor may read the method and metadata and add
// metadata; once it has returned, the sizes and the reply are known.
type Outgoing struct {
	conn     *Conn
	method   string
	md       Metadata
	mdOwned  bool // md is this Outgoing's own copy
	msg      any
	notify   bool
	reqBytes int
	resp     *Response
}

// Conn returns the connection the call is made on.
func (o *Outgoing) Conn() *Conn { return o.conn }

// Method returns the call's method name, "" if it has none.
func (o *Outgoing) Method() string { return o.method }

// Metadata returns the metadata the call carries. The caller must not
// modify it; use SetMetadata.
func (o *Outgoing) Metadata() Metadata { return o.md }

// SetMetadata adds key with value to the call's metadata (replacing an
// earlier value of key). It affects only this call.
func (o *Outgoing) SetMetadata(key, value string) {
	if !o.mdOwned {
		md := make(Metadata, len(o.md)+1)
		maps.Copy(md, o.md)
		o.md, o.mdOwned = md, true
	}
	o.md[key] = value
}

// Message returns the message being sent, not yet encoded.
func (o *Outgoing) Message() any { return o.msg }

// IsNotification reports whether the call is a notification (Notify),
// which gets no reply.
func (o *Outgoing) IsNotification() bool { return o.notify }

// RequestSize returns the size in bytes of the encoded message body
// (with its header); 0 until the message has been encoded.
func (o *Outgoing) RequestSize() int { return o.reqBytes }

// Response returns the reply to a request that succeeded, once the next
// step has returned; otherwise nil. For a call made with Call or Invoke
// (and the typed calls), which decode the reply and return only the
// decoded value, the Response is valid only until the interceptor
// returns: its buffer may then be reused, unless its Raw was taken.
func (o *Outgoing) Response() *Response { return o.resp }

// CallFunc sends a call: the next step of an interceptor chain.
type CallFunc func(ctx context.Context, o *Outgoing) error

// Interceptor sees every request and notification a connection sends:
// Request, Call, Invoke, Notify and their method forms, typed calls
// included. It is called with the call and the next step, which it calls
// to send the call (it may call it with a derived context, or add
// metadata first) and whose error it returns, perhaps wrapped. Returning
// without calling next refuses the call: the caller gets the error and
// nothing is sent. The time next takes is the call's duration; after it
// returns, o holds the sizes and the reply.
//
// Interceptors run in the caller's goroutine, in the order of
// Config.Interceptors, the first outermost.
type Interceptor func(ctx context.Context, o *Outgoing, next CallFunc) error

// chainInterceptors returns the send path through ics, or nil if there
// are none.
func chainInterceptors(c *Conn, ics []Interceptor) CallFunc {
	if len(ics) == 0 {
		return nil
	}
	next := CallFunc(func(ctx context.Context, o *Outgoing) error {
		if o.notify {
			return c.notify(ctx, o)
		}
		return c.request(ctx, o)
	})
	for i := len(ics) - 1; i >= 0; i-- {
		ic, inner := ics[i], next
		next = func(ctx context.Context, o *Outgoing) error { return ic(ctx, o, inner) }
	}
	return next
}

// Middleware wraps a Handler to serve requests around it: logging,
// authentication from metadata, metrics. It sees the method and metadata
// of every request and notification (Request.Method, Request.Metadata)
// without decoding the message, and may answer without calling the
// handler it wraps.
type Middleware func(Handler) Handler

// Chain composes middleware: Chain(a, b)(h) serves a request with a,
// which calls b, which calls h.
func Chain(mw ...Middleware) Middleware {
	return func(h Handler) Handler {
		for i := len(mw) - 1; i >= 0; i-- {
			h = mw[i](h)
		}
		return h
	}
}
