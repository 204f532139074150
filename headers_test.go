package bokbok

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Tests of message headers (PROTOCOL.md §5.1): the header grammar and
// bounds, parsed and encoded; the vectors of §14, byte for byte against
// the encoders and a real Conn; and the receiver's rules per message kind,
// driven from a raw peer (the rob* harness of protocol_test.go).

// hdrPeer is what a raw peer that reads headers announces.
var hdrPeer = settings{MaxMessageSize: 1 << 20, NotifyWindow: 16, MaxConcurrentHandlers: 16, Headers: 1}

// hdrFrame encodes a whole message as encodeMessage does, in one frame.
func hdrFrame(t testing.TB, kind frameKind, id uint32, method string, md Metadata, v any) []byte {
	t.Helper()
	data, owner, flags, err := encodeMessage(kind == kindRequest, 0, method, md, v)
	require.NoError(t, err)
	defer owner.done()
	require.LessOrEqual(t, len(data), maxFramePayload)
	return frameBytes(kind, flags, id, data)
}

// The vectors of PROTOCOL.md §14, "Message headers". The ids are those a
// fresh Conn uses: its first request is 1, then a notification 2, then a
// request 3 (TestHeadersWireVectors).
func hdrVecRequest(t testing.TB) []byte {
	return hdrFrame(t, kindRequest, 1, "kv.get", Metadata{"tenant": "t1"}, map[string]string{"key": "a"})
}

func hdrVecResponse(t testing.TB) []byte {
	return hdrFrame(t, kindResponse, 1, "", Metadata{"cache": "hit"}, "v1")
}

func hdrVecNotify(t testing.TB) []byte {
	return hdrFrame(t, kindNotify, 2, "log.line", nil, "hi")
}

func hdrVecError(t testing.TB) []byte {
	out := errorMsgWith(3, Errorf("app.not_found", "no key b"), Metadata{"shard": "3"})
	return frameBytes(kindError, out.flags, 3, out.data)
}

// SETTINGS as the Go side sends it with the default Config, and as a
// version 1 peer without headers sends it.
func hdrVecSettings(t testing.TB) []byte {
	defaults, err := (*Config)(nil).withDefaults()
	require.NoError(t, err)
	return (&Conn{cfg: defaults}).settingsFrame()
}

func hdrVecSettingsNoHeaders(t testing.TB) []byte {
	s := settings{MaxMessageSize: DefaultMaxMessageSize, NotifyWindow: DefaultNotifyWindow, MaxConcurrentHandlers: DefaultMaxConcurrentHandlers}
	return frameBytes(kindSettings, 0, 0, s.encode())
}

// Headers of §14 a receiver refuses, and the one it accepts.
// They are clipped, so that appending to one copies it.
var (
	hdrVecNonIntKey    = []byte{0x81, 0xa1, 'm', 0xa1, 'x'}                                                                 // {"m": "x"}
	hdrVecLongMethod   = slices.Clip(append([]byte{0x81, 0x00, 0xda, 0x01, 0x00}, strings.Repeat("a", 256)...))             // {0: 256 bytes as str 16}
	hdrVecIntValue     = []byte{0x81, 0x01, 0x81, 0xa1, 'k', 0x01}                                                          // {1: {"k": 1}}
	hdrVecMethodTwice  = []byte{0x82, 0x00, 0xa1, 'a', 0x00, 0xa1, 'b'}                                                     // {0: "a", 0: "b"}
	hdrVecUnknownKey   = []byte{0x83, 0x00, 0xa1, 'm', 0x07, 0x92, 0xc0, 0xa1, 'x', 0x01, 0x81, 0xa1, 'k', 0xc4, 0x01, 'v'} // {0: "m", 7: [nil, "x"], 1: {"k": bin "v"}}
	hdrVecLongMethodOK = slices.Clip(append([]byte{0x81, 0x00, 0xd9, 0xff}, strings.Repeat("a", 255)...))                   // {0: 255 bytes as str 8}
)

func init() {
	static := func(b []byte) func(t *testing.T) []byte { return func(*testing.T) []byte { return b } }
	wrap := func(f func(testing.TB) []byte) func(t *testing.T) []byte {
		return func(t *testing.T) []byte { return f(t) }
	}
	protocolExamples = append(protocolExamples,
		protocolExample{"SETTINGS of a version 1 peer without headers", wrap(hdrVecSettingsNoHeaders)},
		protocolExample{`header vector: REQUEST id 1, method "kv.get", metadata {"tenant": "t1"}, message {"key": "a"}`, wrap(hdrVecRequest)},
		protocolExample{`header vector: RESPONSE id 1, metadata {"cache": "hit"}, reply "v1"`, wrap(hdrVecResponse)},
		protocolExample{`header vector: NOTIFY id 2, method "log.line", message "hi"`, wrap(hdrVecNotify)},
		protocolExample{`header vector: ERROR id 3, metadata {"shard": "3"}`, wrap(hdrVecError)},
		protocolExample{"header vector: a non-integer key", static(hdrVecNonIntKey)},
		protocolExample{"header vector: a metadata value that is an integer", static(hdrVecIntValue)},
		protocolExample{"header vector: key 0 twice", static(hdrVecMethodTwice)},
		protocolExample{"header vector: an unknown key 7, skipped", static(hdrVecUnknownKey)},
	)
}

// TestHeadersDocVectors checks what §14 says of the header vectors: the
// frames are what encodeMessage and errorMsgWith make, field by field as
// the text describes them; the refused headers are refused, and the
// accepted one gives method "m" and metadata {"k": "v"}.
func TestHeadersDocVectors(t *testing.T) {
	t.Run("REQUEST", func(t *testing.T) {
		want := bytes.Join([][]byte{
			{0x02, 0x02, 0x00, 0x21, 0, 0, 0, 1}, // REQUEST, HEADER, 33 bytes, id 1
			{0, 0, 0, 0x1d},                      // body of 29 bytes
			{0x82, 0x00, 0xa6}, []byte("kv.get"), // {0: "kv.get",
			{0x01, 0x81, 0xa6}, []byte("tenant"), {0xa2}, []byte("t1"), //  1: {"tenant": "t1"}}
			{0x00},                                           // no deadline
			{0x81, 0xa3}, []byte("key"), {0xa1}, []byte("a"), // {"key": "a"}
		}, nil)
		require.Equal(t, hexDump(want), hexDump(hdrVecRequest(t)))
		ruleDocHas(t, want)
	})
	t.Run("RESPONSE", func(t *testing.T) {
		want := bytes.Join([][]byte{
			{0x03, 0x02, 0x00, 0x14, 0, 0, 0, 1}, {0, 0, 0, 0x10},
			{0x81, 0x01, 0x81, 0xa5}, []byte("cache"), {0xa3}, []byte("hit"),
			{0xa2}, []byte("v1"),
		}, nil)
		require.Equal(t, hexDump(want), hexDump(hdrVecResponse(t)))
	})
	t.Run("NOTIFY", func(t *testing.T) {
		want := bytes.Join([][]byte{
			{0x05, 0x02, 0x00, 0x12, 0, 0, 0, 2}, {0, 0, 0, 0x0e},
			{0x81, 0x00, 0xa8}, []byte("log.line"), {0xa2}, []byte("hi"),
		}, nil)
		require.Equal(t, hexDump(want), hexDump(hdrVecNotify(t)))
	})
	t.Run("ERROR", func(t *testing.T) {
		want := bytes.Join([][]byte{
			{0x04, 0x02, 0x00, 0x27, 0, 0, 0, 3}, {0, 0, 0, 0x23},
			{0x81, 0x01, 0x81, 0xa5}, []byte("shard"), {0xa1}, []byte("3"),
			{0x92, 0xad}, []byte("app.not_found"), {0xa8}, []byte("no key b"),
		}, nil)
		require.Equal(t, hexDump(want), hexDump(hdrVecError(t)))
	})
	t.Run("SETTINGS", func(t *testing.T) {
		got := hdrVecSettings(t)
		require.Len(t, got, 73)
		// The Go SETTINGS is the version 1 one with headers: 1 added last.
		old := hdrVecSettingsNoHeaders(t)
		want := append(appendFrameHeader(nil, kindSettings, 0, len(old)-frameHeaderSize+9, 0), 0x84)
		want = append(want, old[frameHeaderSize+1:]...)
		want = append(append(want, 0xa7), "headers"...)
		want = append(want, 0x01)
		require.Equal(t, hexDump(want), hexDump(got))
		ruleDocHas(t, got)
		s, err := parseSettings(got[frameHeaderSize:])
		require.NoError(t, err)
		assert.True(t, s.headers())
		s, err = parseSettings(old[frameHeaderSize:])
		require.NoError(t, err)
		assert.False(t, s.headers(), "no headers key: the peer reads no headers")
	})
	t.Run("refused headers", func(t *testing.T) {
		for name, h := range map[string][]byte{
			"non-integer key": hdrVecNonIntKey, "integer value": hdrVecIntValue, "key 0 twice": hdrVecMethodTwice,
		} {
			ruleDocHas(t, h)
			_, _, err := parseHeader(append(h, 0x00, 0xc0), nil)
			assert.ErrorIs(t, err, ErrBadMetadata, name)
		}
		ruleDocHasInline(t, hdrVecLongMethod[:5])
		_, _, err := parseHeader(append(hdrVecLongMethod, 0x00, 0xc0), nil)
		assert.ErrorIs(t, err, ErrBadMetadata)
		ruleDocHasInline(t, hdrVecLongMethodOK[:4])
		h, rest, err := parseHeader(append(hdrVecLongMethodOK, 0x00, 0xc0), nil)
		require.NoError(t, err)
		assert.Equal(t, strings.Repeat("a", 255), h.method)
		assert.Equal(t, []byte{0x00, 0xc0}, rest)
	})
	t.Run("accepted header with an unknown key", func(t *testing.T) {
		ruleDocHas(t, hdrVecUnknownKey)
		h, rest, err := parseHeader(append(slices.Clone(hdrVecUnknownKey), 0xc0), nil)
		require.NoError(t, err)
		assert.Equal(t, "m", h.method)
		assert.Equal(t, Metadata{"k": "v"}, h.md)
		assert.Equal(t, []byte{0xc0}, rest)
	})
}

// ruleDocHasInline fails the test unless PROTOCOL.md shows b inline, as
// `xx xx`.
func ruleDocHasInline(t *testing.T, b []byte) {
	t.Helper()
	doc, err := ruleDocOnce()
	require.NoError(t, err)
	if !bytes.Contains(doc, []byte("`"+hexDump(b)+"`")) {
		t.Errorf("PROTOCOL.md lacks `%s`", hexDump(b))
	}
}

// hdrStr is a msgpack string of n bytes of c, in its shortest form.
func hdrStr(n int, c byte) []byte { return appendMsgpackStr(nil, strings.Repeat(string(c), n)) }

// hdrMD is a metadata map (its msgpack encoding) of n entries with keys
// k000, k001, … and values "v".
func hdrMD(n int) ([]byte, Metadata) {
	md := make(Metadata, n)
	b := appendMsgpackMapLen(nil, n)
	for i := range n {
		k := fmt.Sprintf("k%03d", i)
		md[k] = "v"
		b = append(appendMsgpackStr(b, k), 0xa1, 'v')
	}
	return b, md
}

// TestParseHeader: the grammar and bounds of §5.1, accepted and refused,
// each bound at its limit and one over.
func TestParseHeader(t *testing.T) {
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	md64, want64 := hdrMD(64)
	md65, _ := hdrMD(65)
	// Headers of exactly maxHeaderBytes, and one byte more: an unknown
	// key with a binary value, and metadata with a long value.
	unknownAt := func(n int) []byte { // 81 07 c5 LL LL + bytes: 5 + len
		return cat([]byte{0x81, 0x07}, appendMsgpackBin(nil, strings.Repeat("x", n-5)))
	}
	valueAt := func(n int) []byte { // 81 01 81 a1 6b da LL LL + bytes: 8 + len
		return cat([]byte{0x81, 0x01, 0x81, 0xa1, 'k'}, hdrStr(n-8, 'v'))
	}
	deep := func(levels int) []byte { return append(bytes.Repeat([]byte{0x91}, levels), 0xc0) }
	cases := []struct {
		name   string
		hdr    []byte
		method string
		md     Metadata
		err    string // refused: part of the reason
	}{
		{name: "empty map", hdr: []byte{0x80}},
		{name: "method only", hdr: cat([]byte{0x81, 0x00}, hdrStr(6, 'm')), method: "mmmmmm"},
		{name: "metadata only", hdr: []byte{0x81, 0x01, 0x81, 0xa1, 'k', 0xa1, 'v'}, md: Metadata{"k": "v"}},
		{name: "metadata first", hdr: []byte{0x82, 0x01, 0x81, 0xa1, 'k', 0xa1, 'v', 0x00, 0xa1, 'm'}, method: "m", md: Metadata{"k": "v"}},
		{name: "empty method and metadata", hdr: []byte{0x82, 0x00, 0xa0, 0x01, 0x80}},
		{name: "binary values", hdr: []byte{0x81, 0x01, 0x82, 0xa1, 'a', 0xc4, 0x01, 0xff, 0xa1, 'b', 0xc4, 0x00}, md: Metadata{"a": "\xff", "b": ""}},
		{name: "non-UTF-8 method and key", hdr: []byte{0x82, 0x00, 0xa1, 0xff, 0x01, 0x81, 0xa1, 0xfe, 0xa0}, method: "\xff", md: Metadata{"\xfe": ""}},
		{name: "longer encodings", hdr: []byte{0xde, 0, 2, 0xcc, 0x00, 0xda, 0, 1, 'm', 0xd0, 0x01, 0xdf, 0, 0, 0, 1, 0xdb, 0, 0, 0, 1, 'k', 0xc6, 0, 0, 0, 1, 'v'},
			method: "m", md: Metadata{"k": "v"}},
		{name: "method of 255 bytes", hdr: hdrVecLongMethodOK, method: strings.Repeat("a", 255)},
		{name: "method of 256 bytes", hdr: hdrVecLongMethod, err: "method is not a string of at most 255 bytes"},
		{name: "metadata key of 255 bytes", hdr: cat([]byte{0x81, 0x01, 0x81}, hdrStr(255, 'k'), []byte{0xa0}), md: Metadata{strings.Repeat("k", 255): ""}},
		{name: "metadata key of 256 bytes", hdr: cat([]byte{0x81, 0x01, 0x81}, hdrStr(256, 'k'), []byte{0xa0}), err: "not a string of 1 to 255 bytes"},
		{name: "empty metadata key", hdr: []byte{0x81, 0x01, 0x81, 0xa0, 0xa0}, err: "not a string of 1 to 255 bytes"},
		{name: "64 metadata entries", hdr: cat([]byte{0x81, 0x01}, md64), md: want64},
		{name: "65 metadata entries", hdr: cat([]byte{0x81, 0x01}, md65), err: "65 metadata entries, limit 64"},
		{name: "16384 bytes, unknown key", hdr: unknownAt(maxHeaderBytes)},
		{name: "16385 bytes, unknown key", hdr: unknownAt(maxHeaderBytes + 1), err: "longer than 16384 bytes"},
		{name: "16384 bytes, metadata", hdr: valueAt(maxHeaderBytes), md: Metadata{"k": strings.Repeat("v", maxHeaderBytes-8)}},
		{name: "16385 bytes, metadata", hdr: valueAt(maxHeaderBytes + 1), err: "longer than 16384 bytes"},
		{name: "unknown key 7, skipped", hdr: hdrVecUnknownKey, method: "m", md: Metadata{"k": "v"}},
		{name: "unknown keys repeated, largest key", hdr: []byte{0x83, 0x02, 0xc0, 0x02, 0x80, 0xcf, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xd6, 0x01, 1, 2, 3, 4}},
		{name: "unknown key nested 256 levels", hdr: cat([]byte{0x81, 0x09}, deep(256))},

		{name: "not a map", hdr: []byte{0x90}, err: "not a msgpack map"},
		{name: "nil", hdr: []byte{0xc0}, err: "not a msgpack map"},
		{name: "nothing", hdr: nil, err: "not a msgpack map"},
		{name: "truncated map 16", hdr: []byte{0xde, 0x00}, err: "not a msgpack map"},
		{name: "non-integer key", hdr: hdrVecNonIntKey, err: "not a non-negative integer"},
		{name: "negative key", hdr: []byte{0x81, 0xff, 0xa0}, err: "not a non-negative integer"},
		{name: "negative int8 key", hdr: []byte{0x81, 0xd0, 0x80, 0xa0}, err: "not a non-negative integer"},
		{name: "float key", hdr: []byte{0x81, 0xca, 0, 0, 0, 0, 0xa0}, err: "not a non-negative integer"},
		{name: "nil key", hdr: []byte{0x81, 0xc0, 0xa0}, err: "not a non-negative integer"},
		{name: "key 0 twice", hdr: hdrVecMethodTwice, err: "key 0 appears more than once"},
		{name: "key 1 twice", hdr: []byte{0x82, 0x01, 0x80, 0x01, 0x80}, err: "key 1 appears more than once"},
		{name: "method as binary", hdr: []byte{0x81, 0x00, 0xc4, 0x01, 'm'}, err: "method is not a string"},
		{name: "method nil", hdr: []byte{0x81, 0x00, 0xc0}, err: "method is not a string"},
		{name: "method longer than the body", hdr: []byte{0x81, 0x00, 0xa5, 'm'}, err: "method is not a string"},
		{name: "metadata an array", hdr: []byte{0x81, 0x01, 0x91, 0xa0}, err: "metadata is not a msgpack map"},
		{name: "metadata value an integer", hdr: hdrVecIntValue, err: `"k" has a value that is neither a string nor binary`},
		{name: "metadata value nil", hdr: []byte{0x81, 0x01, 0x81, 0xa1, 'k', 0xc0}, err: "neither a string nor binary"},
		{name: "metadata value an array", hdr: []byte{0x81, 0x01, 0x81, 0xa1, 'k', 0x91, 0xa0}, err: "neither a string nor binary"},
		{name: "metadata value longer than the body", hdr: []byte{0x81, 0x01, 0x81, 0xa1, 'k', 0xc4, 0x09}, err: "neither a string nor binary"},
		{name: "metadata key binary", hdr: []byte{0x81, 0x01, 0x81, 0xc4, 0x01, 'k', 0xa0}, err: "metadata key that is not a string"},
		{name: "metadata key an integer", hdr: []byte{0x81, 0x01, 0x81, 0x01, 0xa0}, err: "metadata key that is not a string"},
		{name: "metadata key twice", hdr: []byte{0x81, 0x01, 0x82, 0xa1, 'k', 0xa0, 0xa1, 'k', 0xa0}, err: `metadata key "k" appears more than once`},
		{name: "metadata key twice, str and str 8", hdr: []byte{0x81, 0x01, 0x82, 0xa1, 'k', 0xa0, 0xd9, 0x01, 'k', 0xa0}, err: "appears more than once"},
		{name: "fewer entries than announced", hdr: []byte{0x82, 0x00, 0xa0}, err: "not a non-negative integer"},
		{name: "unknown key without a value", hdr: []byte{0x81, 0x07}, err: "key 7 has a value that is not well-formed"},
		{name: "unknown key, truncated value", hdr: []byte{0x81, 0x07, 0x92, 0xc0}, err: "key 7 has a value that is not well-formed"},
		{name: "unknown key nested 257 levels", hdr: cat([]byte{0x81, 0x09}, deep(257)), err: "key 9 has a value that is not well-formed"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if tc.err != "" {
				// Alone: bytes after it could complete a truncated header.
				_, _, err := parseHeader(slices.Clone(tc.hdr), nil)
				require.ErrorIs(t, err, ErrBadMetadata)
				assert.Contains(t, err.Error(), tc.err)
				return
			}
			body := append(slices.Clone(tc.hdr), 0x00, 0xa1, 'x') // the rest of a REQUEST body
			h, rest, err := parseHeader(body, nil)
			require.NoError(t, err)
			assert.Equal(t, tc.method, h.method)
			assert.Equal(t, tc.md, h.md)
			assert.Equal(t, []byte{0x00, 0xa1, 'x'}, rest, "the body after the header")

			// The interner gives the same method.
			var mi methodInterner
			h2, _, err := parseHeader(body, mi.intern)
			require.NoError(t, err)
			assert.Equal(t, tc.method, h2.method)
		})
	}
}

// TestAppendHeader: what the Go sender encodes, each bound at its limit
// and one over; a header it encodes parses back to what it encoded.
func TestAppendHeader(t *testing.T) {
	many := func(n int) Metadata {
		md := make(Metadata, n)
		for i := range n {
			md[fmt.Sprintf("k%03d", i)] = "v"
		}
		return md
	}
	cases := []struct {
		name   string
		method string
		md     Metadata
		want   []byte // if not nil: the exact encoding
		size   int    // if not 0: the encoding's length
		err    bool
	}{
		{name: "method", method: "kv.get", want: []byte{0x81, 0x00, 0xa6, 'k', 'v', '.', 'g', 'e', 't'}},
		{name: "metadata, sorted, str or bin", md: Metadata{"b": "\xff", "a": "x"},
			want: []byte{0x81, 0x01, 0x82, 0xa1, 'a', 0xa1, 'x', 0xa1, 'b', 0xc4, 0x01, 0xff}},
		{name: "both", method: "m", md: Metadata{"k": ""}, want: []byte{0x82, 0x00, 0xa1, 'm', 0x01, 0x81, 0xa1, 'k', 0xa0}},
		{name: "empty metadata left out", method: "m", md: Metadata{}, want: []byte{0x81, 0x00, 0xa1, 'm'}},
		{name: "method of 255 bytes", method: strings.Repeat("a", 255), want: hdrVecLongMethodOK},
		{name: "method of 256 bytes", method: strings.Repeat("a", 256), err: true},
		{name: "64 entries", md: many(64), size: 2 + 3 + 64*7}, // 81 01 de 00 40, then "k000" "v" …
		{name: "65 entries", md: many(65), err: true},
		{name: "key of 255 bytes", md: Metadata{strings.Repeat("k", 255): ""}, size: 3 + 2 + 255 + 1},
		{name: "key of 256 bytes", md: Metadata{strings.Repeat("k", 256): ""}, err: true},
		{name: "empty key", md: Metadata{"": "v"}, err: true},
		{name: "16384 bytes", md: Metadata{"k": strings.Repeat("v", maxHeaderBytes-8)}, size: maxHeaderBytes},
		{name: "16385 bytes", md: Metadata{"k": strings.Repeat("v", maxHeaderBytes-7)}, err: true},
		{name: "16385 bytes with a method", method: "m", md: Metadata{"k": strings.Repeat("v", maxHeaderBytes-10)}, err: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			prefix := []byte{1, 2, 3}
			b, err := appendHeader(slices.Clone(prefix), tc.method, tc.md)
			if tc.err {
				require.ErrorIs(t, err, ErrBadMetadata)
				assert.Equal(t, prefix, b, "nothing appended")
				// Nor does a message with it get encoded.
				_, _, _, err = encodeMessage(true, 0, tc.method, tc.md, "x")
				require.ErrorIs(t, err, ErrBadMetadata)
				return
			}
			require.NoError(t, err)
			require.Equal(t, prefix, b[:3])
			enc := b[3:]
			if tc.want != nil {
				assert.Equal(t, hexDump(tc.want), hexDump(enc))
			}
			if tc.size != 0 {
				assert.Len(t, enc, tc.size)
			}
			h, rest, err := parseHeader(enc, nil)
			require.NoError(t, err)
			assert.Empty(t, rest)
			assert.Equal(t, tc.method, h.method)
			if len(tc.md) == 0 {
				assert.Nil(t, h.md)
			} else {
				assert.Equal(t, tc.md, h.md)
			}
		})
	}

	t.Run("encodeMessage: no header, no flag", func(t *testing.T) {
		data, owner, flags, err := encodeMessage(true, 0, "", nil, "x")
		require.NoError(t, err)
		defer owner.done()
		assert.Zero(t, flags)
		plain, err := encodeRequestBody(0, "x")
		require.NoError(t, err)
		assert.Equal(t, plain, data)
	})
	t.Run("encodeMessage: header, then the version 1 body", func(t *testing.T) {
		data, owner, flags, err := encodeMessage(true, 5_000_000, "m", nil, "x")
		require.NoError(t, err)
		defer owner.done()
		assert.Equal(t, flagHeader, flags)
		plain, err := encodeRequestBody(5_000_000, "x")
		require.NoError(t, err)
		body := append([]byte{0x81, 0x00, 0xa1, 'm'}, plain[bodyLenSize:]...) // the header, then the version 1 body
		assert.Equal(t, hexDump(append(binary.BigEndian.AppendUint32(nil, uint32(len(body))), body...)), hexDump(data))
	})
}

// hdrRecorder is a Handler that records what it is given and answers as
// the vectors say: kv.get of key "a" is "v1" with metadata {"cache":
// "hit"}; of another key an app.not_found error with {"shard": "3"}; a
// message "ping" is answered "pong".
type hdrRecorder struct {
	calls atomic.Int32
	got   chan hdrSeen
}

type hdrSeen struct {
	method string
	md     Metadata
	notify bool
	msg    any
	size   int
}

func newHdrRecorder() *hdrRecorder { return &hdrRecorder{got: make(chan hdrSeen, 64)} }

func (h *hdrRecorder) ServeBokbok(ctx context.Context, req *Request) (any, error) {
	h.calls.Add(1)
	var msg any
	if err := req.Decode(&msg); err != nil {
		return nil, err
	}
	s := hdrSeen{method: req.Method(), md: req.Metadata(), notify: req.IsNotification(), msg: msg, size: len(req.Raw())}
	if RequestFromContext(ctx) != req {
		return nil, errors.New("RequestFromContext is not the request")
	}
	h.got <- s
	switch m := msg.(type) {
	case string:
		if m == "ping" {
			return "pong", nil
		}
	case map[string]any:
		if m["key"] == "a" {
			req.SetReplyMetadata(Metadata{"cache": "hit"})
			return "v1", nil
		}
		req.SetReplyMetadata(Metadata{"shard": "3"})
		return nil, Errorf("app.not_found", "no key %v", m["key"])
	}
	return len(req.Raw()), nil
}

func (h *hdrRecorder) next(t *testing.T) hdrSeen {
	t.Helper()
	return ruleWait(t, h.got)
}

// hdrNextMsg returns the next message frame the Conn sent, skipping
// control frames.
func hdrNextMsg(t *testing.T, rp *robPeer) robFrame {
	t.Helper()
	for {
		switch f := rp.next(t); f.kind {
		case kindRequest, kindResponse, kindError, kindNotify:
			return f
		}
	}
}

func hdrWire(f robFrame) []byte { return robFrameBytes(f.kind, f.flags, f.id, f.payload) }

// TestHeadersWireVectors: a real Conn sends exactly the §14 vectors, and
// reads them as §14 says.
func TestHeadersWireVectors(t *testing.T) {
	h := newHdrRecorder()
	rc := robOpen(t, &Config{Handler: h}, hdrPeer)
	ctx := WithMetadata(context.Background(), Metadata{"tenant": "t1"})

	// Our request 1: the REQUEST vector; the peer answers with the
	// RESPONSE vector.
	type result struct {
		resp *Response
		err  error
	}
	res := make(chan result, 1)
	go func() {
		r, err := rc.RequestMethod(ctx, "kv.get", map[string]string{"key": "a"})
		res <- result{r, err}
	}()
	require.Equal(t, hexDump(hdrVecRequest(t)), hexDump(hdrWire(hdrNextMsg(t, rc.rp))))
	rc.rp.write(hdrVecResponse(t))
	r := ruleWait(t, res)
	require.NoError(t, r.err)
	var reply string
	require.NoError(t, r.resp.Decode(&reply))
	assert.Equal(t, "v1", reply)
	assert.Equal(t, Metadata{"cache": "hit"}, r.resp.Metadata())

	// Our notification 2: the NOTIFY vector.
	require.NoError(t, rc.NotifyMethod(context.Background(), "log.line", "hi"))
	require.Equal(t, hexDump(hdrVecNotify(t)), hexDump(hdrWire(hdrNextMsg(t, rc.rp))))

	// Our request 3, answered with the ERROR vector.
	go func() {
		r, err := rc.RequestMethod(ctx, "kv.get", map[string]string{"key": "b"})
		res <- result{r, err}
	}()
	f := hdrNextMsg(t, rc.rp)
	require.Equal(t, uint32(3), f.id)
	rc.rp.write(hdrVecError(t))
	r = ruleWait(t, res)
	var rerr *RemoteError
	require.ErrorAs(t, r.err, &rerr)
	assert.Equal(t, "app.not_found", rerr.Code)
	assert.Equal(t, "no key b", rerr.Message)
	assert.Equal(t, Metadata{"shard": "3"}, rerr.Metadata())

	// The peer sends the REQUEST vector: the handler sees its method,
	// metadata and message, and its answer is the RESPONSE vector.
	rc.rp.write(hdrVecRequest(t))
	s := h.next(t)
	assert.Equal(t, hdrSeen{method: "kv.get", md: Metadata{"tenant": "t1"}, msg: map[string]any{"key": "a"}, size: 7}, s)
	require.Equal(t, hexDump(hdrVecResponse(t)), hexDump(hdrWire(hdrNextMsg(t, rc.rp))))

	// The NOTIFY vector, handled and credited.
	rc.rp.write(hdrVecNotify(t))
	assert.Equal(t, hdrSeen{method: "log.line", notify: true, msg: "hi", size: 3}, h.next(t))
	assert.Equal(t, uint32(1), rc.rp.nextKind(t, kindCredit).id)

	// A request for key "b": the ERROR vector (with id 3).
	rc.rp.write(hdrFrame(t, kindRequest, 3, "kv.get", Metadata{"tenant": "t1"}, map[string]string{"key": "b"}))
	h.next(t)
	require.Equal(t, hexDump(hdrVecError(t)), hexDump(hdrWire(hdrNextMsg(t, rc.rp))))

	// The accepted header with an unknown key, in a REQUEST.
	rc.rp.write(robMsgFrameFlags(kindRequest, flagHeader, 4, append(slices.Clone(hdrVecUnknownKey), 0x00, 0xa4, 'p', 'i', 'n', 'g')))
	assert.Equal(t, hdrSeen{method: "m", md: Metadata{"k": "v"}, msg: "ping", size: 5}, h.next(t))
	f = hdrNextMsg(t, rc.rp)
	require.Equal(t, kindResponse, f.kind)
	require.Equal(t, uint32(4), f.id)
	require.Zero(t, f.flags, "a reply without metadata has no header")
	require.NoError(t, rc.Err())
}

// robMsgFrameFlags is a whole message in one frame with the given flags.
func robMsgFrameFlags(kind frameKind, flags uint8, id uint32, body []byte) []byte {
	return robFrameBytes(kind, flags, id, robBody(uint32(len(body)), body))
}

// hdrBadHeaders are headers a receiver refuses, each followed (in the
// tests) by a well-formed rest of the body.
func hdrBadHeaders() map[string][]byte {
	return map[string][]byte{
		"non-integer key":        hdrVecNonIntKey,
		"method of 256 bytes":    hdrVecLongMethod,
		"integer metadata value": hdrVecIntValue,
		"key 0 twice":            hdrVecMethodTwice,
		"not a map":              {0x91, 0xc0},
		"16385 bytes":            append([]byte{0x81, 0x07, 0xc5, 0x3f, 0xfc}, make([]byte, 0x3ffc)...), // 5 + 16380 bytes
	}
}

// TestHeadersRuleRequest (§5.1): a REQUEST whose header breaks the rules,
// or has nothing after it, is answered with ERROR bokbok.bad_request and
// not run; the connection stays usable.
func TestHeadersRuleRequest(t *testing.T) {
	cases := hdrBadHeaders()
	cases["nothing after the header"] = nil // the body is the header alone: see below
	for name, bad := range cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			h := newHdrRecorder()
			rc := robOpen(t, &Config{Handler: h}, hdrPeer)
			body := append(slices.Clone(bad), 0x00, 0xa4, 'p', 'i', 'n', 'g')
			if bad == nil {
				body = []byte{0x81, 0x00, 0xa1, 'm'}
			}
			rc.rp.write(robMsgFrameFlags(kindRequest, flagHeader, 5, body))
			f := hdrNextMsg(t, rc.rp)
			require.Equal(t, kindError, f.kind)
			require.Equal(t, uint32(5), f.id)
			rerr, err := parseErrorBody(f.payload[bodyLenSize:])
			require.NoError(t, err)
			assert.Equal(t, CodeBadRequest, rerr.Code)
			assert.Contains(t, rerr.Message, "message header")

			// Usable: the same id, now with a good header, is served.
			rc.rp.write(robMsgFrameFlags(kindRequest, flagHeader, 5, []byte{0x81, 0x00, 0xa1, 'm', 0x00, 0xa4, 'p', 'i', 'n', 'g'}))
			assert.Equal(t, "m", h.next(t).method)
			f = hdrNextMsg(t, rc.rp)
			require.Equal(t, kindResponse, f.kind)
			require.Equal(t, uint32(5), f.id)
			assert.Equal(t, int32(1), h.calls.Load(), "the bad request never ran")
			require.NoError(t, rc.Err())
		})
	}

	// After a good header, the version 1 rules of the body hold: a
	// timeout with nothing after it is a protocol error (§5).
	t.Run("a header and a timeout only", func(t *testing.T) {
		t.Parallel()
		rc := robOpen(t, nil, hdrPeer)
		rc.rp.write(robMsgFrameFlags(kindRequest, flagHeader, 5, []byte{0x81, 0x00, 0xa1, 'm', 0x00}))
		ruleProtocolClose(t, rc, "REQUEST body has a timeout but no message")
	})
	// And a message that is not well-formed is bokbok.bad_request, as in
	// version 1.
	t.Run("a header and a message not well-formed", func(t *testing.T) {
		t.Parallel()
		rc := robOpen(t, nil, hdrPeer)
		rc.rp.write(robMsgFrameFlags(kindRequest, flagHeader, 5, []byte{0x81, 0x00, 0xa1, 'm', 0x00, 0x92, 0xc0}))
		require.Equal(t, CodeBadRequest, hostileAnswer(t, rc.rp, 5))
		require.NoError(t, rc.Err())
	})
}

// TestHeadersRuleNotify (§5.1): a NOTIFY whose header breaks the rules is
// dropped and still credited; the connection stays usable.
func TestHeadersRuleNotify(t *testing.T) {
	cases := hdrBadHeaders()
	cases["nothing after the header"] = nil
	for name, bad := range cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			h := newHdrRecorder()
			rc := robOpen(t, &Config{Handler: h}, hdrPeer)
			body := append(slices.Clone(bad), 0xa2, 'h', 'i')
			if bad == nil {
				body = []byte{0x81, 0x00, 0xa1, 'm'}
			}
			rc.rp.write(robMsgFrameFlags(kindNotify, flagHeader, 7, body))
			assert.Equal(t, uint32(1), rc.rp.nextKind(t, kindCredit).id, "dropped, and credited")
			assert.Zero(t, h.calls.Load(), "not handled")

			rc.rp.write(robMsgFrameFlags(kindNotify, flagHeader, 7, []byte{0x81, 0x00, 0xa1, 'm', 0xa2, 'h', 'i'}))
			assert.Equal(t, hdrSeen{method: "m", notify: true, msg: "hi", size: 3}, h.next(t))
			assert.Equal(t, uint32(1), rc.rp.nextKind(t, kindCredit).id)
			require.NoError(t, rc.Err())
		})
	}
}

// TestHeadersRuleResponse (§5.1): a RESPONSE whose header breaks the
// rules, or has nothing after it, fails that one call with a
// *ProtocolError; the connection and other calls go on.
func TestHeadersRuleResponse(t *testing.T) {
	cases := hdrBadHeaders()
	cases["nothing after the header"] = nil
	for name, bad := range cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			rc := robOpen(t, nil, hdrPeer)
			p1, call1 := ruleCall(t, rc)
			p2, call2 := ruleCall(t, rc)
			body := append(slices.Clone(bad), 0xa2, 'o', 'k')
			if bad == nil {
				body = []byte{0x81, 0x01, 0x81, 0xa1, 'k', 0xa0}
			}
			rc.rp.write(robMsgFrameFlags(kindResponse, flagHeader, p1, body))
			err := ruleWait(t, call1).err
			var pe *ProtocolError
			require.ErrorAs(t, err, &pe)
			assert.NotErrorIs(t, err, ErrClosed)
			ruleSynced(t, rc)
			require.NoError(t, rc.Err(), "the connection stays open")

			rc.rp.write(robMsgFrameFlags(kindResponse, flagHeader, p2, []byte{0x81, 0x01, 0x81, 0xa1, 'k', 0xa0, 0xa2, 'o', 'k'}))
			r := ruleWait(t, call2)
			require.NoError(t, r.err)
			assert.Equal(t, "ok", r.reply)
		})
	}
}

// TestHeadersRuleError (§5.1): an ERROR whose header breaks the rules, or
// has nothing after it, is a protocol error: the connection closes.
func TestHeadersRuleError(t *testing.T) {
	cases := hdrBadHeaders()
	cases["nothing after the header"] = nil
	for name, bad := range cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			rc := robOpen(t, nil, hdrPeer)
			p, call := ruleCall(t, rc)
			body := append(slices.Clone(bad), 0x92, 0xa0, 0xa0)
			want := "ERROR with a bad header"
			if bad == nil {
				body, want = []byte{0x81, 0x01, 0x81, 0xa1, 'k', 0xa0}, "ERROR with a header and no body"
			}
			rc.rp.write(robMsgFrameFlags(kindError, flagHeader, p, body))
			ruleProtocolClose(t, rc, want)
			err := ruleWait(t, call).err
			assert.ErrorIs(t, err, ErrClosed)
			assert.ErrorIs(t, err, ErrProtocol)
		})
	}
	t.Run("control: a good header", func(t *testing.T) {
		t.Parallel()
		rc := robOpen(t, nil, hdrPeer)
		p, call := ruleCall(t, rc)
		rc.rp.write(robMsgFrameFlags(kindError, flagHeader, p, []byte{0x81, 0x01, 0x81, 0xa1, 'k', 0xa0, 0x92, 0xa1, 'c', 0xa0}))
		var rerr *RemoteError
		require.ErrorAs(t, ruleWait(t, call).err, &rerr)
		assert.Equal(t, "c", rerr.Code)
		assert.Equal(t, Metadata{"k": ""}, rerr.Metadata())
		ruleSynced(t, rc)
		require.NoError(t, rc.Err())
	})
}

// TestHeadersPeerWithout (§5.1, negotiation): a peer whose SETTINGS lack
// headers is never sent one. Metadata alone is left out: plain version 1
// frames, no HEADER flag; a method name fails with ErrNoHeaders and
// nothing is sent; reply metadata is left out too.
func TestHeadersPeerWithout(t *testing.T) {
	h := newHdrRecorder()
	rc := robOpen(t, &Config{Handler: h}, robSettings)
	require.False(t, rc.peer.headers())
	ctx := WithMetadata(context.Background(), Metadata{"tenant": "t1"})

	_, err := rc.RequestMethod(ctx, "kv.get", "x")
	require.ErrorIs(t, err, ErrNoHeaders)
	require.ErrorIs(t, rc.NotifyMethod(ctx, "log.line", "x"), ErrNoHeaders)
	require.ErrorIs(t, rc.Invoke(context.Background(), "kv.get", "x", nil), ErrNoHeaders)

	// The next message frame is the plain notification: nothing was sent
	// for the calls above.
	require.NoError(t, rc.Notify(ctx, "n"))
	f := hdrNextMsg(t, rc.rp)
	plain, err := encodeValueBody("n")
	require.NoError(t, err)
	require.Equal(t, hexDump(robFrameBytes(kindNotify, 0, f.id, plain)), hexDump(hdrWire(f)))

	errc := make(chan error, 1)
	go func() {
		_, err := rc.Request(ctx, "r")
		errc <- err
	}()
	f = hdrNextMsg(t, rc.rp)
	plain, err = encodeRequestBody(0, "r")
	require.NoError(t, err)
	require.Equal(t, hexDump(robFrameBytes(kindRequest, 0, f.id, plain)), hexDump(hdrWire(f)))
	reply, err := encodeValueBody("ok")
	require.NoError(t, err)
	rc.rp.write(robFrameBytes(kindResponse, 0, f.id, reply))
	require.NoError(t, ruleWait(t, errc))

	// Reply metadata (set by the handler) is left out of a RESPONSE and
	// of an ERROR.
	rc.rp.write(robMsgFrame(kindRequest, 9, robRequestBody(t, map[string]string{"key": "a"})))
	h.next(t)
	f = hdrNextMsg(t, rc.rp)
	reply, err = encodeValueBody("v1")
	require.NoError(t, err)
	require.Equal(t, hexDump(robFrameBytes(kindResponse, 0, 9, reply)), hexDump(hdrWire(f)))
	rc.rp.write(robMsgFrame(kindRequest, 9, robRequestBody(t, map[string]string{"key": "b"})))
	h.next(t)
	f = hdrNextMsg(t, rc.rp)
	require.Equal(t, hexDump(robFrameBytes(kindError, 0, 9, encodeErrorBody("app.not_found", "no key b"))), hexDump(hdrWire(f)))
	require.NoError(t, rc.Err())
}

// TestHeadersCountAsBody (§5.1): the header is part of the body, so it
// counts against the peer's max_message_size.
func TestHeadersCountAsBody(t *testing.T) {
	peer := hdrPeer
	peer.MaxMessageSize = 16
	rc := robOpen(t, nil, peer)
	msg := strings.Repeat("x", 14) // body: timeout 00 and 15 bytes, 16 in all
	ctx := context.Background()    // no deadline: a 1-byte timeout
	var tooLarge *MessageTooLargeError
	_, err := rc.RequestMethod(WithMetadata(ctx, Metadata{"k": "v"}), "", msg) // and a header of 7 bytes
	require.ErrorAs(t, err, &tooLarge)
	assert.Equal(t, 16+7, tooLarge.Size)
	_, err = rc.RequestMethod(ctx, "m", msg) // and a header of 4 bytes
	require.ErrorAs(t, err, &tooLarge)
	assert.Equal(t, 16+4, tooLarge.Size)

	// Without a header it fits, and it is the first thing sent.
	errc := make(chan error, 1)
	go func() {
		_, err := rc.Request(ctx, msg)
		errc <- err
	}()
	f := hdrNextMsg(t, rc.rp)
	require.Equal(t, kindRequest, f.kind)
	require.Zero(t, f.flags)
	require.Len(t, f.payload, bodyLenSize+16)
	reply, err := encodeValueBody("ok")
	require.NoError(t, err)
	rc.rp.write(robFrameBytes(kindResponse, 0, f.id, reply))
	require.NoError(t, ruleWait(t, errc))
}

// TestHeadersMultiFrame: a message with a header longer than a frame. The
// Go sender sets HEADER on every frame; a receiver takes the flag from the
// first frame.
func TestHeadersMultiFrame(t *testing.T) {
	big := bytes.Repeat([]byte{0xab}, 100_000)
	md := Metadata{"tenant": "t1", "trace": strings.Repeat("t", 1000)}

	t.Run("Go sends", func(t *testing.T) {
		rc := robOpen(t, nil, hdrPeer)
		errc := make(chan error, 1)
		var got []byte
		go func() {
			resp, err := rc.RequestMethod(WithMetadata(context.Background(), md), "blob.put", big)
			if err == nil {
				err = resp.Decode(&got)
			}
			errc <- err
		}()
		var whole []byte
		var id uint32
		frames := 0
		for {
			f := hdrNextMsg(t, rc.rp)
			require.Equal(t, kindRequest, f.kind)
			require.Equal(t, flagHeader, f.flags, "frame %d", frames)
			if frames == 0 {
				id = f.id
			}
			require.Equal(t, id, f.id)
			frames++
			whole = append(whole, f.payload...)
			if len(whole) >= bodyLenSize && len(whole) == bodyLenSize+int(binary.BigEndian.Uint32(whole)) {
				break
			}
		}
		require.GreaterOrEqual(t, frames, 2)
		h, rest, err := parseHeader(whole[bodyLenSize:], nil)
		require.NoError(t, err)
		assert.Equal(t, "blob.put", h.method)
		assert.Equal(t, md, h.md)
		_, msg, err := parseRequestBody(rest)
		require.NoError(t, err)
		var m []byte
		require.NoError(t, decodeValue(msg, &m, 0))
		require.Equal(t, big, m)

		// A reply of several frames with a header, flagged on the first
		// frame only.
		data, owner, flags, err := encodeMessage(false, 0, "", Metadata{"r": "1"}, big)
		require.NoError(t, err)
		for i, fr := range robFrames(kindResponse, 0, id, data, maxFramePayload) {
			if i == 0 {
				fr[1] = flags
			}
			rc.rp.write(fr)
		}
		owner.done()
		require.NoError(t, ruleWait(t, errc))
		require.Equal(t, big, got)
	})

	t.Run("Go receives", func(t *testing.T) {
		for _, everyFrame := range []bool{true, false} {
			t.Run(fmt.Sprintf("flag on every frame %v", everyFrame), func(t *testing.T) {
				h := newHdrRecorder()
				rc := robOpen(t, &Config{Handler: h}, hdrPeer)
				data, owner, flags, err := encodeMessage(true, 0, "blob.put", md, big)
				require.NoError(t, err)
				frs := robFrames(kindRequest, flags, 11, data, maxFramePayload)
				require.Len(t, frs, 2)
				if !everyFrame {
					frs[1][1] = 0
				}
				rc.rp.write(bytes.Join(frs, nil))
				owner.done()
				s := h.next(t)
				assert.Equal(t, "blob.put", s.method)
				assert.Equal(t, md, s.md)
				assert.Equal(t, string(big), s.msg)
				f := hdrNextMsg(t, rc.rp)
				require.Equal(t, kindResponse, f.kind)
				require.Equal(t, uint32(11), f.id)
				require.NoError(t, rc.Err())
			})
		}
	})

	t.Run("Go to Go", func(t *testing.T) {
		mux := NewMux()
		mux.HandleFunc("blob.len", func(ctx context.Context, req *Request) (any, error) {
			var b []byte
			if err := req.Decode(&b); err != nil {
				return nil, err
			}
			req.SetReplyMetadata(Metadata{"tenant": req.Metadata()["tenant"]})
			return len(b), nil
		})
		a, _ := pipePair(t, nil, &Config{Handler: mux})
		resp, err := a.RequestMethod(WithMetadata(testCtx(t), md), "blob.len", big)
		require.NoError(t, err)
		var n int
		require.NoError(t, resp.Decode(&n))
		assert.Equal(t, len(big), n)
		assert.Equal(t, Metadata{"tenant": "t1"}, resp.Metadata())
		_, err = a.RequestMethod(testCtx(t), "blob.nope", big)
		require.ErrorIs(t, err, ErrNoMethod)
	})
}

// TestHeadersNoMethod (§6): a Mux answers a method it does not serve with
// ERROR bokbok.no_method, without running anything.
func TestHeadersNoMethod(t *testing.T) {
	mux := NewMux()
	var ran atomic.Bool
	mux.HandleFunc("kv.get", func(context.Context, *Request) (any, error) { ran.Store(true); return nil, nil })
	rc := robOpen(t, &Config{Handler: mux}, hdrPeer)
	rc.rp.write(hdrFrame(t, kindRequest, 5, "kv.put", nil, "x"))
	require.Equal(t, CodeNoMethod, hostileAnswer(t, rc.rp, 5))
	assert.False(t, ran.Load())
	require.NoError(t, rc.Err())
}

// TestHeadersBadMetadataNotSent: a method name or metadata outside the
// bounds fails the call locally with ErrBadMetadata; nothing is sent.
func TestHeadersBadMetadataNotSent(t *testing.T) {
	rc := robOpen(t, nil, hdrPeer)
	ctx := testCtx(t)
	_, err := rc.RequestMethod(ctx, strings.Repeat("m", 256), "x")
	require.ErrorIs(t, err, ErrBadMetadata)
	require.ErrorIs(t, rc.Notify(WithMetadata(ctx, Metadata{"": "v"}), "x"), ErrBadMetadata)
	require.NoError(t, rc.Notify(ctx, "plain"))
	f := hdrNextMsg(t, rc.rp)
	require.Equal(t, kindNotify, f.kind)
	require.Zero(t, f.flags)
}

// TestHeadersAnswerMethodIgnored (§5.1): an answer's method has no
// meaning; a receiver accepts and ignores it.
func TestHeadersAnswerMethodIgnored(t *testing.T) {
	rc := robOpen(t, nil, hdrPeer)
	p, call := ruleCall(t, rc)
	rc.rp.write(robMsgFrameFlags(kindResponse, flagHeader, p, []byte{0x81, 0x00, 0xa1, 'm', 0xa2, 'o', 'k'}))
	r := ruleWait(t, call)
	require.NoError(t, r.err)
	assert.Equal(t, "ok", r.reply)
	p, call = ruleCall(t, rc)
	rc.rp.write(robMsgFrameFlags(kindError, flagHeader, p, []byte{0x81, 0x00, 0xa1, 'm', 0x92, 0xa1, 'c', 0xa0}))
	var rerr *RemoteError
	require.ErrorAs(t, ruleWait(t, call).err, &rerr)
	assert.Equal(t, "c", rerr.Code)
	assert.Nil(t, rerr.Metadata())
	ruleSynced(t, rc)
	require.NoError(t, rc.Err())
}

// TestHeadersNestedFlags (§3): a request a handler makes with a method is
// both NESTED and HEADER, flags 03.
func TestHeadersNestedFlags(t *testing.T) {
	h := HandlerFunc(func(ctx context.Context, req *Request) (any, error) {
		resp, err := req.Conn().RequestMethod(ctx, "cb", "x")
		if err != nil {
			return nil, err
		}
		var s string
		return s, resp.Decode(&s)
	})
	rc := robOpen(t, &Config{Handler: h}, hdrPeer)
	rc.rp.write(hdrFrame(t, kindRequest, 5, "outer", nil, "x"))
	f := hdrNextMsg(t, rc.rp)
	require.Equal(t, kindRequest, f.kind)
	require.Equal(t, flagNested|flagHeader, f.flags)
	require.Equal(t, uint8(0x03), f.flags)
	rc.rp.write(hdrFrame(t, kindResponse, f.id, "", nil, "back"))
	f = hdrNextMsg(t, rc.rp)
	require.Equal(t, kindResponse, f.kind)
	require.Equal(t, uint32(5), f.id)
	var s string
	require.NoError(t, decodeValue(f.payload[bodyLenSize:], &s, 0))
	assert.Equal(t, "back", s)
}

// TestHeadersSetting (§4): headers is a key of the table, checked like
// the others; absent or 0, the peer reads no headers; any value from 1
// up, it reads version 1 headers.
func TestHeadersSetting(t *testing.T) {
	mms, nw := ruleKV("max_message_size", 1), ruleKV("notify_window", 1)
	for _, tc := range []struct {
		name    string
		payload []byte
		headers bool
		err     string
	}{
		{"absent", ruleMap(mms, nw), false, ""},
		{"0", ruleMap(mms, nw, ruleKV("headers", 0)), false, ""},
		{"1", ruleMap(mms, nw, ruleKV("headers", 1)), true, ""},
		{"2, a later version", ruleMap(mms, nw, ruleKV("headers", 2)), true, ""},
		{"2^64-1 as uint 64", ruleMap(mms, nw, ruleKV("headers", 0xcf, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff)), true, ""},
		{"1 as int 8", ruleMap(mms, nw, ruleKV("headers", 0xd0, 0x01)), true, ""},
		{"negative", ruleMap(mms, nw, ruleKV("headers", 0xff)), false, "headers is not a non-negative msgpack integer"},
		{"a float", ruleMap(mms, nw, ruleKV("headers", 0xca, 0x3f, 0x80, 0, 0)), false, "headers is not a non-negative msgpack integer"},
		{"true", ruleMap(mms, nw, ruleKV("headers", 0xc3)), false, "headers is not a non-negative msgpack integer"},
		{"twice", ruleMap(mms, nw, ruleKV("headers", 1), ruleKV("headers", 1)), false, "headers appears more than once"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := parseSettings(tc.payload)
			if tc.err != "" {
				require.ErrorIs(t, err, ErrProtocol)
				assert.Contains(t, err.Error(), tc.err)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.headers, s.headers())
		})
	}
}
