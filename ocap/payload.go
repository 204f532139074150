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
