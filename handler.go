package bokbok

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
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
type Request struct {
	conn   *Conn
	raw    []byte
	notify bool
}

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
// it. It is exactly one well-formed msgpack value, nested at most 256
// levels deep, in which every declared length and count fits in the bytes
// that remain: messages that are not are refused before a handler sees
// them (see PROTOCOL.md, "Message bodies").
func (r *Request) Raw() []byte { return r.raw }

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

// answer builds the RESPONSE or ERROR for a handler's result.
func (c *Conn) answer(id uint32, reply any, err error) *outMsg {
	if err == nil {
		data, owner, encErr := encodeOwned(false, 0, reply)
		switch {
		case encErr != nil:
			err = &RemoteError{Message: "encoding the reply: " + encErr.Error()}
		case len(data)-bodyLenSize > int(c.peer.MaxMessageSize):
			owner.done()
			err = &RemoteError{Code: CodeTooLarge, Message: (&MessageTooLargeError{
				Size: len(data) - bodyLenSize, Limit: int(c.peer.MaxMessageSize)}).Error()}
		default:
			return &outMsg{kind: kindResponse, id: id, data: data, owner: owner}
		}
	}
	return errorMsg(id, err)
}

// errorMsg builds an ERROR message carrying err.
func errorMsg(id uint32, err error) *outMsg {
	code, message := "", err.Error()
	if re, ok := err.(*RemoteError); ok {
		message = re.Message
	}
	var re *RemoteError
	switch {
	case errors.As(err, &re):
		code = re.Code // a wrapped remote error keeps its code
	case errors.Is(err, context.DeadlineExceeded):
		code = CodeDeadline
	case errors.Is(err, context.Canceled):
		code = CodeCanceled
	}
	return &outMsg{kind: kindError, id: id, data: encodeErrorBody(code, message)}
}
