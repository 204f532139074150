package bokbok

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/bokbok-go/bokbok/internal/msgpackcheck"
)

// Specification: a message whose type has the methods tinylib/msgp
// generates (MarshalMsg, UnmarshalMsg) is encoded and decoded by them, and
// travels exactly as reflection would send it; msgpack's own methods keep
// working as before.

// genMsg has the methods msgp would generate for it, written by hand the
// way the generator writes them (plain byte appends and reads), in the
// shape reflection gives genMsgRefl: a map {"seq": integer, "data": binary
// or nil}, fields in order, integers in their shortest form. (msgp itself
// would write integers above 127 as signed and a nil []byte as an empty
// binary: equally valid msgpack, but not byte for byte reflection's.)
type genMsg struct {
	Seq  int64  `msgpack:"seq" msg:"seq"`
	Data []byte `msgpack:"data" msg:"data"`

	decodedBy string // set by UnmarshalMsg; reflection leaves it alone
}

// genMsgRefl is genMsg without its methods: encoded and decoded by
// reflection.
type genMsgRefl genMsg

// genCalls counts calls of the generated methods of the test types. The
// tests that read it do not run in parallel.
var genCalls struct {
	marshal, unmarshal atomic.Int64 // genMsg's
	both               atomic.Int64 // bothMsg's msgp methods
}

// resetGenCalls zeroes genCalls.
func resetGenCalls() {
	genCalls.marshal.Store(0)
	genCalls.unmarshal.Store(0)
	genCalls.both.Store(0)
}

// MarshalMsg appends z's encoding to b, as msgp would.
func (z *genMsg) MarshalMsg(b []byte) ([]byte, error) {
	genCalls.marshal.Add(1)
	b = append(b, 0x82, 0xa3, 's', 'e', 'q')
	b = genAppendInt(b, z.Seq)
	b = append(b, 0xa4, 'd', 'a', 't', 'a')
	return genAppendBytes(b, z.Data), nil
}

// UnmarshalMsg decodes z from the front of b and returns the rest, as
// msgp would: unknown keys skipped, keys in any order. (msgp's own code
// also trusts the counts a message claims for arrays, and allocates for
// them before reading the items.)
func (z *genMsg) UnmarshalMsg(b []byte) ([]byte, error) {
	genCalls.unmarshal.Add(1)
	n, b, ok := cutMsgpackMap(b)
	if !ok {
		return b, errors.New("genMsg: want a map")
	}
	for range n {
		key, rest, ok := cutMsgpackStr(b)
		if !ok {
			return b, errors.New("genMsg: want a string key")
		}
		var err error
		switch string(key) {
		case "seq":
			z.Seq, b, err = genReadInt(rest)
		case "data":
			z.Data, b, err = genReadBytes(rest, z.Data)
		default:
			var l int
			l, err = msgpackcheck.Len(rest)
			b = rest[l:]
		}
		if err != nil {
			return b, fmt.Errorf("genMsg.%s: %w", key, err)
		}
	}
	z.decodedBy = "UnmarshalMsg"
	return b, nil
}

// genAppendInt appends n in the shortest form, unsigned when it is not
// negative (as msgpack v5 with compact integers writes it).
func genAppendInt(b []byte, n int64) []byte {
	switch {
	case n >= 0 && n <= math.MaxInt8:
		return append(b, byte(n))
	case n >= 0 && n <= math.MaxUint8:
		return append(b, 0xcc, byte(n))
	case n >= 0 && n <= math.MaxUint16:
		return binary.BigEndian.AppendUint16(append(b, 0xcd), uint16(n))
	case n >= 0 && n <= math.MaxUint32:
		return binary.BigEndian.AppendUint32(append(b, 0xce), uint32(n))
	case n >= 0:
		return binary.BigEndian.AppendUint64(append(b, 0xcf), uint64(n))
	case n >= -32:
		return append(b, byte(n))
	case n >= math.MinInt8:
		return append(b, 0xd0, byte(n))
	case n >= math.MinInt16:
		return binary.BigEndian.AppendUint16(append(b, 0xd1), uint16(n))
	case n >= math.MinInt32:
		return binary.BigEndian.AppendUint32(append(b, 0xd2), uint32(n))
	}
	return binary.BigEndian.AppendUint64(append(b, 0xd3), uint64(n))
}

// genAppendBytes appends p as a binary, or nil if p is nil.
func genAppendBytes(b, p []byte) []byte {
	switch {
	case p == nil:
		return append(b, 0xc0)
	case len(p) <= math.MaxUint8:
		b = append(b, 0xc4, byte(len(p)))
	case len(p) <= math.MaxUint16:
		b = binary.BigEndian.AppendUint16(append(b, 0xc5), uint16(len(p)))
	default:
		b = binary.BigEndian.AppendUint32(append(b, 0xc6), uint32(len(p)))
	}
	return append(b, p...)
}

// genReadInt reads an integer in any of its forms from the front of b.
func genReadInt(b []byte) (int64, []byte, error) {
	if len(b) == 0 {
		return 0, b, errors.New("short bytes")
	}
	c := b[0]
	if c <= 0x7f || c >= 0xe0 { // fixints
		return int64(int8(c)), b[1:], nil
	}
	var n int
	switch c {
	case 0xcc, 0xd0:
		n = 1
	case 0xcd, 0xd1:
		n = 2
	case 0xce, 0xd2:
		n = 4
	case 0xcf, 0xd3:
		n = 8
	}
	if n == 0 || len(b) < 1+n {
		return 0, b, fmt.Errorf("not an integer: 0x%02x", c)
	}
	var u uint64
	for _, x := range b[1 : 1+n] {
		u = u<<8 | uint64(x)
	}
	if c >= 0xd0 { // signed: extend the sign
		shift := 64 - 8*uint(n)
		return int64(u<<shift) >> shift, b[1+n:], nil
	}
	return int64(u), b[1+n:], nil
}

// genReadBytes reads a binary, or nil, from the front of b, into dst's
// memory if it is large enough (as reflection does).
func genReadBytes(b, dst []byte) ([]byte, []byte, error) {
	var n, h int
	switch {
	case len(b) >= 1 && b[0] == 0xc0:
		return nil, b[1:], nil
	case len(b) >= 2 && b[0] == 0xc4:
		n, h = int(b[1]), 2
	case len(b) >= 3 && b[0] == 0xc5:
		n, h = int(binary.BigEndian.Uint16(b[1:])), 3
	case len(b) >= 5 && b[0] == 0xc6:
		n, h = int(binary.BigEndian.Uint32(b[1:])), 5
	default:
		return nil, b, errors.New("not a binary")
	}
	if len(b) < h+n {
		return nil, b, errors.New("short bytes")
	}
	if dst == nil {
		dst = make([]byte, 0, n)
	}
	return append(dst[:0], b[h:h+n]...), b[h+n:], nil
}

// genValues are genMsg values that take every integer form and binary
// length form.
var genValues = []genMsg{
	{},
	{Seq: 1, Data: []byte{}},
	{Seq: 127, Data: []byte("x")},
	{Seq: 128}, {Seq: 255}, {Seq: 256}, {Seq: 65535}, {Seq: 65536},
	{Seq: math.MaxUint32}, {Seq: math.MaxUint32 + 1}, {Seq: math.MaxInt64},
	{Seq: -1}, {Seq: -32}, {Seq: -33}, {Seq: math.MinInt8}, {Seq: math.MinInt8 - 1},
	{Seq: math.MinInt16}, {Seq: math.MinInt16 - 1}, {Seq: math.MinInt32}, {Seq: math.MinInt32 - 1},
	{Seq: math.MinInt64},
	{Seq: 7, Data: bytes.Repeat([]byte{1}, 255)},
	{Seq: 7, Data: bytes.Repeat([]byte{2}, 256)},
	{Seq: 7, Data: bytes.Repeat([]byte{3}, 70000)},
}

// reflectionBody encodes v as a message body the way reflection does,
// with a msgpack encoder set up as the package's are.
func reflectionBody(t testing.TB, v any) []byte {
	t.Helper()
	var buf bytes.Buffer
	enc := msgpack.NewEncoder(&buf)
	enc.UseCompactInts(true)
	require.NoError(t, enc.Encode(v))
	return buf.Bytes()
}

func TestGeneratedEncodingIsByteIdenticalToReflection(t *testing.T) {
	for _, v := range genValues {
		resetGenCalls()
		g, r := v, genMsgRefl(v)
		want := reflectionBody(t, &r)

		got, err := encodeValueBody(&g)
		require.NoError(t, err)
		assert.Equal(t, want, got[bodyLenSize:], "RESPONSE/NOTIFY body, Seq %d", v.Seq)
		refl, err := encodeValueBody(&r)
		require.NoError(t, err)
		assert.Equal(t, refl, got, "the same body as the reflection path, length included")

		got, err = encodeRequestBody(1000, &g)
		require.NoError(t, err)
		assert.Equal(t, append([]byte{0xcd, 0x03, 0xe8}, want...), got[bodyLenSize:], "REQUEST body")

		data, owner, flags, err := encodeMessage(true, 0, "m", Metadata{"k": "v"}, &g)
		require.NoError(t, err)
		rdata, rowner, rflags, err := encodeMessage(true, 0, "m", Metadata{"k": "v"}, &r)
		require.NoError(t, err)
		assert.Equal(t, rdata, data, "body with a header")
		assert.Equal(t, rflags, flags)
		owner.done()
		rowner.done()

		got, err = appendEncoded([]byte{0xaa}, &g)
		require.NoError(t, err)
		assert.Equal(t, append([]byte{0xaa}, want...), got, "appendEncoded")

		assert.EqualValues(t, 4, genCalls.marshal.Load(), "MarshalMsg used for each of the four encodings")
	}
}

func TestGeneratedEncodingOfErrorDetails(t *testing.T) {
	resetGenCalls()
	e := (&RemoteError{Code: "c", Message: "m"}).WithDetails(&genMsg{Seq: 300, Data: []byte("d")})
	assert.Equal(t, reflectionBody(t, &genMsgRefl{Seq: 300, Data: []byte("d")}), e.DetailsRaw())
	assert.EqualValues(t, 1, genCalls.marshal.Load())
}

func TestGeneratedEncodingOfNilIsMsgpackNil(t *testing.T) {
	resetGenCalls()
	var nilGen *genMsg
	var nilRefl *genMsgRefl
	for _, c := range []struct {
		name       string
		gen, refl  any
		wantCalled int64
	}{
		{"nil *T", nilGen, nilRefl, 0},
		{"**T to nil", &nilGen, &nilRefl, 0},
		{"nil **T", (**genMsg)(nil), (**genMsgRefl)(nil), 0},
		{"**T", func() any { p := &genMsg{Seq: 3}; return &p }(), func() any { p := &genMsgRefl{Seq: 3}; return &p }(), 1},
	} {
		resetGenCalls()
		got, err := encodeValueBody(c.gen)
		require.NoError(t, err, c.name)
		want, err := encodeValueBody(c.refl)
		require.NoError(t, err, c.name)
		assert.Equal(t, want, got, c.name)
		assert.Equal(t, c.wantCalled, genCalls.marshal.Load(), c.name)
	}
	got, err := encodeValueBody(nilGen)
	require.NoError(t, err)
	assert.Equal(t, []byte{0xc0}, got[bodyLenSize:], "a nil pointer is msgpack nil, as reflection encodes it")
}

func TestGeneratedDecodingMatchesReflection(t *testing.T) {
	raws := [][]byte{
		{0x80}, // {}
		{0x81, 0xa3, 'z', 'z', 'z', 0x92, 0x01, 0xa1, 'x'},                                        // an unknown key, skipped
		{0x82, 0xa4, 'd', 'a', 't', 'a', 0xc4, 0x01, 0x09, 0xa3, 's', 'e', 'q', 0xd1, 0xff, 0x00}, // keys out of order
	}
	for _, v := range genValues {
		r := genMsgRefl(v)
		raws = append(raws, reflectionBody(t, &r))
	}
	for _, raw := range raws {
		resetGenCalls()
		var g genMsg
		var r genMsgRefl
		require.NoError(t, decodeValue(raw, &g, 0), "% x", raw[:min(len(raw), 16)])
		require.NoError(t, decodeValue(raw, &r, 0))
		assert.Equal(t, "UnmarshalMsg", g.decodedBy)
		g.decodedBy = ""
		assert.Equal(t, genMsg(r), g, "% x", raw[:min(len(raw), 16)])
		assert.EqualValues(t, 1, genCalls.unmarshal.Load())
	}
}

// A msgpack nil decodes into a generated type as it does by reflection:
// into the zero value (a *T set to nil), without calling UnmarshalMsg,
// which for a struct expects a map and would refuse it.
func TestGeneratedDecodingOfNilIsTheZeroValue(t *testing.T) {
	resetGenCalls()
	g := genMsg{Seq: 5, Data: []byte("x")}
	r := genMsgRefl{Seq: 5, Data: []byte("x")}
	require.NoError(t, decodeValue([]byte{0xc0}, &g, 0))
	require.NoError(t, decodeValue([]byte{0xc0}, &r, 0))
	assert.Equal(t, genMsg{}, g)
	assert.Equal(t, genMsgRefl{}, r)

	pg, pr := &genMsg{Seq: 5}, &genMsgRefl{Seq: 5}
	require.NoError(t, decodeValue([]byte{0xc0}, &pg, 0))
	require.NoError(t, decodeValue([]byte{0xc0}, &pr, 0))
	assert.Nil(t, pg)
	assert.Nil(t, pr)
	assert.Zero(t, genCalls.unmarshal.Load())

	_, err := (&genMsg{}).UnmarshalMsg([]byte{0xc0})
	assert.Error(t, err, "the generated method itself refuses nil")
}

// Into a pointer to a pointer (Invoke[*T] decodes into a **T), the *T is
// allocated if nil, as reflection does, and decoded by its method.
func TestGeneratedDecodingThroughAPointer(t *testing.T) {
	resetGenCalls()
	raw := reflectionBody(t, &genMsgRefl{Seq: 9})
	var p *genMsg
	require.NoError(t, decodeValue(raw, &p, 0))
	require.NotNil(t, p)
	assert.Equal(t, genMsg{Seq: 9, decodedBy: "UnmarshalMsg"}, *p)

	keep := &genMsg{Data: []byte("old")}
	p = keep
	require.NoError(t, decodeValue(raw, &p, 0))
	assert.Same(t, keep, p, "a non-nil *T is decoded into")
	assert.EqualValues(t, 2, genCalls.unmarshal.Load())
}

// Generated code trusts the lengths a message claims; the check before it
// is what refuses a hostile message, so UnmarshalMsg never sees one.
func TestGeneratedDecodingRefusesHostileInputBeforeUnmarshalMsg(t *testing.T) {
	valid := reflectionBody(t, &genMsgRefl{Seq: 1, Data: []byte("ok")})
	hostile := map[string][]byte{
		"map claiming 2^32-1 entries":    {0xdf, 0xff, 0xff, 0xff, 0xff},
		"array claiming 2^32-1 items":    {0xdd, 0xff, 0xff, 0xff, 0xff},
		"data claiming 2^32-1 bytes":     {0x82, 0xa3, 's', 'e', 'q', 0x01, 0xa4, 'd', 'a', 't', 'a', 0xc6, 0xff, 0xff, 0xff, 0xff, 0x00},
		"unknown key nesting 300 levels": append([]byte{0x81, 0xa1, 'x'}, bytes.Repeat([]byte{0x91}, 300)...),
		"a nil after the value":          append(bytes.Clone(valid), 0xc0),
		"a byte after the value":         append(bytes.Clone(valid), 0x01),
		"a value cut short":              valid[:len(valid)-1],
		"nothing":                        {},
		"an extension cut short":         {0x81, 0xa3, 's', 'e', 'q', 0xd4, 0x01},
	}
	for name, raw := range hostile {
		resetGenCalls()
		var g genMsg
		err := decodeValue(raw, &g, 0)
		require.Error(t, err, name)
		assert.True(t, strings.HasPrefix(err.Error(), "bokbok: decoding message: "), "%s: %v", name, err)
		assert.Zero(t, genCalls.unmarshal.Load(), "%s: UnmarshalMsg was called", name)
	}

	// The size limit is checked before UnmarshalMsg too.
	resetGenCalls()
	big := reflectionBody(t, &genMsgRefl{Data: make([]byte, 10000)})
	err := decodeValue(big, &genMsg{}, 1000)
	assert.ErrorIs(t, err, ErrMessageTooLarge)
	assert.Zero(t, genCalls.unmarshal.Load())
}

// genShort is a faulty generated type: its UnmarshalMsg reads only the
// first byte of the value it is given.
type genShort struct{ called bool }

// UnmarshalMsg reads one byte.
func (z *genShort) UnmarshalMsg(b []byte) ([]byte, error) { z.called = true; return b[1:], nil }

func TestGeneratedDecodingMustReadTheWholeValue(t *testing.T) {
	var s genShort
	err := decodeValue([]byte{0x91, 0x01}, &s, 0)
	assert.True(t, s.called)
	assert.EqualError(t, err, "bokbok: decoding message: 1 bytes left after the value")
}

// genFailing is a generated type whose MarshalMsg fails, or appends what
// out makes of the bytes it is given.
type genFailing struct {
	err error
	out func(b []byte) []byte
}

// MarshalMsg fails with z.err, or returns z.out(b).
func (z *genFailing) MarshalMsg(b []byte) ([]byte, error) {
	if z.err != nil {
		return b, z.err
	}
	return z.out(b), nil
}

func TestGeneratedEncodingErrors(t *testing.T) {
	boom := errors.New("boom")
	_, err := encodeValueBody(&genFailing{err: boom})
	assert.ErrorIs(t, err, boom)
	assert.EqualError(t, err, "bokbok: encoding message: boom")

	// What would break the message's framing is refused; a malformed value
	// is the peer's to refuse (see the test over a connection).
	for name, out := range map[string]func(b []byte) []byte{
		"nothing":             func(b []byte) []byte { return b },
		"not appended":        func(b []byte) []byte { return []byte{0xaa, 0xbb, 0xcc, 0xdd, 0xc0} },
		"bytes given dropped": func(b []byte) []byte { return []byte{0xc0} },
	} {
		_, err := encodeValueBody(&genFailing{out: out})
		require.Error(t, err, name)
		assert.True(t, strings.HasPrefix(err.Error(), "bokbok: encoding message: *bokbok.genFailing.MarshalMsg "), "%s: %v", name, err)
		_, err = encodeRequestBody(1, &genFailing{out: out})
		assert.Error(t, err, "%s, in a REQUEST", name)
	}

	// The pooled encoder is still sound after a failure.
	for range 3 {
		_, _ = encodeValueBody(&genFailing{out: func(b []byte) []byte { return append(b[:0], 0xc0) }})
		got, err := encodeValueBody("after")
		require.NoError(t, err)
		assert.Equal(t, reflectionBody(t, "after"), got[bodyLenSize:])
	}
}

// genEchoMux serves "gen.echo", decoding the request with Request.Decode
// into a genMsg and replying with a *genMsg; it records the raw request.
func genEchoMux(raw *[]byte) *Mux {
	mux := NewMux()
	mux.HandleFunc("gen.echo", func(ctx context.Context, req *Request) (any, error) {
		*raw = bytes.Clone(req.Raw())
		var in genMsg
		if err := req.Decode(&in); err != nil {
			return nil, err
		}
		if !bytes.Equal(req.Raw(), []byte{0xc0}) && in.decodedBy != "UnmarshalMsg" {
			return nil, errors.New("request not decoded by UnmarshalMsg")
		}
		return &genMsg{Seq: in.Seq + 1, Data: in.Data}, nil
	})
	return mux
}

func TestGeneratedCodecOverAConnection(t *testing.T) {
	var raw []byte
	client := muxPair(t, genEchoMux(&raw))
	ctx := testCtx(t)
	resetGenCalls()

	var out genMsg
	require.NoError(t, client.Invoke(ctx, "gen.echo", &genMsg{Seq: 41, Data: []byte("hi")}, &out))
	assert.Equal(t, genMsg{Seq: 42, Data: []byte("hi"), decodedBy: "UnmarshalMsg"}, out)
	assert.EqualValues(t, 2, genCalls.marshal.Load(), "MarshalMsg: the request here, the reply there")
	assert.EqualValues(t, 2, genCalls.unmarshal.Load(), "UnmarshalMsg: the request there, the reply here")
	assert.Equal(t, reflectionBody(t, &genMsgRefl{Seq: 41, Data: []byte("hi")}), raw, "the request as reflection sends it")

	// A peer decoding by reflection reads it the same.
	resp, err := client.RequestMethod(ctx, "gen.echo", &genMsg{Seq: 1})
	require.NoError(t, err)
	var r genMsgRefl
	require.NoError(t, resp.Decode(&r))
	assert.Equal(t, genMsgRefl{Seq: 2}, r)

	// A nil *genMsg travels as nil and decodes into the zero value.
	out = genMsg{Seq: 5}
	var nilMsg *genMsg
	err = client.Invoke(ctx, "gen.echo", nilMsg, &out)
	require.NoError(t, err)
	assert.Equal(t, []byte{0xc0}, raw)
	assert.Equal(t, int64(1), out.Seq, "the handler saw a zero genMsg")
}

func TestGeneratedCodecWithTypedHandlers(t *testing.T) {
	mux := NewMux()
	Handle(mux, "gen.next", func(ctx context.Context, req genMsg) (*genMsg, error) {
		if req.Seq < 0 {
			return nil, nil
		}
		return &genMsg{Seq: req.Seq + 1}, nil
	})
	client := muxPair(t, mux)
	ctx := testCtx(t)
	resetGenCalls()

	reply, err := Invoke[*genMsg](ctx, client, "gen.next", &genMsg{Seq: 1})
	require.NoError(t, err)
	require.NotNil(t, reply)
	assert.Equal(t, genMsg{Seq: 2, decodedBy: "UnmarshalMsg"}, *reply, "the reply decoded through the **genMsg")
	assert.EqualValues(t, 2, genCalls.marshal.Load(), "MarshalMsg: the request, and the reply through the **genMsg")

	reply, err = Invoke[*genMsg](ctx, client, "gen.next", &genMsg{Seq: -1})
	require.NoError(t, err)
	assert.Nil(t, reply, "a nil *genMsg reply arrives as nil")
}

func TestGeneratedEncodingFailureOverAConnection(t *testing.T) {
	var raw []byte
	client := muxPair(t, genEchoMux(&raw))
	ctx := testCtx(t)
	boom := errors.New("boom")
	err := client.Invoke(ctx, "gen.echo", &genFailing{err: boom}, nil)
	assert.ErrorIs(t, err, boom)
	err = client.Invoke(ctx, "gen.echo", &genFailing{out: func(b []byte) []byte { return b }}, nil)
	assert.ErrorContains(t, err, "appended nothing")
	assert.Nil(t, raw, "nothing was sent")

	// A malformed value is sent as it is, and the peer refuses that call.
	for name, out := range map[string]func(b []byte) []byte{
		"two values":        func(b []byte) []byte { return append(b, 0xc0, 0xc0) },
		"a value cut short": func(b []byte) []byte { return append(b, 0x92, 0x01) },
		"too deep":          func(b []byte) []byte { return append(append(b, bytes.Repeat([]byte{0x91}, 300)...), 0xc0) },
	} {
		err = client.Invoke(ctx, "gen.echo", &genFailing{out: out}, nil)
		assert.ErrorIs(t, err, ErrBadRequest, name)
		err = client.NotifyMethod(ctx, "gen.echo", &genFailing{out: out})
		assert.NoError(t, err, "%s: a notification is dropped by the peer", name)
	}
	assert.Nil(t, raw, "the handler never ran")

	var out genMsg
	require.NoError(t, client.Invoke(ctx, "gen.echo", &genMsg{Seq: 1}, &out), "the connection still works")
	assert.Equal(t, int64(2), out.Seq)
}

// A hostile peer's message for a generated type is refused before any
// handler runs, so UnmarshalMsg never sees it.
func TestGeneratedCodecRefusesHostileRequests(t *testing.T) {
	var raw []byte
	client := muxPair(t, genEchoMux(&raw))
	ctx := testCtx(t)
	resetGenCalls()
	bad := msgpack.RawMessage{0x82, 0xa3, 's', 'e', 'q', 0x01, 0xa4, 'd', 'a', 't', 'a', 0xc6, 0xff, 0xff, 0xff, 0xff}
	err := client.Invoke(ctx, "gen.echo", bad, nil)
	assert.ErrorIs(t, err, ErrBadRequest)
	assert.Zero(t, genCalls.unmarshal.Load())
	assert.Nil(t, raw, "the handler did not run")
}

// customMsg has msgpack's own methods, CustomEncoder and CustomDecoder:
// it travels as [n, "custom"].
type customMsg struct {
	N         int64
	decodedBy string
}

// EncodeMsgpack writes [m.N, "custom"].
func (m *customMsg) EncodeMsgpack(e *msgpack.Encoder) error {
	if err := e.EncodeArrayLen(2); err != nil {
		return err
	}
	if err := e.EncodeInt(m.N); err != nil {
		return err
	}
	return e.EncodeString("custom")
}

// DecodeMsgpack reads [n, "custom"].
func (m *customMsg) DecodeMsgpack(d *msgpack.Decoder) error {
	if n, err := d.DecodeArrayLen(); err != nil || n != 2 {
		return fmt.Errorf("customMsg: want an array of 2: %d, %v", n, err)
	}
	var err error
	if m.N, err = d.DecodeInt64(); err != nil {
		return err
	}
	if s, err := d.DecodeString(); err != nil || s != "custom" {
		return fmt.Errorf("customMsg: want \"custom\": %q, %v", s, err)
	}
	m.decodedBy = "DecodeMsgpack"
	return nil
}

// marshalerMsg has msgpack's Marshaler and Unmarshaler: it travels as
// the string "m:<n>".
type marshalerMsg struct{ N int64 }

// MarshalMsgpack encodes m as "m:<n>".
func (m *marshalerMsg) MarshalMsgpack() ([]byte, error) {
	return msgpack.Marshal(fmt.Sprintf("m:%d", m.N))
}

// UnmarshalMsgpack decodes "m:<n>".
func (m *marshalerMsg) UnmarshalMsgpack(b []byte) error {
	var s string
	if err := msgpack.Unmarshal(b, &s); err != nil {
		return err
	}
	_, err := fmt.Sscanf(s, "m:%d", &m.N)
	return err
}

// bothMsg has msgp's methods and msgpack's own: msgpack's are used, as
// they were before generated codecs.
type bothMsg struct{ customMsg }

// MarshalMsg counts its calls and writes what EncodeMsgpack would not.
func (b *bothMsg) MarshalMsg(p []byte) ([]byte, error) {
	genCalls.both.Add(1)
	return append(p, 0xc0), nil
}

// UnmarshalMsg counts its calls.
func (b *bothMsg) UnmarshalMsg(p []byte) ([]byte, error) {
	genCalls.both.Add(1)
	return p[1:], nil
}

func TestCustomEncoderDecoderStillUsed(t *testing.T) {
	mux := NewMux()
	mux.HandleFunc("custom", func(ctx context.Context, req *Request) (any, error) {
		if !bytes.Equal(req.Raw(), []byte{0x92, 0x05, 0xa6, 'c', 'u', 's', 't', 'o', 'm'}) {
			return nil, fmt.Errorf("raw request % x", req.Raw())
		}
		var in customMsg
		if err := req.Decode(&in); err != nil {
			return nil, err
		}
		return &customMsg{N: in.N * 2}, nil
	})
	mux.HandleFunc("marshaler", func(ctx context.Context, req *Request) (any, error) {
		var in marshalerMsg
		if err := req.Decode(&in); err != nil {
			return nil, err
		}
		return &marshalerMsg{N: in.N * 2}, nil
	})
	mux.HandleFunc("both", func(ctx context.Context, req *Request) (any, error) {
		var in bothMsg
		if err := req.Decode(&in); err != nil {
			return nil, err
		}
		return &bothMsg{customMsg{N: in.N * 2}}, nil
	})
	Handle(mux, "custom.typed", func(ctx context.Context, req customMsg) (customMsg, error) {
		return customMsg{N: req.N + 1}, nil
	})
	client := muxPair(t, mux)
	ctx := testCtx(t)
	resetGenCalls()

	var c customMsg
	require.NoError(t, client.Invoke(ctx, "custom", &customMsg{N: 5}, &c))
	assert.Equal(t, customMsg{N: 10, decodedBy: "DecodeMsgpack"}, c)

	var m marshalerMsg
	require.NoError(t, client.Invoke(ctx, "marshaler", &marshalerMsg{N: 7}, &m))
	assert.Equal(t, marshalerMsg{N: 14}, m)

	var b bothMsg
	require.NoError(t, client.Invoke(ctx, "both", &bothMsg{customMsg{N: 3}}, &b))
	assert.Equal(t, bothMsg{customMsg{N: 6, decodedBy: "DecodeMsgpack"}}, b)
	assert.Zero(t, genCalls.both.Load(), "msgpack's own methods win over msgp's")

	typed, err := Invoke[customMsg](ctx, client, "custom.typed", &customMsg{N: 1})
	require.NoError(t, err)
	assert.Equal(t, customMsg{N: 2, decodedBy: "DecodeMsgpack"}, typed)
}

func BenchmarkGeneratedCodec(b *testing.B) {
	msg := genMsg{Seq: 12345, Data: []byte("a small message body")}
	b.Run("reflection", func(b *testing.B) {
		in := genMsgRefl(msg)
		var out genMsgRefl
		benchmarkCodec(b, &in, &out)
	})
	b.Run("generated", func(b *testing.B) {
		in := msg
		var out genMsg
		benchmarkCodec(b, &in, &out)
	})
}

// benchmarkCodec encodes in as a message body and decodes it into out, as
// sending and receiving a message does.
func benchmarkCodec(b *testing.B, in, out any) {
	b.ReportAllocs()
	for b.Loop() {
		data, owner, _, err := encodeMessage(false, 0, "", nil, in)
		if err != nil {
			b.Fatal(err)
		}
		if err := decodeValue(data[bodyLenSize:], out, 1<<20); err != nil {
			b.Fatal(err)
		}
		owner.done()
	}
}
