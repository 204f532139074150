package bokbok

import (
	"encoding"
	"fmt"
	"reflect"
	"strconv"
	"strings"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/bokbok-go/bokbok/internal/msgpackcheck"
)

// Strict decoding: a message decodes as with Decode, except that a map key
// naming no field of the struct it is decoded into is an error; and when
// decoding fails, the part of the message that failed is found and named.
//
// Finding it happens only after a failure, and only by decoding parts of
// the message alone: a struct's entries one at a time (as a map of one
// entry, into a new value of the struct, so that msgpack itself resolves
// the name), an array's elements, a map's values. The first part that
// fails alone is the one the whole decoding failed at; the search then
// descends into it, in a loop, at most strictMaxDepth levels, and each
// level decodes at most the bytes of the level above (each part about
// three times), so a peer's nesting cannot make the search expensive.

// DecodeError reports a message that did not decode into the value it was
// decoded into (see Request.DecodeStrict).
//
// Field is the path to the part of the message that failed, from the
// message's top: struct fields by the names they travel under (their
// msgpack names), joined by dots, array elements by their index in
// brackets and map entries by their key after a dot, such as "key",
// "owner.id", "items[2].name" or "labels.env". It is "" when the message
// failed as a whole (a message that is not a map where a struct is
// expected, for example). For a map key that names no field of its
// struct, Field is that key's path and Err's text is "unknown field".
//
// Err is the cause: for a value of the wrong MessagePack type, an error
// that reads like "cannot decode a msgpack integer into string" and wraps
// the msgpack decoder's own error.
type DecodeError struct {
	Field string // the path to the part that failed; "" for the whole message
	Err   error  // why it failed
}

// Error describes the failure with its field.
func (e *DecodeError) Error() string {
	switch {
	case e.Field == "":
		return fmt.Sprintf("bokbok: decoding message: %v", e.Err)
	case e.isUnknownField():
		return fmt.Sprintf("bokbok: decoding message: unknown field %q", e.Field)
	}
	return fmt.Sprintf("bokbok: decoding message: field %q: %v", e.Field, e.Err)
}

// Unwrap returns Err.
func (e *DecodeError) Unwrap() error { return e.Err }

// isUnknownField reports whether Field is a map key that names no field.
func (e *DecodeError) isUnknownField() bool {
	_, ok := e.Err.(*strictUnknownFieldError)
	return ok
}

// strictUnknownFieldError is a DecodeError's Err for a map key that names
// no field; it wraps the msgpack decoder's error.
type strictUnknownFieldError struct{ err error }

func (e *strictUnknownFieldError) Error() string { return "unknown field" }
func (e *strictUnknownFieldError) Unwrap() error { return e.err }

// strictTypeError is a DecodeError's Err for a value of a MessagePack type
// that cannot become the Go type it was decoded into.
type strictTypeError struct {
	have string       // the MessagePack type: "integer", "map", ...
	want reflect.Type // the Go type
	err  error        // the msgpack decoder's error
}

func (e *strictTypeError) Error() string {
	return fmt.Sprintf("cannot decode a msgpack %s into %s", e.have, e.want)
}
func (e *strictTypeError) Unwrap() error { return e.err }

// DecodeStrict decodes the message into out, which must be a pointer, as
// Decode does, except that a MessagePack map entry whose key names no
// field of the struct it is decoded into is an error rather than skipped
// (at any depth). A message that does not decode fails with a
// *DecodeError naming the field that failed, as far as it can be found:
// through nested structs, arrays, slices and maps with string keys.
// Fields are named as msgpack names them: by the name in their `msgpack`
// tag, else by their Go name; fields tagged `msgpack:"-"` and unexported
// fields are not fields (a `json` tag plays no part).
//
// A value that makes the msgpack decoder panic (msgpack v5 does for a
// few Go types, such as a string where a time.Time field is expected)
// fails with a *DecodeError too, rather than panicking. As with Decode, a
// message whose decoding is estimated to take more than the connection's
// Config.MaxReceiveBytes fails with a *MessageTooLargeError, not a
// *DecodeError. Typed handlers (see Handle) decode their requests with
// DecodeStrict.
func (r *Request) DecodeStrict(out any) error {
	var limit int64
	if r.conn != nil {
		limit = int64(r.conn.cfg.MaxReceiveBytes)
	}
	return decodeStrict(r.raw, out, limit)
}

// decodeStrict is decodeValue with unknown fields refused and failures
// located.
func decodeStrict(raw []byte, out any, limit int64) error {
	info, err := msgpackcheck.Check(raw)
	if err != nil {
		return fmt.Errorf("bokbok: decoding message: %w", err)
	}
	if limit > 0 && info.Decoded > limit {
		return fmt.Errorf("bokbok: decoding message: %w", &MessageTooLargeError{Size: len(raw), Decoded: info.Decoded, Limit: int(limit)})
	}
	if err := strictDecodeChecked(raw, info, out); err != nil {
		return strictLocate(raw, out, err)
	}
	return nil
}

// strictDecodeChecked decodes raw, checked already (info is what the check
// found), into out with a pooled decoder that refuses unknown fields for
// this call. A panic in the decoder (msgpack v5 has a few, on values of an
// unexpected type for some Go types) is returned as an error, and the
// decoder it happened in is dropped rather than pooled.
func strictDecodeChecked(raw []byte, info msgpackcheck.Info, out any) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("msgpack decoder panicked: %v", p)
		}
	}()
	d := decoderPool.Get().(*decoder)
	d.r.Reset(raw, info)
	d.dec.DisallowUnknownFields(true)
	err = d.dec.Decode(out)
	left := d.r.Len()
	d.dec.DisallowUnknownFields(false) // pooled decoders are lenient
	d.r.Reset(nil, msgpackcheck.Info{})
	decoderPool.Put(d)
	if err == nil && left != 0 {
		err = fmt.Errorf("%d bytes left after the value", left)
	}
	return err
}

// strictAlone decodes raw, one whole msgpack value, strictly into a new
// value of type typ.
func strictAlone(raw []byte, typ reflect.Type) error {
	info, err := msgpackcheck.Check(raw)
	if err != nil {
		return err
	}
	return strictDecodeChecked(raw, info, reflect.New(typ).Interface())
}

// strictMaxDepth bounds how many levels the search for a failing field
// descends.
const strictMaxDepth = 32

// strictPart is one part of a message on the way to the part that failed.
type strictPart struct {
	typ     reflect.Type // what it was decoded into; nil if not known
	raw     []byte       // its msgpack encoding
	err     error        // why it did not decode
	name    string       // its struct field name or map key, if index < 0
	index   int          // its index in an array, or -1
	unknown bool         // name is a key that names no field
}

// strictLocate turns err, the failure of decoding raw into out, into a
// *DecodeError naming the part of raw that failed.
func strictLocate(raw []byte, out any, err error) error {
	t := reflect.TypeOf(out)
	if t == nil || t.Kind() != reflect.Pointer {
		return &DecodeError{Err: err}
	}
	part := strictPart{typ: t.Elem(), raw: raw, err: err, index: -1}
	var path []byte
	var scratch []byte
	for range strictMaxDepth {
		if part.typ == nil {
			break
		}
		next, ok := strictFailingPart(part, &scratch)
		if !ok {
			break
		}
		if next.index >= 0 {
			path = append(strconv.AppendInt(append(path, '['), int64(next.index), 10), ']')
		} else {
			if len(path) > 0 {
				path = append(path, '.')
			}
			path = append(path, next.name...)
		}
		if next.unknown {
			return &DecodeError{Field: string(path), Err: &strictUnknownFieldError{next.err}}
		}
		part = next
	}
	return &DecodeError{Field: string(path), Err: strictDescribe(part)}
}

// strictDescribe makes the error of a part that failed as a whole: a
// value of the wrong MessagePack type is described as such.
func strictDescribe(p strictPart) error {
	if p.typ == nil || len(p.raw) == 0 {
		return p.err
	}
	if msg := p.err.Error(); !strings.HasPrefix(msg, "msgpack: invalid code=") && !strings.HasPrefix(msg, "msgpack: unexpected code=") {
		return p.err
	}
	typ := p.typ
	for typ.Kind() == reflect.Pointer {
		typ = typ.Elem()
	}
	return &strictTypeError{have: strictTypeName(p.raw[0]), want: typ, err: p.err}
}

// strictFailingPart finds the first part of p (a struct field, an array
// element, a map value) that fails to decode alone. It reports false if p
// has no parts msgpack decodes one by one, or if none fails alone.
func strictFailingPart(p strictPart, scratch *[]byte) (strictPart, bool) {
	typ := p.typ
	for typ.Kind() == reflect.Pointer {
		typ = typ.Elem()
	}
	if len(p.raw) == 0 || !strictPlain(typ) {
		return strictPart{}, false
	}
	c := p.raw[0]
	switch typ.Kind() {
	case reflect.Struct:
		if !isMsgpackMap(c) || strictAlone([]byte{0x80}, typ) != nil {
			return strictPart{}, false // not decoded from a map field by field
		}
		return strictFailingField(p.raw, typ, scratch)
	case reflect.Slice, reflect.Array:
		if typ.Elem().Kind() == reflect.Uint8 {
			return strictPart{}, false // bytes
		}
		n, rest, ok := cutMsgpackArray(p.raw)
		if !ok {
			return strictPart{}, false
		}
		for i := range n {
			l, _ := msgpackcheck.Len(rest) // checked already, with all of p
			elem := rest[:l]
			rest = rest[l:]
			if err := strictAlone(elem, typ.Elem()); err != nil {
				return strictPart{typ: typ.Elem(), raw: elem, err: err, index: int(i)}, true
			}
		}
	case reflect.Map:
		if typ.Key().Kind() != reflect.String {
			return strictPart{}, false
		}
		n, rest, ok := cutMsgpackMap(p.raw)
		if !ok {
			return strictPart{}, false
		}
		for range n {
			var key, val []byte
			key, val, rest = cutCheckedMapEntry(rest)
			name, ok := strictKeyName(key)
			if !ok {
				return strictPart{}, false
			}
			if err := strictAlone(val, typ.Elem()); err != nil {
				return strictPart{typ: typ.Elem(), raw: val, err: err, name: name, index: -1}, true
			}
		}
	}
	return strictPart{}, false
}

// strictFailingField finds the first entry of raw, a map decoded into the
// struct type typ, that fails to decode alone into typ.
func strictFailingField(raw []byte, typ reflect.Type, scratch *[]byte) (strictPart, bool) {
	n, rest, ok := cutMsgpackMap(raw)
	if !ok {
		return strictPart{}, false
	}
	for range n {
		var key, val []byte
		key, val, rest = cutCheckedMapEntry(rest)
		name, ok := strictKeyName(key)
		if !ok {
			return strictPart{}, false // a key msgpack cannot read as a name
		}
		// The entry alone, as a map of one entry, decoded by msgpack into
		// the struct: msgpack's own rules resolve the name.
		entry := append(append(append((*scratch)[:0], 0x81), key...), val...)
		*scratch = entry
		err := strictAlone(entry, typ)
		if err == nil {
			continue
		}
		// With nil as its value, an entry fails only if its key names no
		// field.
		probe := append(append((*scratch)[:0], 0x81), key...)
		probe = append(probe, 0xc0)
		*scratch = probe
		if perr := strictAlone(probe, typ); perr != nil && strings.HasPrefix(perr.Error(), "msgpack: unknown field") {
			return strictPart{name: name, err: perr, index: -1, unknown: true}, true
		}
		if ft, ok := strictFieldType(typ, name); ok {
			if ferr := strictAlone(val, ft); ferr != nil {
				return strictPart{typ: ft, raw: val, err: ferr, name: name, index: -1}, true
			}
		}
		return strictPart{raw: val, err: err, name: name, index: -1}, true // its type unknown
	}
	return strictPart{}, false
}

// strictKeyName reads key, one whole msgpack value, as msgpack reads the
// key of a struct field: a string, a binary, or nil for "".
func strictKeyName(key []byte) (string, bool) {
	if s, rest, ok := cutMsgpackStr(key); ok && len(rest) == 0 {
		return string(s), true
	}
	var n int
	switch key[0] {
	case 0xc0:
		return "", len(key) == 1
	case 0xc4:
		n = 1
	case 0xc5:
		n = 2
	case 0xc6:
		n = 4
	default:
		return "", false
	}
	if len(key) < 1+n {
		return "", false
	}
	return string(key[1+n:]), true
}

// strictTypeName names the MessagePack type of the value whose first
// byte is c.
func strictTypeName(c byte) string {
	switch {
	case c <= 0x7f || c >= 0xe0:
		return "integer"
	case c <= 0x8f:
		return "map"
	case c <= 0x9f:
		return "array"
	case c <= 0xbf:
		return "string"
	}
	switch c {
	case 0xc0:
		return "nil"
	case 0xc2, 0xc3:
		return "boolean"
	case 0xc4, 0xc5, 0xc6:
		return "binary"
	case 0xca, 0xcb:
		return "float"
	case 0xcc, 0xcd, 0xce, 0xcf, 0xd0, 0xd1, 0xd2, 0xd3:
		return "integer"
	case 0xd9, 0xda, 0xdb:
		return "string"
	case 0xdc, 0xdd:
		return "array"
	case 0xde, 0xdf:
		return "map"
	}
	return "extension"
}

// The interfaces through which a type takes over its own msgpack decoding
// and encoding.
var (
	strictDecoderTypes = []reflect.Type{
		reflect.TypeFor[msgpack.CustomDecoder](),
		reflect.TypeFor[msgpack.Unmarshaler](),
		reflect.TypeFor[encoding.BinaryUnmarshaler](),
		reflect.TypeFor[encoding.TextUnmarshaler](),
	}
	strictEncoderTypes = []reflect.Type{
		reflect.TypeFor[msgpack.CustomEncoder](),
		reflect.TypeFor[msgpack.Marshaler](),
		reflect.TypeFor[encoding.BinaryMarshaler](),
		reflect.TypeFor[encoding.TextMarshaler](),
	}
)

// strictPlain reports whether msgpack decodes values of typ by its kind,
// rather than through a method of typ or *typ.
func strictPlain(typ reflect.Type) bool { return !strictImplementsAny(typ, strictDecoderTypes) }

// strictImplementsAny reports whether typ or *typ implements any of
// ifaces.
func strictImplementsAny(typ reflect.Type, ifaces []reflect.Type) bool {
	ptr := reflect.PointerTo(typ)
	for _, iface := range ifaces {
		if typ.Implements(iface) || ptr.Implements(iface) {
			return true
		}
	}
	return false
}

// strictFieldType returns the type of the field of the struct type typ
// that the map key name decodes into, by the rules of msgpack v5 (its
// getFields) with no custom struct tag, which is how this package's
// decoders are set up: the name in the `msgpack` tag, else the Go name;
// "-" and unexported fields left out; embedded structs inlined (always
// with the "inline" option, and by default when their fields do not
// clash and they have no msgpack methods of their own), and still
// decodable whole under their own name; "alias:" names. Tags are split at
// commas; the quoting msgpack's tag parser allows is not supported.
func strictFieldType(typ reflect.Type, name string) (reflect.Type, bool) {
	f, ok := strictStructFields(typ, 0).byName[name]
	return f, ok
}

// strictFields are the fields msgpack decodes a struct type by.
type strictFields struct {
	names  []string                // fields in order, inlined ones included
	byName map[string]reflect.Type // what each name decodes into, aliases included
}

func (fs *strictFields) add(name string, typ reflect.Type) {
	fs.names = append(fs.names, name)
	fs.byName[name] = typ
}

// strictStructFields lists the fields of the struct type typ; depth
// counts the embedded structs it is inlined into (bounded, in case a type
// embeds itself).
func strictStructFields(typ reflect.Type, depth int) *strictFields {
	fs := &strictFields{byName: make(map[string]reflect.Type, typ.NumField())}
	for i := range typ.NumField() {
		f := typ.Field(i)
		name, opts := strictParseTag(f.Tag.Get("msgpack"))
		if name == "-" {
			continue
		}
		if f.PkgPath != "" && !f.Anonymous {
			continue
		}
		if name == "" {
			name = f.Name
		}
		if f.Anonymous && !opts["noinline"] && depth < strictMaxDepth {
			inner := f.Type
			for inner.Kind() == reflect.Pointer {
				inner = inner.Elem()
			}
			inlined := false
			if inner.Kind() == reflect.Struct {
				innerFields := strictStructFields(inner, depth+1)
				if opts["inline"] {
					for _, n := range innerFields.names {
						if _, shadowed := fs.byName[n]; !shadowed {
							fs.add(n, innerFields.byName[n])
						}
					}
					inlined = true
				} else if !strictImplementsAny(inner, strictDecoderTypes) && !strictImplementsAny(inner, strictEncoderTypes) {
					clash := false
					for _, n := range innerFields.names {
						if _, ok := fs.byName[n]; ok {
							clash = true
							break
						}
					}
					if !clash {
						for _, n := range innerFields.names {
							fs.add(n, innerFields.byName[n])
						}
						inlined = true
					}
				}
			}
			if inlined {
				fs.byName[name] = f.Type // decodable whole, but not listed
				continue
			}
		}
		fs.add(name, f.Type)
		for k := range opts {
			if a, ok := strings.CutPrefix(k, "alias:"); ok {
				fs.byName[a] = f.Type
			}
		}
	}
	return fs
}

// strictParseTag splits a `msgpack` tag into its name and its options
// ("omitempty", "inline", "alias:other", ...).
func strictParseTag(tag string) (string, map[string]bool) {
	parts := strings.Split(tag, ",")
	name := strings.TrimSpace(parts[0])
	if strings.Contains(name, ":") {
		name = "" // a first part with a colon is an option, not the name
	} else {
		parts = parts[1:]
	}
	opts := make(map[string]bool, len(parts))
	for _, p := range parts {
		p = strings.TrimSpace(p)
		if k, v, ok := strings.Cut(p, ":"); ok {
			p = strings.TrimSpace(k) + ":" + strings.TrimSpace(v)
		}
		opts[p] = true
	}
	return name, opts
}

// cutCheckedMapEntry splits the key and the value of a map entry from the
// front of b, which has been checked whole already (so both are there).
func cutCheckedMapEntry(b []byte) (key, val, rest []byte) {
	n, _ := msgpackcheck.Len(b)
	key, b = b[:n], b[n:]
	n, _ = msgpackcheck.Len(b)
	return key, b[:n], b[n:]
}
