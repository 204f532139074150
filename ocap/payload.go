package ocap

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"reflect"
	"sync"

	"github.com/bokbok-go/bokbok/internal/msgpackcheck"
	"github.com/vmihailenco/msgpack/v5"
	"github.com/vmihailenco/msgpack/v5/msgpcode"
)

// refExtID is the msgpack extension type of a reference inside a value. Its
// payload is a 4-byte big-endian index into the message's list of
// references (PROTOCOL.md §19.3).
const refExtID int8 = 98

// payload is an encoded value (a method's arguments or a result) and the
// references it carries, in the order of their indexes. Its data never
// changes once made, so one payload can be decoded any number of times.
type payload struct {
	data []byte
	refs []Ref
}

// The encoder or decoder at work on a payload finds its reference list
// here: msgpack gives a type's codec the *Encoder or *Decoder and nothing
// else. An entry lives only while encodePayload or decode runs.
var (
	encoding sync.Map // *msgpack.Encoder -> *[]Ref
	decoding sync.Map // *msgpack.Decoder -> []Ref
)

// errRefOutside is the error of encoding a Ref with plain msgpack.
var errRefOutside = errors.New("ocap: a reference can travel only in a capability message (Send, SendOnly or a result)")

func init() {
	msgpack.RegisterExtDecoder(refExtID, Ref{}, decodeRefExt) // into any
	// Into Ref values (fields, elements, arguments): msgpack's extension
	// decoder panics on nil for a non-pointer type, and the zero Ref
	// travels as nil.
	msgpack.Register(Ref{}, nil, decodeRefValue)
}

// decodeRefValue decodes nil (the zero Ref) or a reference extension into
// v, a Ref.
func decodeRefValue(dec *msgpack.Decoder, v reflect.Value) error {
	c, err := dec.PeekCode()
	if err != nil {
		return err
	}
	if c == msgpcode.Nil {
		v.Set(reflect.Zero(v.Type()))
		return dec.DecodeNil()
	}
	id, n, err := dec.DecodeExtHeader()
	if err != nil {
		return fmt.Errorf("ocap: decoding a reference: %w", err)
	}
	if id != refExtID {
		return fmt.Errorf("ocap: decoding a reference: extension type %d, want %d", id, refExtID)
	}
	return decodeRefExt(dec, v, n)
}

// encodePayload encodes v, collecting the references in it.
func encodePayload(v any) (payload, error) {
	var buf bytes.Buffer
	enc := msgpack.NewEncoder(&buf)
	enc.UseCompactInts(true)
	var refs []Ref
	encoding.Store(enc, &refs)
	err := enc.Encode(v)
	encoding.Delete(enc)
	if err != nil {
		return payload{}, err
	}
	// Raw msgpack in v may hold extension 98 that no Ref made: sent on,
	// it would break the protocol.
	if err := checkRefs(buf.Bytes(), len(refs)); err != nil {
		return payload{}, err
	}
	return payload{data: buf.Bytes(), refs: refs}, nil
}

// encodeRef writes r as a reference extension, or nil for the zero Ref.
func encodeRef(enc *msgpack.Encoder, r Ref) error {
	if r.t == nil {
		return enc.EncodeNil()
	}
	v, ok := encoding.Load(enc)
	if !ok {
		return errRefOutside
	}
	refs := v.(*[]Ref)
	var idx [4]byte
	binary.BigEndian.PutUint32(idx[:], uint32(len(*refs)))
	*refs = append(*refs, r)
	if err := enc.EncodeExtHeader(refExtID, len(idx)); err != nil {
		return err
	}
	_, err := enc.Writer().Write(idx[:])
	return err
}

// decodeRefExt reads a reference extension's payload into v (a Ref).
func decodeRefExt(dec *msgpack.Decoder, v reflect.Value, extLen int) error {
	if extLen != 4 {
		return fmt.Errorf("ocap: reference extension of %d bytes, want 4", extLen)
	}
	var idx [4]byte
	if err := dec.ReadFull(idx[:]); err != nil {
		return err
	}
	s, ok := decoding.Load(dec)
	if !ok {
		return errors.New("ocap: a reference can be decoded only from a capability message")
	}
	refs := s.([]Ref)
	i := binary.BigEndian.Uint32(idx[:])
	if uint64(i) >= uint64(len(refs)) {
		return fmt.Errorf("ocap: reference index %d, but the message carries %d references", i, len(refs))
	}
	v.Set(reflect.ValueOf(refs[i]))
	return nil
}

// checkRefs checks every reference in b, one msgpack value, against a
// message that carries n references (PROTOCOL.md §19.3): each extension of
// type 98 must be a fixext 4 whose index is below n. Extension payloads
// are not looked into. It neither recurses nor allocates.
func checkRefs(b []byte, n int) error {
	pos := 0
	// items counts the values still to read; each takes at least a byte,
	// so it never exceeds len(b).
	for items := uint64(1); items > 0; items-- {
		if pos >= len(b) {
			return errors.New("ocap: value truncated")
		}
		c := b[pos]
		pos++
		var skip, more uint64 // bytes of the item after c; values it contains
		// length reads a big-endian length of w bytes at pos.
		length := func(w int) (uint64, bool) {
			if len(b)-pos < w {
				return 0, false
			}
			var l uint64
			for _, x := range b[pos : pos+w] {
				l = l<<8 | uint64(x)
			}
			return l, true
		}
		ok := true
		switch {
		case c <= 0x7f || c >= 0xe0: // fixint
		case c <= 0x8f: // fixmap
			more = 2 * uint64(c&0x0f)
		case c <= 0x9f: // fixarray
			more = uint64(c & 0x0f)
		case c <= 0xbf: // fixstr
			skip = uint64(c & 0x1f)
		default:
			switch c {
			case 0xc0, 0xc2, 0xc3: // nil, false, true
			case 0xcc, 0xd0:
				skip = 1
			case 0xcd, 0xd1:
				skip = 2
			case 0xca, 0xce, 0xd2:
				skip = 4
			case 0xcb, 0xcf, 0xd3:
				skip = 8
			case 0xd4, 0xd5, 0xd6, 0xd7, 0xd8: // fixext 1 to 16: type, data
				skip = 1 + 1<<(c-0xd4)
				if pos < len(b) && int8(b[pos]) == refExtID {
					if c != 0xd6 {
						return fmt.Errorf("ocap: a reference of %d bytes, want fixext 4", 1<<(c-0xd4))
					}
					if len(b)-pos < 5 {
						return errors.New("ocap: value truncated")
					}
					if i := binary.BigEndian.Uint32(b[pos+1:]); uint64(i) >= uint64(n) {
						return fmt.Errorf("ocap: reference index %d, but the message carries %d references", i, n)
					}
				}
			case 0xc4, 0xc5, 0xc6, 0xd9, 0xda, 0xdb: // bin 8/16/32, str 8/16/32
				w := 1 << (c - 0xc4)
				if c >= 0xd9 {
					w = 1 << (c - 0xd9)
				}
				var l uint64
				l, ok = length(w)
				skip = uint64(w) + l
			case 0xc7, 0xc8, 0xc9: // ext 8/16/32: length, type, data
				w := 1 << (c - 0xc7)
				var l uint64
				l, ok = length(w)
				if ok && len(b)-pos > w && int8(b[pos+w]) == refExtID {
					return fmt.Errorf("ocap: a reference in an ext %d of %d bytes, want fixext 4", 8<<(c-0xc7), l)
				}
				skip = uint64(w) + 1 + l
			case 0xdc, 0xdd: // array 16/32
				w := 2 << (c - 0xdc)
				more, ok = length(w)
				skip = uint64(w)
			case 0xde, 0xdf: // map 16/32
				w := 2 << (c - 0xde)
				more, ok = length(w)
				more *= 2
				skip = uint64(w)
			default:
				return fmt.Errorf("ocap: 0x%02x is not a msgpack type", c)
			}
		}
		if !ok || uint64(len(b)-pos) < skip {
			return errors.New("ocap: value truncated")
		}
		pos += int(skip)
		if more > uint64(len(b)-pos) {
			return errors.New("ocap: value truncated")
		}
		items += more
	}
	if pos != len(b) {
		return fmt.Errorf("ocap: %d bytes after the value", len(b)-pos)
	}
	return nil
}

// newDecoder returns a decoder over p, once its bytes have passed
// msgpackcheck; call done when finished with it.
func (p payload) newDecoder() (dec *msgpack.Decoder, done func(), err error) {
	dec, err = msgpackcheck.NewDecoder(p.data)
	if err != nil {
		return nil, nil, err
	}
	dec.UseLooseInterfaceDecoding(true)
	decoding.Store(dec, p.refs)
	return dec, func() { decoding.Delete(dec) }, nil
}

// decode decodes the whole payload into out, a pointer.
func (p payload) decode(out any) error {
	dec, done, err := p.newDecoder()
	if err != nil {
		return err
	}
	defer done()
	return dec.Decode(out)
}

// Result is the value a promise was fulfilled with: an encoded value and
// the references in it. A Result can be decoded any number of times.
type Result struct{ p payload }

// Decode decodes the value into out, which must be a pointer. References
// in the value decode into Ref fields (or into any, as Ref values).
func (r Result) Decode(out any) error { return r.p.decode(out) }

// Value decodes the value into an interface{}: maps, slices, strings,
// numbers, and Ref for references.
func (r Result) Value() (any, error) {
	var v any
	err := r.p.decode(&v)
	return v, err
}

// Ref returns the reference the value is, or ErrNotReference if it is not
// a single reference.
func (r Result) Ref() (Ref, error) {
	ref, ok := r.p.asRef()
	if !ok {
		return Ref{}, ErrNotReference
	}
	return ref, nil
}

// asRef reports whether the payload is exactly one reference, and which.
func (p payload) asRef() (Ref, bool) {
	if len(p.refs) != 1 || len(p.data) != 6 || p.data[0] != 0xd6 || int8(p.data[1]) != refExtID {
		return Ref{}, false
	}
	if binary.BigEndian.Uint32(p.data[2:]) != 0 {
		return Ref{}, false
	}
	return p.refs[0], true
}
