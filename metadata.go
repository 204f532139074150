package bokbok

import (
	"context"
	"errors"
	"maps"
)

// Metadata is a small set of key-value pairs that travels with a request,
// a notification or a reply, beside its message: a W3C traceparent, an
// auth token, a tenant id. Keys are 1 to 255 bytes; values are any bytes
// (a value that is valid UTF-8 travels as a MessagePack string, any other
// as binary, and both arrive as a Go string). A message carries at most 64
// entries, in a header of at most 16 KiB with its method name; see
// PROTOCOL.md, "Message headers".
//
// Metadata reaches the peer's handlers and middleware without its message
// being decoded. Keys are compared exactly; lower-case names are the
// convention.
type Metadata map[string]string

// ErrBadMetadata reports a method name or metadata outside the protocol's
// bounds: a call refused before sending, or a message received with a
// header that breaks the rules (the peer's request is then answered with
// a *RemoteError of code CodeBadRequest).
var ErrBadMetadata = errors.New("bokbok: bad method name or metadata")

// ErrNoHeaders reports a call with a method name made to a peer that does
// not read method names (a peer of an earlier version of the protocol).
// The call was never sent. Metadata alone is not an error: it is left out
// for such a peer.
var ErrNoHeaders = errors.New("bokbok: the peer does not support method names")

// metadataKey is the context key of outgoing metadata.
type metadataKey struct{}

// WithMetadata returns a context whose requests and notifications carry
// md, added to (and overriding, key by key) the metadata ctx already
// carries. md is copied: changing it later changes nothing.
func WithMetadata(ctx context.Context, md Metadata) context.Context {
	merged := make(Metadata, len(md))
	if prev, _ := ctx.Value(metadataKey{}).(Metadata); prev != nil {
		maps.Copy(merged, prev)
	}
	maps.Copy(merged, md)
	return context.WithValue(ctx, metadataKey{}, merged)
}

// OutgoingMetadata returns the metadata that calls made with ctx carry
// (see WithMetadata), or nil. The caller must not modify it.
func OutgoingMetadata(ctx context.Context) Metadata {
	md, _ := ctx.Value(metadataKey{}).(Metadata)
	return md
}

// requestKey is the context key under which a handler's context holds the
// request it serves.
type requestKey struct{}

// RequestFromContext returns the request or notification being served,
// given the context a Handler was called with (or one derived from it),
// or nil. Typed handlers use it to read the method and metadata, and to
// set reply metadata.
func RequestFromContext(ctx context.Context) *Request {
	r, _ := ctx.Value(requestKey{}).(*Request)
	return r
}

// handlerCtx is a request handler's context: the request's cancellable
// context, answering requestKey with the request itself. It lives in the
// inbound message, so serving a request costs no context allocation for
// it.
type handlerCtx struct {
	context.Context
	req *Request
}

func (h *handlerCtx) Value(key any) any {
	if key == (requestKey{}) {
		return h.req
	}
	return h.Context.Value(key)
}
