package bokbok

import (
	"errors"
	"slices"

	"github.com/bokbok-go/bokbok/internal/msgpackcheck"
)

// Error details (PROTOCOL.md, "Message headers", key 2): structured data
// a handler attaches to the *RemoteError it returns, carried in the
// ERROR's message header beside the version 1 body [code, message]. The
// body is unchanged, so a peer without headers still gets the code and
// the message; it is sent no details.

// MaxErrorDetailsSize is the largest msgpack encoding of a RemoteError's
// details, in bytes, that is sent: larger details are left out of the
// ERROR (and logged at Warn on the connection's Logger), which still
// carries the code and the message. It is part of the protocol: a
// received ERROR whose details are larger breaks it and closes the
// connection.
const MaxErrorDetailsSize = 4096

// ErrNoDetails is returned by RemoteError.Details for an error that
// carries no details: none were attached, the peer sent none, or they
// could not travel (a peer that does not read message headers, details
// over MaxErrorDetailsSize).
var ErrNoDetails = errors.New("bokbok: the remote error has no details")

// WithDetails returns a copy of e that carries v as its details: any
// value msgpack can encode (a struct, a map, a string; nil is sent as
// MessagePack nil), encoded at once, so changing v later changes nothing.
// Details already on e are replaced. A handler returns the copy, or an
// error wrapping it, and the caller reads v back with Details:
//
//	return nil, (&bokbok.RemoteError{Code: "kv.not_found", Message: "no key"}).WithDetails(NotFound{Key: key})
//
// If v does not encode (msgpack fails, or gives more than one value or
// one nested more than 256 levels deep), WithDetails returns a copy of e
// without any details, and keeps nothing of the failure. Details whose
// encoding is longer than MaxErrorDetailsSize are kept here but left out
// when the error is sent.
func (e *RemoteError) WithDetails(v any) *RemoteError {
	cp := *e
	cp.details = nil
	if b, ok := encodeDetails(v); ok {
		cp.details = &b
	}
	return &cp
}

// encodeDetails encodes v as one well-formed msgpack value, or reports
// false. A panic in v's own encoding counts as a failure.
func encodeDetails(v any) (b []byte, ok bool) {
	defer func() {
		if recover() != nil {
			b, ok = nil, false
		}
	}()
	b, err := appendEncoded(nil, v)
	if err != nil {
		return nil, false
	}
	if _, err := msgpackcheck.Check(b); err != nil {
		return nil, false
	}
	return b, true
}

// HasDetails reports whether the error carries details: attached with
// WithDetails, or received from the peer.
func (e *RemoteError) HasDetails() bool { return e != nil && e.details != nil }

// Details decodes the error's details into out, which must be a pointer,
// as Request.DecodeStrict decodes a message: a MessagePack map entry
// whose key names no field of the struct it is decoded into is an error,
// and a value that does not decode into out fails with a *DecodeError
// (never a panic). Decode into a map, an interface value or a
// msgpack.RawMessage, or use DetailsRaw, to accept any details. An error
// without details gives ErrNoDetails.
//
// Received details are at most MaxErrorDetailsSize bytes, so decoding them
// takes bounded memory; they were checked as one well-formed msgpack value
// when they arrived.
func (e *RemoteError) Details(out any) error {
	if !e.HasDetails() {
		return ErrNoDetails
	}
	return decodeStrict(*e.details, out, 0)
}

// DetailsRaw returns a copy of the msgpack encoding of the error's
// details, exactly as received (or as WithDetails encoded them), or nil if
// it has none.
func (e *RemoteError) DetailsRaw() []byte {
	if !e.HasDetails() {
		return nil
	}
	return slices.Clone(*e.details)
}

// errorDetails returns the details the ERROR for err carries to the peer:
// those of the *RemoteError err is or wraps (the one that gives the
// ERROR its code), or nil. Details too large to send are left out, and
// logged.
func (c *Conn) errorDetails(err error) []byte {
	var re *RemoteError
	if !c.peer.headers() || !errors.As(err, &re) || re.details == nil {
		return nil
	}
	if d := *re.details; len(d) <= MaxErrorDetailsSize {
		return d
	}
	c.log.Warn("bokbok: error details left out: too large", "remote", c.nc.RemoteAddr(),
		"code", re.Code, "size", len(*re.details), "limit", MaxErrorDetailsSize)
	return nil
}
