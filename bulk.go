package bokbok

import (
	"io"

	"github.com/vmihailenco/msgpack/v5"
)

// Bulk is a byte string for large binary fields. It is encoded exactly as a
// []byte (a MessagePack bin), so it can replace a []byte field without
// changing what is sent or what a peer must send. What changes is decoding:
// a Bulk decoded from a received message refers to the message's own
// buffer instead of being allocated, zeroed and copied, which saves a copy
// of every byte of a large payload.
//
// Lifetime: in a request decoded by a handler, a Bulk is valid until the
// handler returns (a handler that keeps the bytes longer must copy them,
// for example with bytes.Clone): the buffer may then be reused for a later
// message. It may be returned in the handler's reply, which is encoded
// before the buffer is let go. In an answer decoded by Call, Invoke or
// Response.Decode, the buffer belongs to the caller: the bytes stay valid
// as long as they are referenced (a reply decoded into a Bulk is never
// reused). A Bulk shares its
// buffer with the rest of the message, so keeping a small Bulk keeps the
// whole message's buffer in memory. Modifying a received Bulk in place is
// allowed within its lifetime; appending to it copies.
//
// Decoded outside this package's connections (by msgpack.Unmarshal, say),
// a Bulk is copied like a []byte.
type Bulk []byte

// DecodeMsgpack implements msgpack.CustomDecoder.
func (b *Bulk) DecodeMsgpack(d *msgpack.Decoder) error {
	n, err := d.DecodeBytesLen()
	if err != nil {
		return err
	}
	if n < 0 { // nil
		*b = nil
		return nil
	}
	if src, ok := d.Buffered().(interface {
		Next(n int) ([]byte, bool)
	}); ok {
		p, ok := src.Next(n)
		if !ok {
			return io.ErrUnexpectedEOF
		}
		*b = p
		return nil
	}
	// A length read from bytes nobody checked: grow with what is really
	// there rather than trust it.
	p, err := io.ReadAll(io.LimitReader(d.Buffered(), int64(n)))
	if err != nil {
		return err
	}
	if len(p) < n {
		return io.ErrUnexpectedEOF
	}
	*b = p
	return nil
}
