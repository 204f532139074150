package bokbok

import (
	"bytes"
	"fmt"
	"reflect"

	"github.com/vmihailenco/msgpack/v5"
)

// Generated codecs: a value whose method set has the methods that
// tinylib/msgp generates is encoded and decoded by them, without
// reflection and without a dependency on msgp (the methods are found by
// their signatures). The wire format does not change: a body is still
// one msgpack value, which a peer may decode any way it likes. Within the
// value the generated code makes its own choices, all valid msgpack:
// msgp names fields by their `msg` tags, and writes integers above 127 as
// signed and a nil []byte as an empty binary, where reflection writes
// them unsigned and as nil.
//
//   - Encoding: a message v that has MarshalMsg (a pointer, or a value
//     whose method has a value receiver; a struct value whose method has a
//     pointer receiver is encoded by reflection, as it has no such method)
//     is appended to the body by v.MarshalMsg. A nil pointer, map or slice
//     encodes as msgpack nil, as reflection encodes it, without calling
//     the method. What the method appends is sent as it is, as what a
//     msgpack.Marshaler returns is.
//   - Decoding: into a non-nil pointer that has UnmarshalMsg, after the
//     same check and size limit as any message (generated code trusts the
//     lengths a message claims and allocates for them: the check is what
//     keeps a hostile peer from making it), and the method must consume
//     the whole value. A msgpack nil decodes as reflection decodes it, into
//     the zero value, without calling the method (msgp's methods refuse a
//     nil where they expect a map or an array).
//   - One level of pointer more is looked through, since typed handlers
//     reply with, and Invoke decodes into, a pointer to their Reply type:
//     a **T is encoded by the *T's method (nil: msgpack nil) and decoded
//     into a *T it allocates if needed (nil: the *T set to nil), as
//     reflection does.
//   - A type that has msgpack's own methods (msgpack.CustomEncoder,
//     msgpack.Marshaler; msgpack.CustomDecoder, msgpack.Unmarshaler) is
//     left to the msgpack encoder and decoder, which call them, as before.
//
// Only the message as a whole goes through its generated methods; values
// nested in a message encoded by reflection (a map of generated structs,
// say) are encoded by reflection. Request.DecodeStrict, and so the
// requests of typed handlers, decode by reflection too: it refuses
// unknown fields, which generated code skips.

// msgpMarshaler is the encoding method tinylib/msgp generates: it appends
// the value's msgpack encoding to b.
type msgpMarshaler interface {
	MarshalMsg(b []byte) ([]byte, error)
}

// msgpUnmarshaler is the decoding method tinylib/msgp generates: it
// decodes one msgpack value from the front of b and returns the bytes
// after it.
type msgpUnmarshaler interface {
	UnmarshalMsg(b []byte) (rest []byte, err error)
}

// msgpackNil is the msgpack encoding of nil.
const msgpackNil = 0xc0

// generatedMarshaler returns the generated encoder of v (v itself, or the
// value v points to), and whether a nil stands in its way, in which case v
// encodes as msgpack nil. ok is false if v is encoded by the msgpack
// encoder.
func generatedMarshaler(v any) (m msgpMarshaler, isNil, ok bool) {
	if m, ok := v.(msgpMarshaler); ok {
		if hasMsgpackEncoder(v) {
			return nil, false, false
		}
		return m, isNilValue(reflect.ValueOf(v)), true
	}
	rv := reflect.ValueOf(v)
	if rv.Kind() != reflect.Pointer || rv.Type().Elem().Kind() != reflect.Pointer {
		return nil, false, false
	}
	pt := rv.Type().Elem()
	if !pt.Implements(msgpMarshalerType) || pt.Implements(msgpackCustomEncoderType) || pt.Implements(msgpackMarshalerType) {
		return nil, false, false
	}
	if rv.IsNil() || rv.Elem().IsNil() {
		return nil, true, true
	}
	return rv.Elem().Interface().(msgpMarshaler), false, true
}

// appendGenerated appends the encoding of v by its generated method (see
// generatedMarshaler) to b. On failure it returns b as it was.
//
// What the method appends is not checked to be one well-formed msgpack
// value, as the output of msgpack.Marshaler is not: the peer checks every
// message, and refuses a malformed one for that call alone. Checking here
// would scan every message once more (for a small message, more than a
// quarter of the generated path's time). Only what
// would break the framing of the message, rather than its value, is
// refused: a method that returns a new slice rather than appending to b
// (which holds the message's length, header and timeout), or one that
// appends nothing.
func appendGenerated(b []byte, v any, m msgpMarshaler, isNil bool) ([]byte, error) {
	if isNil {
		return append(b, msgpackNil), nil
	}
	start := len(b)
	out, err := m.MarshalMsg(b)
	if err != nil {
		return b[:start], err
	}
	switch {
	case len(out) < start || !bytes.Equal(out[:start], b[:start]):
		return b[:start], fmt.Errorf("%T.MarshalMsg did not append to the bytes it was given", v)
	case len(out) == start:
		return b[:start], fmt.Errorf("%T.MarshalMsg appended nothing", v)
	}
	return out, nil
}

// generatedUnmarshaler returns the generated decoder for out, and the
// pointer it is to be reached through when out points to a pointer (then
// set, when decoding, to a new value if nil). ok is false if out is
// decoded by the msgpack decoder, which is also what reports an out that
// is not a non-nil pointer.
func generatedUnmarshaler(out any) (u msgpUnmarshaler, through reflect.Value, ok bool) {
	rv := reflect.ValueOf(out)
	if rv.Kind() != reflect.Pointer || rv.IsNil() {
		return nil, reflect.Value{}, false
	}
	if u, ok := out.(msgpUnmarshaler); ok {
		if hasMsgpackDecoder(out) {
			return nil, reflect.Value{}, false
		}
		return u, reflect.Value{}, true
	}
	pt := rv.Type().Elem()
	if pt.Kind() != reflect.Pointer || !pt.Implements(msgpUnmarshalerType) ||
		pt.Implements(msgpackCustomDecoderType) || pt.Implements(msgpackUnmarshalerType) {
		return nil, reflect.Value{}, false
	}
	return nil, rv.Elem(), true
}

// unmarshalGenerated decodes raw, exactly one msgpack value that has been
// checked already, into out by its generated method (see
// generatedUnmarshaler), and returns the number of bytes the method left
// unread.
func unmarshalGenerated(raw []byte, out any, u msgpUnmarshaler, through reflect.Value) (left int, err error) {
	isNil := len(raw) == 1 && raw[0] == msgpackNil
	switch {
	case through.IsValid() && isNil:
		through.SetZero()
		return 0, nil
	case through.IsValid():
		if through.IsNil() {
			through.Set(reflect.New(through.Type().Elem()))
		}
		u = through.Interface().(msgpUnmarshaler)
	case isNil:
		reflect.ValueOf(out).Elem().SetZero()
		return 0, nil
	}
	rest, err := u.UnmarshalMsg(raw)
	if err != nil {
		return 0, err
	}
	return len(rest), nil
}

// isNilValue reports whether v is a nil pointer, map, slice, interface,
// channel or function: a value reflection encodes as msgpack nil.
func isNilValue(v reflect.Value) bool {
	switch v.Kind() {
	case reflect.Pointer, reflect.Map, reflect.Slice, reflect.Interface, reflect.Chan, reflect.Func:
		return v.IsNil()
	}
	return false
}

// hasMsgpackEncoder reports whether v has msgpack's own encoding methods,
// which the msgpack encoder calls.
func hasMsgpackEncoder(v any) bool {
	switch v.(type) {
	case msgpack.CustomEncoder, msgpack.Marshaler:
		return true
	}
	return false
}

// hasMsgpackDecoder reports whether out has msgpack's own decoding
// methods, which the msgpack decoder calls.
func hasMsgpackDecoder(out any) bool {
	switch out.(type) {
	case msgpack.CustomDecoder, msgpack.Unmarshaler:
		return true
	}
	return false
}

// The interfaces above as types, to test pointer types against.
var (
	msgpMarshalerType        = reflect.TypeFor[msgpMarshaler]()
	msgpUnmarshalerType      = reflect.TypeFor[msgpUnmarshaler]()
	msgpackCustomEncoderType = reflect.TypeFor[msgpack.CustomEncoder]()
	msgpackMarshalerType     = reflect.TypeFor[msgpack.Marshaler]()
	msgpackCustomDecoderType = reflect.TypeFor[msgpack.CustomDecoder]()
	msgpackUnmarshalerType   = reflect.TypeFor[msgpack.Unmarshaler]()
)
