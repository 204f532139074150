package bokbok

import (
	"context"
	"errors"
	"fmt"
)

// Typed handlers and calls: a handler registered with Handle takes its
// request as a Go value, decoded strictly, and returns its reply as one;
// Invoke and Method.Call do the same on the calling side. They add no
// allocation to what Request.Decode and Conn.Invoke take.

// Handle registers f on m as the handler for method, taking its request
// as a Req and returning its reply as a Reply.
//
// The message is decoded into a new Req with Request.DecodeStrict, so a
// map key that names no field of a struct in Req is an error. A message
// that does not decode is answered, without calling f, with a
// *RemoteError of code CodeBadRequest (which the caller matches with
// ErrBadRequest) whose message names the method and the field that
// failed, such as
//
//	kv.get: request field "key": cannot decode a msgpack integer into string
//	kv.get: request has unknown field "kye"
//
// Otherwise f's reply is encoded and sent back, or its error sent as with
// any Handler. For a notification sent to method, f runs the same way and
// its reply is discarded. f reads the method, the metadata and the
// connection, and sets reply metadata, through the *Request that
// RequestFromContext(ctx) returns.
//
// Handle panics if f is nil or method already has a handler on m.
func Handle[Req, Reply any](m *Mux, method string, f func(ctx context.Context, req Req) (Reply, error)) {
	if f == nil {
		panic(fmt.Sprintf("bokbok: Handle: nil handler for method %q", method))
	}
	m.Handle(method, &typedHandler[Req, Reply]{method: method, f: f})
}

// HandleNotification registers f on m as the handler for method, for
// notifications (see Conn.NotifyMethod) taking a Req. The message is
// decoded as Handle decodes it; one that does not decode is not given to
// f, and the connection logs the error. A request sent to method is
// served by f too, and answered with nil, or f's error.
//
// HandleNotification panics if f is nil or method already has a handler
// on m.
func HandleNotification[Req any](m *Mux, method string, f func(ctx context.Context, req Req) error) {
	if f == nil {
		panic(fmt.Sprintf("bokbok: HandleNotification: nil handler for method %q", method))
	}
	m.Handle(method, &typedNotifyHandler[Req]{method: method, f: f})
}

// typedHandler serves one method registered with Handle.
type typedHandler[Req, Reply any] struct {
	method string
	f      func(ctx context.Context, req Req) (Reply, error)
}

// typedCall holds one call's request and reply, so that serving it takes
// one allocation for both (the request escapes into the decoder, the
// reply into the encoder).
type typedCall[Req, Reply any] struct {
	in  Req
	out Reply
}

func (h *typedHandler[Req, Reply]) ServeBokbok(ctx context.Context, req *Request) (any, error) {
	p := new(typedCall[Req, Reply])
	if err := req.DecodeStrict(&p.in); err != nil {
		return nil, typedBadRequest(h.method, err)
	}
	var err error
	if p.out, err = h.f(ctx, p.in); err != nil {
		return nil, err
	}
	return &p.out, nil // encoded as the Reply it points to
}

// typedNotifyHandler serves one method registered with
// HandleNotification.
type typedNotifyHandler[Req any] struct {
	method string
	f      func(ctx context.Context, req Req) error
}

func (h *typedNotifyHandler[Req]) ServeBokbok(ctx context.Context, req *Request) (any, error) {
	var in Req
	if err := req.DecodeStrict(&in); err != nil {
		return nil, typedBadRequest(h.method, err)
	}
	return nil, h.f(ctx, in)
}

// typedBadRequest is the answer to a request for method whose message did
// not decode with err.
func typedBadRequest(method string, err error) error {
	prefix := "request"
	if method != "" {
		prefix = method + ": request"
	}
	var (
		de  *DecodeError
		big *MessageTooLargeError
		msg string
	)
	switch {
	case errors.As(err, &de) && de.Field == "":
		msg = fmt.Sprintf("%s: %v", prefix, de.Err)
	case errors.As(err, &de) && de.isUnknownField():
		msg = fmt.Sprintf("%s has unknown field %q", prefix, de.Field)
	case errors.As(err, &de):
		msg = fmt.Sprintf("%s field %q: %v", prefix, de.Field, de.Err)
	case errors.As(err, &big):
		msg = prefix + ": " + big.Error()
	default:
		msg = prefix + ": " + err.Error()
	}
	return &RemoteError{Code: CodeBadRequest, Message: msg}
}

// Invoker sends a request for a method and decodes the reply into out (a
// pointer; nil discards the reply). *Conn is an Invoker; the typed calls
// (Invoke, Method.Call) work through any Invoker.
type Invoker interface {
	Invoke(ctx context.Context, method string, msg, out any) error
}

// Invoke sends req to method through c and returns the reply decoded into
// a Reply. On failure it returns the zero Reply and the error of
// c.Invoke: a *RemoteError for an error reply (matching ErrNoMethod if
// the peer serves no such method, ErrBadRequest if req did not decode
// into the method's request type), or a local error.
func Invoke[Reply any](ctx context.Context, c Invoker, method string, req any) (Reply, error) {
	var out Reply
	if err := c.Invoke(ctx, method, req, &out); err != nil {
		var zero Reply
		return zero, err
	}
	return out, nil
}

// Method is a method name together with its request and reply types, so
// that one declaration serves both sides:
//
//	var KVGet = bokbok.Method[GetRequest, GetReply]("kv.get")
//
//	KVGet.Handle(mux, func(ctx context.Context, req GetRequest) (GetReply, error) { ... }) // the server
//	reply, err := KVGet.Call(ctx, conn, GetRequest{Key: "k"})                             // the client
type Method[Req, Reply any] string

// Call sends req to the method through c and returns the reply; see
// Invoke.
func (m Method[Req, Reply]) Call(ctx context.Context, c Invoker, req Req) (Reply, error) {
	return Invoke[Reply](ctx, c, string(m), req)
}

// Handle registers f on mux as the method's handler; see the function
// Handle. It panics if f is nil or the method already has a handler on
// mux.
func (m Method[Req, Reply]) Handle(mux *Mux, f func(ctx context.Context, req Req) (Reply, error)) {
	Handle(mux, string(m), f)
}
