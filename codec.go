package bokbok

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"sync"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/bokbok-go/bokbok/internal/msgpackcheck"
)

// Message bodies are MessagePack (PROTOCOL.md, "Message bodies"). Every
// body travels with a 4-byte big-endian length in front, so the receiver
// can check it against its limit before allocating. The encoders here
// build that whole "length + body" byte string in one buffer.

const bodyLenSize = 4

// bodyBuf is an io.Writer (with WriteByte, so msgpack writes into it
// directly) that appends to a byte slice.
type bodyBuf struct{ b []byte }

func (w *bodyBuf) Write(p []byte) (int, error) { w.b = append(w.b, p...); return len(p), nil }
func (w *bodyBuf) WriteByte(c byte) error      { w.b = append(w.b, c); return nil }

// encoder is a msgpack encoder bound to its own bodyBuf, pooled so that
// encoding a message allocates only the message's bytes.
type encoder struct {
	buf bodyBuf
	enc *msgpack.Encoder
}

var encoderPool = sync.Pool{New: func() any {
	e := &encoder{}
	e.enc = msgpack.NewEncoder(&e.buf)
	e.enc.UseCompactInts(true)
	return e
}}

// appendEncoded appends the msgpack encoding of v to b. It encodes into
// the pooled encoder's own buffer (kept between uses, so it has grown to
// fit earlier messages) and copies the result once: a large message costs
// one allocation of its size and one copy, not a series of regrowths.
func appendEncoded(b []byte, v any) ([]byte, error) {
	e := encoderPool.Get().(*encoder)
	e.buf.b = e.buf.b[:0]
	err := e.encode(v)
	if err == nil {
		b = slices.Grow(b, len(e.buf.b))
		b = append(b, e.buf.b...)
	}
	if cap(e.buf.b) > maxKeptEncodeBuf {
		e.buf.b = nil // do not pin a huge buffer in the pool
	}
	encoderPool.Put(e)
	return b, err
}

// encodeOwned encodes a message body (for a REQUEST, with its timeout in
// front) straight into a pooled encoder's buffer and hands over the
// encoder with it: the buffer is the message's data until the writer has
// written it and calls done. In steady state a message's body then costs
// no allocation and no copy.
func encodeOwned(request bool, timeoutMicros uint64, v any) ([]byte, *encoder, error) {
	data, e, _, err := encodeMessage(request, timeoutMicros, "", nil, v)
	return data, e, err
}

// encodeMessage is encodeOwned with a message header in front of the body
// when method or md is not empty; the flags returned are the message's
// frames' flags (flagHeader, or none).
func encodeMessage(request bool, timeoutMicros uint64, method string, md Metadata, v any) ([]byte, *encoder, uint8, error) {
	e := encoderPool.Get().(*encoder)
	b := append(e.buf.b[:0], 0, 0, 0, 0)
	var flags uint8
	if method != "" || len(md) > 0 {
		var err error
		if b, err = appendHeader(b, method, md); err != nil {
			e.buf.b = b
			e.done()
			return nil, nil, 0, err
		}
		flags = flagHeader
	}
	if request {
		b = appendMsgpackUint(b, timeoutMicros)
	}
	e.buf.b = b
	if err := e.encode(v); err != nil {
		e.done()
		return nil, nil, 0, fmt.Errorf("bokbok: encoding message: %w", err)
	}
	return finishBody(e.buf.b), e, flags, nil
}

// encode appends the msgpack encoding of v to e's buffer: by v's
// generated method if it has one (see codec_generated.go), else with the
// msgpack encoder, which calls msgpack's own encoding methods of v.
func (e *encoder) encode(v any) error {
	if m, isNil, ok := generatedMarshaler(v); ok {
		var err error
		e.buf.b, err = appendGenerated(e.buf.b, v, m, isNil)
		return err
	}
	return e.enc.Encode(v)
}

// done gives the encoder, and the buffer it lent, back to the pool.
func (e *encoder) done() {
	if cap(e.buf.b) > maxKeptEncodeBuf {
		e.buf.b = nil // do not pin a huge buffer in the pool
	} else {
		e.buf.b = e.buf.b[:0]
	}
	encoderPool.Put(e)
}

// maxKeptEncodeBuf bounds the encoding buffer a pooled encoder keeps.
const maxKeptEncodeBuf = 4 << 20

// newBody starts a body with room for its length (appendEncoded grows it
// to the exact size).
func newBody() []byte { return make([]byte, bodyLenSize, 16) }

// finishBody writes the length in front of the body and returns length +
// body.
func finishBody(b []byte) []byte {
	binary.BigEndian.PutUint32(b, uint32(len(b)-bodyLenSize))
	return b
}

// encodeValueBody encodes the body of a RESPONSE or NOTIFY (one value) into
// a byte slice of its own.
func encodeValueBody(v any) ([]byte, error) { return encodeCopy(false, 0, v) }

// encodeRequestBody encodes the body of a REQUEST: the timeout in
// microseconds (0 = none) as a msgpack unsigned integer, then the message.
func encodeRequestBody(timeoutMicros uint64, msg any) ([]byte, error) {
	return encodeCopy(true, timeoutMicros, msg)
}

// encodeCopy is encodeOwned into a byte slice of its own.
func encodeCopy(request bool, timeoutMicros uint64, v any) ([]byte, error) {
	data, owner, err := encodeOwned(request, timeoutMicros, v)
	if err != nil {
		return nil, err
	}
	data = slices.Clone(data)
	owner.done()
	return data, nil
}

// encodeErrorBody encodes the body of an ERROR: [code, message].
func encodeErrorBody(code, message string) []byte {
	return appendErrorBody(newBody(), code, message)
}

// appendErrorBody appends [code, message] to b, which holds the start of a
// body (its length, and any header), and finishes the body.
func appendErrorBody(b []byte, code, message string) []byte {
	b = append(b, 0x92) // fixarray of 2
	b, _ = appendEncoded(b, code)
	b, _ = appendEncoded(b, message) // encoding a string cannot fail
	return finishBody(b)
}

// appendMsgpackUint appends v in the shortest msgpack unsigned form.
func appendMsgpackUint(b []byte, v uint64) []byte {
	switch {
	case v <= 0x7f:
		return append(b, byte(v))
	case v <= 0xff:
		return append(b, 0xcc, byte(v))
	case v <= 0xffff:
		return binary.BigEndian.AppendUint16(append(b, 0xcd), uint16(v))
	case v <= 0xffffffff:
		return binary.BigEndian.AppendUint32(append(b, 0xce), uint32(v))
	default:
		return binary.BigEndian.AppendUint64(append(b, 0xcf), v)
	}
}

var errNotUint = errors.New("not a non-negative msgpack integer")

// readMsgpackUint reads a non-negative msgpack integer from the front of b
// (any of the unsigned or signed integer forms) and returns it with the
// number of bytes it took.
func readMsgpackUint(b []byte) (uint64, int, error) {
	if len(b) == 0 {
		return 0, 0, errNotUint
	}
	c := b[0]
	if c <= 0x7f { // positive fixint
		return uint64(c), 1, nil
	}
	var n int
	switch c {
	case 0xcc, 0xd0: // uint8, int8
		n = 1
	case 0xcd, 0xd1: // uint16, int16
		n = 2
	case 0xce, 0xd2: // uint32, int32
		n = 4
	case 0xcf, 0xd3: // uint64, int64
		n = 8
	default:
		return 0, 0, errNotUint
	}
	if len(b) < 1+n {
		return 0, 0, errNotUint
	}
	var v uint64
	for _, x := range b[1 : 1+n] {
		v = v<<8 | uint64(x)
	}
	if c >= 0xd0 && v>>(uint(n)*8-1)&1 == 1 { // signed and negative
		return 0, 0, errNotUint
	}
	return v, 1 + n, nil
}

// decodeValue decodes exactly one msgpack value from raw into out. Maps and
// numbers decoded into interface values become map[string]any, int64,
// uint64 and float64.
//
// raw comes from the peer, so it is checked first: the decoder never sees
// input that would make it allocate more than the message's size suggests
// or recurse without bound, and it cannot be made to read an extension's
// payload as msgpack. A value whose decoded size is estimated above
// limit (if limit > 0) is refused with an error matching
// ErrMessageTooLarge. A pointer to a value with generated decoding methods
// is decoded by them, after the same check (see codec_generated.go).
func decodeValue(raw []byte, out any, limit int64) error {
	_, err := decodeAliasing(raw, out, limit)
	return err
}

// decodeAliasing is decodeValue, also reporting whether out may refer to
// raw's bytes (a Bulk does; a generated decoder may).
func decodeAliasing(raw []byte, out any, limit int64) (aliased bool, err error) {
	info, err := msgpackcheck.Check(raw)
	if err != nil {
		return false, fmt.Errorf("bokbok: decoding message: %w", err)
	}
	if limit > 0 && info.Decoded > limit {
		return false, fmt.Errorf("bokbok: decoding message: %w", &MessageTooLargeError{Size: len(raw), Decoded: info.Decoded, Limit: int(limit)})
	}
	left, aliased, err := decodeChecked(raw, info, out)
	if err != nil {
		return aliased, fmt.Errorf("bokbok: decoding message: %w", err)
	}
	if left != 0 {
		return aliased, fmt.Errorf("bokbok: decoding message: %d bytes left after the value", left)
	}
	return aliased, nil
}

// decodeChecked decodes raw, checked already (info is what the check
// found), into out: by out's generated method if it has one, else with a
// pooled decoder. It returns the number of bytes of raw left unread, and
// whether out may refer to raw's bytes.
func decodeChecked(raw []byte, info msgpackcheck.Info, out any) (left int, aliased bool, err error) {
	if u, through, ok := generatedUnmarshaler(out); ok {
		left, err = unmarshalGenerated(raw, out, u, through)
		return left, true, err // generated code may keep slices of raw
	}
	d := decoderPool.Get().(*decoder)
	d.r.Reset(raw, info)
	err = d.dec.Decode(out)
	left, aliased = d.r.Len(), d.r.Aliased()
	d.r.Reset(nil, msgpackcheck.Info{})
	decoderPool.Put(d)
	return left, aliased, err
}

// decoder is a msgpack decoder bound to its own checked reader, pooled.
type decoder struct {
	r   msgpackcheck.Reader
	dec *msgpack.Decoder
}

var decoderPool = sync.Pool{New: func() any {
	d := &decoder{}
	d.dec = msgpack.NewDecoder(&d.r)
	d.dec.UseLooseInterfaceDecoding(true)
	// The check has already made sure every declared length fits in the
	// bytes received, so slices can be allocated whole rather than grown
	// 1 MiB at a time.
	d.dec.DisableAllocLimit(true)
	return d
}}

// parseRequestBody splits a REQUEST body into its timeout and message.
func parseRequestBody(body []byte) (timeoutMicros uint64, msg []byte, err error) {
	t, n, err := readMsgpackUint(body)
	if err != nil {
		return 0, nil, protocolErrorf("REQUEST body: timeout: %v", err)
	}
	if n == len(body) {
		return 0, nil, protocolErrorf("REQUEST body has a timeout but no message")
	}
	return t, body[n:], nil
}

// parseErrorBody decodes an ERROR body into a *RemoteError. The body must
// be exactly a msgpack array of two strings, in any of their encodings
// (PROTOCOL.md, "Messages"); anything else is a protocol error.
func parseErrorBody(body []byte) (*RemoteError, error) {
	var s [2][]byte
	n, rest, ok := cutMsgpackArray(body)
	ok = ok && n == uint64(len(s))
	for i := 0; ok && i < len(s); i++ {
		s[i], rest, ok = cutMsgpackStr(rest)
	}
	if !ok || len(rest) != 0 {
		return nil, &ProtocolError{Reason: "ERROR body is not [code, message]", Err: fmt.Errorf(
			"want exactly a msgpack array of two strings, got % x", body[:min(len(body), 16)])}
	}
	return &RemoteError{Code: string(s[0]), Message: string(s[1])}, nil
}

// cutMsgpackArray reads a msgpack array header from the front of b and
// returns the array's length and the bytes after the header.
func cutMsgpackArray(b []byte) (n uint64, rest []byte, ok bool) {
	switch {
	case len(b) >= 1 && b[0]&0xf0 == 0x90: // fixarray
		return uint64(b[0] & 0x0f), b[1:], true
	case len(b) >= 3 && b[0] == 0xdc: // array 16
		return uint64(binary.BigEndian.Uint16(b[1:])), b[3:], true
	case len(b) >= 5 && b[0] == 0xdd: // array 32
		return uint64(binary.BigEndian.Uint32(b[1:])), b[5:], true
	}
	return 0, nil, false
}

// cutMsgpackStr reads a msgpack string (not a binary) from the front of b
// and returns its bytes and the bytes after it.
func cutMsgpackStr(b []byte) (s, rest []byte, ok bool) {
	var n uint64
	switch {
	case len(b) >= 1 && b[0]&0xe0 == 0xa0: // fixstr
		n, b = uint64(b[0]&0x1f), b[1:]
	case len(b) >= 2 && b[0] == 0xd9: // str 8
		n, b = uint64(b[1]), b[2:]
	case len(b) >= 3 && b[0] == 0xda: // str 16
		n, b = uint64(binary.BigEndian.Uint16(b[1:])), b[3:]
	case len(b) >= 5 && b[0] == 0xdb: // str 32
		n, b = uint64(binary.BigEndian.Uint32(b[1:])), b[5:]
	default:
		return nil, nil, false
	}
	if n > uint64(len(b)) {
		return nil, nil, false
	}
	return b[:n], b[n:], true
}

// isMsgpackStr reports whether c is the first byte of a msgpack string.
func isMsgpackStr(c byte) bool { return c&0xe0 == 0xa0 || (c >= 0xd9 && c <= 0xdb) }

// isMsgpackMap reports whether c is the first byte of a msgpack map.
func isMsgpackMap(c byte) bool { return c&0xf0 == 0x80 || c == 0xde || c == 0xdf }

// settings is the payload of the SETTINGS frame each side sends first.
// Unknown keys are ignored, so later versions can add settings.
type settings struct {
	MaxMessageSize        uint64 `msgpack:"max_message_size"`
	NotifyWindow          uint64 `msgpack:"notify_window"`
	MaxConcurrentHandlers uint64 `msgpack:"max_handlers"`
	NotifyBytes           uint64 `msgpack:"notify_bytes"` // 0 (absent): DefaultNotifyBytes
	Headers               uint64 `msgpack:"headers"`      // 0 (absent): the peer reads no message headers
}

// headers reports whether the side that sent s reads message headers.
func (s settings) headers() bool { return s.Headers >= headersVersion }

// encode writes the settings as a msgpack map with its keys in a fixed
// order (the order PROTOCOL.md shows). notify_bytes is sent only when it
// is not the default, which a peer assumes when it is absent.
func (s settings) encode() []byte {
	kvs := []struct {
		k string
		v uint64
	}{
		{"max_message_size", s.MaxMessageSize},
		{"notify_window", s.NotifyWindow},
		{"max_handlers", s.MaxConcurrentHandlers},
	}
	if s.NotifyBytes != 0 && s.NotifyBytes != DefaultNotifyBytes {
		kvs = append(kvs, struct {
			k string
			v uint64
		}{"notify_bytes", s.NotifyBytes})
	}
	if s.Headers != 0 {
		kvs = append(kvs, struct {
			k string
			v uint64
		}{"headers", s.Headers})
	}
	b := []byte{0x80 | byte(len(kvs))} // fixmap
	for _, kv := range kvs {
		b, _ = appendEncoded(b, kv.k)
		b = appendMsgpackUint(b, kv.v)
	}
	return b
}

// parseSettings parses and checks the peer's SETTINGS payload
// (PROTOCOL.md, "Settings"): exactly one well-formed msgpack map with
// string keys; each known key at most once, with a non-negative integer
// in its range; max_message_size and notify_window present; unknown keys,
// whatever their values, ignored.
func parseSettings(p []byte) (settings, error) {
	var s settings
	d, err := msgpackcheck.NewDecoder(p)
	if err != nil {
		return s, &ProtocolError{Reason: "bad SETTINGS payload", Err: err}
	}
	if c, _ := d.PeekCode(); !isMsgpackMap(c) {
		return s, protocolErrorf("bad SETTINGS payload: msgpack 0x%02x, want a map", c)
	}
	fields := [...]struct {
		key string
		v   *uint64
	}{
		{"max_message_size", &s.MaxMessageSize},
		{"notify_window", &s.NotifyWindow},
		{"max_handlers", &s.MaxConcurrentHandlers},
		{"notify_bytes", &s.NotifyBytes},
		{"headers", &s.Headers},
	}
	var seen [len(fields)]bool
	// The payload has been checked whole, so the decoder's reads below
	// cannot run short; only the types of the items are left to check.
	n, _ := d.DecodeMapLen()
	for range n {
		if c, _ := d.PeekCode(); !isMsgpackStr(c) {
			return s, protocolErrorf("SETTINGS key of msgpack type 0x%02x, want a string", c)
		}
		key, _ := d.DecodeString()
		i := 0
		for i < len(fields) && fields[i].key != key {
			i++
		}
		if i == len(fields) {
			_ = d.Skip() // a later version's setting: any value, ignored
			continue
		}
		if seen[i] {
			return s, protocolErrorf("SETTINGS %s appears more than once", key)
		}
		seen[i] = true
		v, ok := decodeMsgpackUint(d)
		if !ok {
			return s, protocolErrorf("SETTINGS %s is not a non-negative msgpack integer", key)
		}
		*fields[i].v = v
	}
	switch {
	case !seen[0]:
		return s, protocolErrorf("SETTINGS lacks max_message_size")
	case !seen[1]:
		return s, protocolErrorf("SETTINGS lacks notify_window")
	case s.MaxMessageSize == 0 || s.MaxMessageSize > maxMessageSizeLimit:
		return s, protocolErrorf("SETTINGS max_message_size %d out of range 1..%d", s.MaxMessageSize, maxMessageSizeLimit)
	case s.NotifyWindow == 0 || s.NotifyWindow > maxNotifyWindow:
		return s, protocolErrorf("SETTINGS notify_window %d out of range 1..%d", s.NotifyWindow, maxNotifyWindow)
	case s.NotifyBytes > maxMessageSizeLimit:
		return s, protocolErrorf("SETTINGS notify_bytes %d out of range 1..%d", s.NotifyBytes, maxMessageSizeLimit)
	}
	if s.NotifyBytes == 0 {
		s.NotifyBytes = DefaultNotifyBytes
	}
	return s, nil
}

// decodeMsgpackUint decodes a non-negative integer in any msgpack integer
// form, and refuses every other item (negative numbers, floats, nil).
func decodeMsgpackUint(d *msgpack.Decoder) (uint64, bool) {
	c, err := d.PeekCode()
	switch {
	case err != nil:
		return 0, false
	case c <= 0x7f || (c >= 0xcc && c <= 0xcf): // positive fixint, uint 8..64
		v, err := d.DecodeUint64()
		return v, err == nil
	case c >= 0xd0 && c <= 0xd3: // int 8..64
		v, err := d.DecodeInt64()
		return uint64(v), err == nil && v >= 0
	}
	return 0, false
}
