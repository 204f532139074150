package bokbok

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"sync/atomic"
)

// Handler serves the requests and notifications a peer sends. It is called
// on its own goroutine for each request, so one slow request never delays
// others; notifications are delivered one at a time, in the order they
// were sent, on one goroutine per connection.
//
// For a request, the result is encoded with msgpack and sent back; a
// returned error (or a panic, which is recovered and logged) is sent as a
// *RemoteError. ctx is cancelled when the caller cancels or its deadline
// passes (the caller's deadline is ctx's), or the connection closes.
//
// For a notification (req.IsNotification()), the result is discarded and
// an error is only logged. A notification handler should return promptly:
// the next notification waits for it, and when the window fills the
// peer's Notify waits too.
type Handler interface {
	ServeBokbok(ctx context.Context, req *Request) (any, error)
}

// HandlerFunc adapts a function to the Handler interface.
type HandlerFunc func(ctx context.Context, req *Request) (any, error)

// ServeBokbok calls f(ctx, req).
func (f HandlerFunc) ServeBokbok(ctx context.Context, req *Request) (any, error) {
	return f(ctx, req)
}

// Request is a request or notification received from the peer.
//
// A Request belongs to its handler's run: it must not be used after the
// handler returns. Once the handler has returned and its reply is encoded,
// the buffer the message arrived in may be reused for a later message, so
// anything decoded from it without a copy (a Bulk, or slices a generated
// decoder keeps, such as msgp's zero-copy fields) is valid only until
// then; the bytes Raw returns are the exception and stay valid (taking
// them keeps the buffer from being reused).
type Request struct {
	conn    *Conn
	raw     []byte
	method  string
	md      Metadata
	replyMD Metadata // set by the handler, sent with the reply

	notify   bool
	rawTaken atomic.Bool // Raw was called: the message's buffer is not given back to the pool
}

// Method returns the method name the peer sent the message with (see
// Conn.RequestMethod), or "" if it named none.
func (r *Request) Method() string { return r.method }

// Metadata returns the metadata the peer sent with the message (see
// WithMetadata), or nil. The handler must not modify it.
func (r *Request) Metadata() Metadata { return r.md }

// SetReplyMetadata attaches md to the reply (a result or an error) the
// handler is about to return, replacing metadata set before. It has no
// effect for a notification, or for a peer that does not read metadata.
// Reply metadata outside the protocol's bounds (see Metadata) turns a
// result into a *RemoteError, with no code, naming the problem; with an
// error it is left out, so the error still reaches the caller. It must be
// called
// before the handler returns, from the handler's goroutine or one it
// waits for.
func (r *Request) SetReplyMetadata(md Metadata) { r.replyMD = md }

// Conn returns the connection the request arrived on; a handler may use it
// to call back into the peer.
func (r *Request) Conn() *Conn { return r.conn }

// Decode decodes the message into out, which must be a pointer; see
// Response.Decode.
//
// A message whose decoding is estimated to take more than the connection's
// Config.MaxReceiveBytes fails with a *MessageTooLargeError.
func (r *Request) Decode(out any) error {
	var limit int64
	if r.conn != nil {
		limit = int64(r.conn.cfg.MaxReceiveBytes)
	}
	return decodeValue(r.raw, out, limit)
}

// Raw returns the message's msgpack encoding. The handler must not modify
// it; it stays valid after the handler returns. It is exactly one well-formed msgpack value, nested at most 256
// levels deep, in which every declared length and count fits in the bytes
// that remain: messages that are not are refused before a handler sees
// them (see PROTOCOL.md, "Message bodies").
func (r *Request) Raw() []byte {
	r.rawTaken.Store(true)
	return r.raw
}

// IsNotification reports whether the peer sent the message with Notify and
// expects no reply.
func (r *Request) IsNotification() bool { return r.notify }

// handlerKey marks contexts given to handlers, so requests made with them
// are sent as nested.
type handlerKey struct{}

// invoke runs the handler, turning a panic into a *RemoteError.
func (c *Conn) invoke(ctx context.Context, req *Request) (reply any, err error) {
	defer func() {
		if p := recover(); p != nil {
			c.log.Error("bokbok: handler panicked", "remote", c.nc.RemoteAddr(), "panic", p, "stack", string(debug.Stack()))
			reply, err = nil, &RemoteError{Code: CodePanic, Message: fmt.Sprintf("handler panicked: %v", p)}
		}
	}()
	if c.cfg.Handler == nil {
		return nil, &RemoteError{Code: CodeNoHandler, Message: "this side serves no requests"}
	}
	return c.cfg.Handler.ServeBokbok(ctx, req)
}

// answer builds the RESPONSE or ERROR for a handler's result, with md
// (the handler's reply metadata) in its header for a peer that reads
// headers, and for an ERROR the error's details too (see errorDetails),
// unless they would make it exceed the peer's message limit.
func (c *Conn) answer(id uint32, reply any, err error, md Metadata) *outMsg {
	if !c.peer.headers() {
		md = nil
	}
	if err == nil {
		data, owner, flags, encErr := encodeMessage(false, 0, "", md, reply)
		switch {
		case errors.Is(encErr, ErrBadMetadata):
			err, md = &RemoteError{Message: "the reply's metadata: " + encErr.Error()}, nil
		case len(data)-bodyLenSize > int(c.peer.MaxMessageSize):
			owner.done()
			err = &RemoteError{Code: CodeTooLarge, Message: (&MessageTooLargeError{
				Size: len(data) - bodyLenSize, Limit: int(c.peer.MaxMessageSize)}).Error()}
		case encErr != nil:
			err = &RemoteError{Message: "encoding the reply: " + encErr.Error()}
		default:
			return &outMsg{kind: kindResponse, flags: flags, id: id, data: data, owner: owner}
		}
	}
	if details := c.errorDetails(err); details != nil {
		out := errorMsgDetails(id, err, md, details)
		if len(out.data)-bodyLenSize <= int(c.peer.MaxMessageSize) {
			return out
		}
		c.log.Warn("bokbok: error details left out: the ERROR would exceed the peer's message limit", "remote", c.nc.RemoteAddr(),
			"size", len(out.data)-bodyLenSize, "limit", c.peer.MaxMessageSize)
	}
	return errorMsgWith(id, err, md)
}

// errorMsg builds an ERROR message carrying err.
func errorMsg(id uint32, err error) *outMsg { return errorMsgWith(id, err, nil) }

// errorMsgWith builds an ERROR message carrying err, with md in its header
// if md is not empty (and within bounds: metadata outside them is left
// out, so the error still reaches the caller).
func errorMsgWith(id uint32, err error, md Metadata) *outMsg {
	return errorMsgDetails(id, err, md, nil)
}

// errorMsgDetails is errorMsgWith with details (if not nil) in the header
// too. Metadata that does not fit in the header beside the details is
// left out, as metadata out of bounds is.
func errorMsgDetails(id uint32, err error, md Metadata, details []byte) *outMsg {
	code, message := errorCode(err)
	if len(md) > 0 || details != nil {
		b, hdrErr := appendHeaderDetails(newBody(), "", md, details)
		if hdrErr != nil && len(md) > 0 && details != nil {
			b, hdrErr = appendHeaderDetails(newBody(), "", nil, details)
		}
		if hdrErr == nil {
			return &outMsg{kind: kindError, flags: flagHeader, id: id, data: appendErrorBody(b, code, message)}
		}
	}
	return &outMsg{kind: kindError, id: id, data: encodeErrorBody(code, message)}
}
