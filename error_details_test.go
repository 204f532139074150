package bokbok

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/vmihailenco/msgpack/v5"
)

// Tests of error details (PROTOCOL.md §5.1, key 2 of an ERROR's header):
// the API of *RemoteError, the §14 vector, Go to Go over a real
// connection, a peer without headers, the sender's size limit, and the
// receiver's rules against a raw peer (the rob* harness).

// RemoteError stays comparable with details on it.
var _ = RemoteError{} == RemoteError{}

// detailsNotFound is the details of the §14 vector.
type detailsNotFound struct {
	Key string `msgpack:"key"`
}

// detailsVecErr is the error of the §14 vector, as a handler returns it.
func detailsVecErr() *RemoteError {
	return (&RemoteError{Code: "app.not_found", Message: "no key b"}).WithDetails(detailsNotFound{Key: "b"})
}

// detailsVecError is the §14 vector: ERROR id 4 with details {"key":
// "b"}, as a Conn sends it to a peer that reads headers.
func detailsVecError(t testing.TB) []byte {
	err := detailsVecErr()
	require.True(t, err.HasDetails())
	out := errorMsgDetails(4, err, nil, *err.details)
	return frameBytes(kindError, out.flags, 4, out.data)
}

// detailsVecErrorPlain is the same error as a Conn sends it to a peer
// without headers.
func detailsVecErrorPlain(t testing.TB) []byte {
	out := errorMsg(4, detailsVecErr())
	return frameBytes(kindError, out.flags, 4, out.data)
}

// Headers of §14 with details: refused in an ERROR, and the one accepted
// in other messages.
var (
	detailsVecTwice     = []byte{0x82, headerDetails, 0xc0, headerDetails, 0xc0} // {2: nil, 2: nil}
	detailsVecMalformed = []byte{0x81, headerDetails, 0xc1}                      // {2: the byte c1, which msgpack never uses}
)

// detailsVecBin is a header {2: a bin 16 of n bytes in all}.
func detailsVecBin(n int) []byte {
	return append([]byte{0x81, headerDetails}, appendMsgpackBin(nil, strings.Repeat("d", n-3))...)
}

func init() {
	wrap := func(f func(testing.TB) []byte) func(t *testing.T) []byte {
		return func(t *testing.T) []byte { return f(t) }
	}
	protocolExamples = append(protocolExamples,
		protocolExample{`details vector: ERROR id 4, details {"key": "b"}`, wrap(detailsVecError)},
		protocolExample{`details vector: ERROR id 4 to a peer without headers`, wrap(detailsVecErrorPlain)},
	)
}

// TestErrorDetailsDocVector checks what §14 says of the details vector,
// field by field; that a real Conn sends exactly it (and the plain ERROR
// to a peer without headers) and reads it back; and the headers §14 says
// an ERROR's receiver refuses or accepts.
func TestErrorDetailsDocVector(t *testing.T) {
	t.Run("bytes", func(t *testing.T) {
		want := bytes.Join([][]byte{
			{0x04, 0x02, 0x00, 0x25, 0, 0, 0, 4},                         // ERROR, HEADER, 37 bytes, id 4
			{0, 0, 0, 0x21},                                              // body of 33 bytes
			{0x81, 0x02, 0x81, 0xa3}, []byte("key"), {0xa1}, []byte("b"), // {2: {"key": "b"}}
			{0x92, 0xad}, []byte("app.not_found"), {0xa8}, []byte("no key b"), // ["app.not_found", "no key b"]
		}, nil)
		require.Equal(t, hexDump(want), hexDump(detailsVecError(t)))
		ruleDocHas(t, want)

		plain := bytes.Join([][]byte{
			{0x04, 0x00, 0x00, 0x1c, 0, 0, 0, 4}, {0, 0, 0, 0x18},
			{0x92, 0xad}, []byte("app.not_found"), {0xa8}, []byte("no key b"),
		}, nil)
		require.Equal(t, hexDump(plain), hexDump(detailsVecErrorPlain(t)))
		ruleDocHas(t, plain)
	})

	handler := HandlerFunc(func(context.Context, *Request) (any, error) { return nil, detailsVecErr() })
	t.Run("a Conn sends it", func(t *testing.T) {
		rc := robOpen(t, &Config{Handler: handler}, hdrPeer)
		rc.rp.write(robMsgFrame(kindRequest, 4, robRequestBody(t, "b")))
		require.Equal(t, hexDump(detailsVecError(t)), hexDump(hdrWire(hdrNextMsg(t, rc.rp))))
	})
	t.Run("a Conn sends the plain ERROR to a peer without headers", func(t *testing.T) {
		rc := robOpen(t, &Config{Handler: handler}, robSettings)
		rc.rp.write(robMsgFrame(kindRequest, 4, robRequestBody(t, "b")))
		require.Equal(t, hexDump(detailsVecErrorPlain(t)), hexDump(hdrWire(hdrNextMsg(t, rc.rp))))
		require.NoError(t, rc.Err())
	})
	t.Run("a Conn reads it", func(t *testing.T) {
		rc := robOpen(t, nil, hdrPeer)
		p, call := ruleCall(t, rc)
		vec := detailsVecError(t)
		vec[7] = byte(p) // the id of the call; the vector's is 4
		require.Less(t, p, uint32(0x100))
		rc.rp.write(vec)
		var rerr *RemoteError
		require.ErrorAs(t, ruleWait(t, call).err, &rerr)
		assert.Equal(t, "app.not_found", rerr.Code)
		assert.Equal(t, "no key b", rerr.Message)
		assert.Nil(t, rerr.Metadata())
		require.True(t, rerr.HasDetails())
		assert.Equal(t, hexDump([]byte{0x81, 0xa3, 'k', 'e', 'y', 0xa1, 'b'}), hexDump(rerr.DetailsRaw()))
		var d detailsNotFound
		require.NoError(t, rerr.Details(&d))
		assert.Equal(t, detailsNotFound{Key: "b"}, d)
		ruleSynced(t, rc)
		require.NoError(t, rc.Err())
	})
	t.Run("headers of the text", func(t *testing.T) {
		for _, h := range [][]byte{detailsVecTwice, detailsVecMalformed, detailsVecBin(MaxErrorDetailsSize + 1)[:5], detailsVecBin(MaxErrorDetailsSize)[:5]} {
			ruleDocHasInline(t, h)
		}
		body := func(h []byte) []byte { return append(slices.Clone(h), 0x92, 0xa0, 0xa0) }
		for name, h := range map[string][]byte{
			"key 2 twice": detailsVecTwice, "not well-formed": detailsVecMalformed, "4097 bytes": detailsVecBin(MaxErrorDetailsSize + 1),
		} {
			_, _, err := parseHeaderOf(body(h), nil, true)
			assert.ErrorIs(t, err, ErrBadMetadata, name)
		}
		hdr, rest, err := parseHeaderOf(body(detailsVecBin(MaxErrorDetailsSize)), nil, true)
		require.NoError(t, err)
		assert.Len(t, hdr.details, MaxErrorDetailsSize)
		assert.Equal(t, []byte{0x92, 0xa0, 0xa0}, rest)

		// Elsewhere key 2 is a reserved key: skipped, twice or too long.
		for _, h := range [][]byte{detailsVecTwice, detailsVecBin(MaxErrorDetailsSize + 1)} {
			hdr, rest, err := parseHeader(body(h), nil)
			require.NoError(t, err)
			assert.Nil(t, hdr.details)
			assert.Equal(t, []byte{0x92, 0xa0, 0xa0}, rest)
		}
		_, _, err = parseHeader(body(detailsVecMalformed), nil)
		assert.ErrorIs(t, err, ErrBadMetadata, "a value not well-formed is bad under any key")
	})
}

// detailsPair is a Go client connected to a Go server whose handler
// returns the error errFor gives for the request's message, logging to
// log.
func detailsPair(t *testing.T, log *detailsLog, errFor func(msg string) error) *Conn {
	t.Helper()
	h := HandlerFunc(func(ctx context.Context, req *Request) (any, error) {
		var msg string
		if err := req.Decode(&msg); err != nil {
			return nil, err
		}
		return nil, errFor(msg)
	})
	srv := &Config{Handler: h}
	if log != nil {
		srv.Logger = slog.New(slog.NewTextHandler(log, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	c, _ := pipePair(t, nil, srv)
	return c
}

// detailsCall makes a request and returns its *RemoteError.
func detailsCall(t *testing.T, c *Conn, msg string) *RemoteError {
	t.Helper()
	_, err := c.Request(testCtx(t), msg)
	var rerr *RemoteError
	require.ErrorAs(t, err, &rerr)
	return rerr
}

// detailsLog collects what a logger writes.
type detailsLog struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *detailsLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *detailsLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

type detailsQuota struct {
	Limit   int      `msgpack:"limit"`
	Used    float64  `msgpack:"used"`
	Tenants []string `msgpack:"tenants"`
	Nested  *struct {
		Retry bool `msgpack:"retry"`
	} `msgpack:"nested"`
}

// TestErrorDetailsRoundTrip: details of several types travel from a Go
// handler to a Go caller, beside the code and message, and decode into
// the caller's type.
func TestErrorDetailsRoundTrip(t *testing.T) {
	quota := detailsQuota{Limit: 10, Used: 10.5, Tenants: []string{"a", "b"}}
	quota.Nested = &struct {
		Retry bool `msgpack:"retry"`
	}{Retry: true}
	cases := []struct {
		name    string
		details any
		out     func() any // a new pointer to decode into
		want    any        // what it points to afterwards
	}{
		{"struct", quota, func() any { return new(detailsQuota) }, &quota},
		{"map", map[string]any{"key": "b", "n": 3}, func() any { return new(map[string]any) },
			&map[string]any{"key": "b", "n": int64(3)}},
		{"string", "see https://example.com/errors/42", func() any { return new(string) }, ptr("see https://example.com/errors/42")},
		{"integer", 42, func() any { return new(int) }, ptr(42)},
		{"slice", []int{1, 2, 3}, func() any { return new([]int) }, &[]int{1, 2, 3}},
		{"nil", nil, func() any { return new(any) }, new(any)},
		{"binary", []byte{0, 1, 0xff}, func() any { return new([]byte) }, &[]byte{0, 1, 0xff}},
		{"into an interface value", map[string]int{"a": 1}, func() any { return new(any) }, ptr[any](map[string]any{"a": int64(1)})},
	}
	byName := map[string]any{}
	for _, tc := range cases {
		byName[tc.name] = tc.details
	}
	c := detailsPair(t, nil, func(msg string) error {
		return Errorf("app."+msg, "failed: %s", msg).(*RemoteError).WithDetails(byName[msg])
	})
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rerr := detailsCall(t, c, tc.name)
			assert.Equal(t, "app."+tc.name, rerr.Code)
			assert.Equal(t, "failed: "+tc.name, rerr.Message)
			require.True(t, rerr.HasDetails())
			out := tc.out()
			require.NoError(t, rerr.Details(out))
			assert.Equal(t, tc.want, out)

			enc, err := appendEncoded(nil, tc.details)
			require.NoError(t, err)
			var a, b any
			require.NoError(t, decodeValue(enc, &a, 0))
			require.NoError(t, decodeValue(rerr.DetailsRaw(), &b, 0))
			assert.Equal(t, a, b, "DetailsRaw is the encoding of the details")
		})
	}
}

func ptr[T any](v T) *T { return &v }

// TestErrorDetailsWrapped: a handler error that wraps a *RemoteError with
// details sends its code, its message once (without the "remote error"
// prefix) and its details.
func TestErrorDetailsWrapped(t *testing.T) {
	base := (&RemoteError{Code: "kv.not_found", Message: "no key"}).WithDetails(detailsNotFound{Key: "k"})
	cases := []struct {
		name string
		err  error
		msg  string
	}{
		{"bare", base, "no key"},
		{"wrapped once", fmt.Errorf("lookup: %w", base), "lookup: no key"},
		{"wrapped twice", fmt.Errorf("get: %w", fmt.Errorf("lookup: %w", base)), "get: lookup: no key"},
		{"joined", errors.Join(errors.New("first"), base), "first\nno key"},
	}
	byName := map[string]error{}
	for _, tc := range cases {
		byName[tc.name] = tc.err
	}
	c := detailsPair(t, nil, func(msg string) error { return byName[msg] })
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rerr := detailsCall(t, c, tc.name)
			assert.Equal(t, "kv.not_found", rerr.Code)
			assert.Equal(t, tc.msg, rerr.Message)
			assert.Equal(t, 1, strings.Count(rerr.Message, "no key"), "the message appears once")
			var d detailsNotFound
			require.NoError(t, rerr.Details(&d))
			assert.Equal(t, detailsNotFound{Key: "k"}, d)
		})
	}

	// The details sent are those of the *RemoteError that gives the code:
	// the first in the chain.
	t.Run("the outer of two", func(t *testing.T) {
		inner := (&RemoteError{Code: "inner", Message: "i"}).WithDetails("inner")
		outer := (&RemoteError{Code: "outer", Message: "o"}).WithDetails("outer")
		c := detailsPair(t, nil, func(string) error { return fmt.Errorf("%w: %w", outer, inner) })
		rerr := detailsCall(t, c, "x")
		assert.Equal(t, "outer", rerr.Code)
		var s string
		require.NoError(t, rerr.Details(&s))
		assert.Equal(t, "outer", s)
	})
	t.Run("the outer without details", func(t *testing.T) {
		inner := (&RemoteError{Code: "inner", Message: "i"}).WithDetails("inner")
		outer := &RemoteError{Code: "outer", Message: "o"}
		c := detailsPair(t, nil, func(string) error { return fmt.Errorf("%w: %w", outer, inner) })
		rerr := detailsCall(t, c, "x")
		assert.Equal(t, "outer", rerr.Code)
		assert.False(t, rerr.HasDetails())
	})
}

// TestErrorDetailsPeerWithoutHeaders: to a peer that announced no
// headers, an error with details (and reply metadata) is sent as a plain
// version 1 ERROR, code and message only, with no HEADER flag, and
// nothing is logged; the connection stays open.
func TestErrorDetailsPeerWithoutHeaders(t *testing.T) {
	cases := []struct {
		name string
		err  error
	}{
		{"a map", (&RemoteError{Code: "app.x", Message: "m"}).WithDetails(map[string]int{"a": 1})},
		{"a string", (&RemoteError{Code: "app.x", Message: "m"}).WithDetails("d")},
		{"wrapped", fmt.Errorf("w: %w", (&RemoteError{Code: "app.x", Message: "m"}).WithDetails("d"))},
		{"too large as well", (&RemoteError{Code: "app.x", Message: "m"}).WithDetails(strings.Repeat("d", 2*MaxErrorDetailsSize))},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			log := &detailsLog{}
			h := HandlerFunc(func(ctx context.Context, req *Request) (any, error) {
				req.SetReplyMetadata(Metadata{"k": "v"})
				return nil, tc.err
			})
			rc := robOpen(t, &Config{Handler: h, Logger: slog.New(slog.NewTextHandler(log, nil))}, robSettings)
			require.False(t, rc.peer.headers())
			rc.rp.write(robMsgFrame(kindRequest, 9, robRequestBody(t, "x")))
			f := hdrNextMsg(t, rc.rp)
			require.Equal(t, kindError, f.kind)
			code, message := errorCode(tc.err)
			require.Equal(t, hexDump(robFrameBytes(kindError, 0, 9, encodeErrorBody(code, message))), hexDump(hdrWire(f)))
			rerr, err := parseErrorBody(f.payload[bodyLenSize:])
			require.NoError(t, err)
			assert.Equal(t, "app.x", rerr.Code)
			assert.False(t, rerr.HasDetails())
			require.NoError(t, rc.Err())
			assert.NotContains(t, log.String(), "details", "left out silently")
		})
	}
}

// TestErrorDetailsTooLarge: details over MaxErrorDetailsSize, or that
// would make the ERROR exceed the peer's message limit, are left out with
// a Warn; the call still fails with the error's code and message.
// Details at the limit travel.
func TestErrorDetailsTooLarge(t *testing.T) {
	// A string of n bytes in all (at least 259) as msgpack encodes it:
	// str 16 or str 32.
	sized := func(n int) string {
		if n-3 <= 0xffff {
			return strings.Repeat("d", n-3)
		}
		return strings.Repeat("d", n-5)
	}
	cases := []struct {
		name string
		size int // of the details' encoding
		sent bool
	}{
		{"4096 bytes", MaxErrorDetailsSize, true},
		{"4097 bytes", MaxErrorDetailsSize + 1, false},
		{"64 KiB", 64 << 10, false},
		{"1 MiB", 1 << 20, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			log := &detailsLog{}
			re := (&RemoteError{Code: "app.big", Message: "big details"}).WithDetails(sized(tc.size))
			require.Len(t, re.DetailsRaw(), tc.size, "kept whole until sent")
			c := detailsPair(t, log, func(string) error { return fmt.Errorf("op: %w", re) })
			rerr := detailsCall(t, c, "x")
			assert.Equal(t, "app.big", rerr.Code)
			assert.Equal(t, "op: big details", rerr.Message)
			require.Equal(t, tc.sent, rerr.HasDetails())
			if tc.sent {
				var s string
				require.NoError(t, rerr.Details(&s))
				assert.Equal(t, sized(tc.size), s)
				assert.NotContains(t, log.String(), "details left out")
			} else {
				require.ErrorIs(t, rerr.Details(new(string)), ErrNoDetails)
				assert.Contains(t, log.String(), "level=WARN")
				assert.Contains(t, log.String(), "error details left out")
				assert.Contains(t, log.String(), fmt.Sprintf("size=%d", tc.size))
			}
			_, err := c.Request(testCtx(t), "again")
			require.ErrorAs(t, err, &rerr, "the connection goes on")
		})
	}

	t.Run("over the peer's message limit", func(t *testing.T) {
		peer := hdrPeer
		peer.MaxMessageSize = 64
		log := &detailsLog{}
		h := HandlerFunc(func(context.Context, *Request) (any, error) {
			return nil, (&RemoteError{Code: "c", Message: "m"}).WithDetails(sized(300))
		})
		rc := robOpen(t, &Config{Handler: h, Logger: slog.New(slog.NewTextHandler(log, nil))}, peer)
		rc.rp.write(robMsgFrame(kindRequest, 5, robRequestBody(t, "x")))
		f := hdrNextMsg(t, rc.rp)
		require.Equal(t, hexDump(robFrameBytes(kindError, 0, 5, encodeErrorBody("c", "m"))), hexDump(hdrWire(f)))
		assert.Contains(t, log.String(), "level=WARN")
		assert.Contains(t, log.String(), "message limit")
		require.NoError(t, rc.Err())
	})

	t.Run("reply metadata that does not fit beside the details", func(t *testing.T) {
		md := Metadata{"k": strings.Repeat("v", maxHeaderBytes-MaxErrorDetailsSize)} // fits alone
		h := HandlerFunc(func(ctx context.Context, req *Request) (any, error) {
			req.SetReplyMetadata(md)
			return nil, (&RemoteError{Code: "c", Message: "m"}).WithDetails(sized(MaxErrorDetailsSize))
		})
		a, _ := pipePair(t, nil, &Config{Handler: h})
		_, err := a.Request(testCtx(t), "x")
		var rerr *RemoteError
		require.ErrorAs(t, err, &rerr)
		assert.Equal(t, "c", rerr.Code)
		assert.True(t, rerr.HasDetails(), "the details are kept")
		assert.Nil(t, rerr.Metadata(), "the metadata is left out")

		// With small details, both travel.
		small := errorMsgDetails(1, (&RemoteError{Code: "c", Message: "m"}).WithDetails("d"), md, []byte{0xa1, 'd'})
		hdr, _, err := parseHeaderOf(small.data[bodyLenSize:], nil, true)
		require.NoError(t, err)
		assert.Equal(t, md, hdr.md)
		assert.Equal(t, []byte{0xa1, 'd'}, hdr.details)
	})
}

// TestErrorDetailsNone: errors without details say so, and Details gives
// ErrNoDetails.
func TestErrorDetailsNone(t *testing.T) {
	c := detailsPair(t, nil, func(msg string) error {
		switch msg {
		case "plain":
			return errors.New("plain")
		case "coded":
			return Errorf("app.x", "coded")
		}
		return nil
	})
	received := map[string]*RemoteError{}
	for _, m := range []string{"plain", "coded"} {
		received[m] = detailsCall(t, c, m)
	}
	for name, e := range map[string]*RemoteError{
		"Errorf":         Errorf("app.x", "m").(*RemoteError),
		"literal":        {Code: "c"},
		"nil":            nil,
		"received plain": received["plain"],
		"received coded": received["coded"],
	} {
		t.Run(name, func(t *testing.T) {
			assert.False(t, e.HasDetails())
			assert.Nil(t, e.DetailsRaw())
			var out any
			err := e.Details(&out)
			require.ErrorIs(t, err, ErrNoDetails)
			assert.Nil(t, out)
		})
	}
}

// TestErrorDetailsDecodeErrors: details that do not decode into out give
// an error, never a panic; decoding is strict about unknown fields.
func TestErrorDetailsDecodeErrors(t *testing.T) {
	type strictKey struct {
		Key string `msgpack:"key"`
	}
	type withTime struct {
		At time.Time `msgpack:"at"`
	}
	cases := []struct {
		name    string
		details any
		out     any
		field   string // if not "": the *DecodeError's Field
	}{
		{"string into int", "x", new(int), ""},
		{"map into int", map[string]int{"a": 1}, new(int), ""},
		{"unknown field", map[string]string{"key": "k", "extra": "e"}, new(strictKey), "extra"},
		{"field of the wrong type", map[string]int{"key": 1}, new(strictKey), "key"},
		{"string into a time.Time field", map[string]string{"at": "yesterday"}, new(withTime), "at"},
		{"not a pointer", "x", "", ""},
		{"nil out", "x", nil, ""},
	}
	c := detailsPair(t, nil, func(msg string) error {
		for _, tc := range cases {
			if tc.name == msg {
				return (&RemoteError{Code: "c"}).WithDetails(tc.details)
			}
		}
		return nil
	})
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			local := (&RemoteError{Code: "c"}).WithDetails(tc.details)
			received := detailsCall(t, c, tc.name)
			for _, e := range []*RemoteError{local, received} {
				require.True(t, e.HasDetails())
				var err error
				require.NotPanics(t, func() { err = e.Details(tc.out) })
				require.Error(t, err)
				assert.NotErrorIs(t, err, ErrNoDetails)
				if tc.field != "" {
					var de *DecodeError
					require.ErrorAs(t, err, &de)
					assert.Equal(t, tc.field, de.Field)
				}
			}
		})
	}
	t.Run("a map decodes what a struct refuses", func(t *testing.T) {
		var m map[string]string
		require.NoError(t, (&RemoteError{}).WithDetails(map[string]string{"key": "k", "extra": "e"}).Details(&m))
		assert.Equal(t, map[string]string{"key": "k", "extra": "e"}, m)
	})
}

// detailsBadEncoder is a value whose msgpack encoding fails or breaks the
// rules, as its mode says.
type detailsBadEncoder struct{ mode string }

func (d detailsBadEncoder) EncodeMsgpack(enc *msgpack.Encoder) error {
	switch d.mode {
	case "error":
		return errors.New("cannot encode")
	case "two values":
		if err := enc.EncodeInt(1); err != nil {
			return err
		}
		return enc.EncodeInt(2)
	case "panic":
		panic("encoder panics")
	}
	return nil // nothing at all
}

// TestErrorDetailsWithDetails: WithDetails returns a copy, encodes at
// once, replaces earlier details, and on a failure to encode returns a
// copy without details.
func TestErrorDetailsWithDetails(t *testing.T) {
	t.Run("a copy, encoded at once", func(t *testing.T) {
		md := Metadata{"k": "v"}
		orig := &RemoteError{Code: "c", Message: "m", md: &md}
		m := map[string]string{"a": "1"}
		withD := orig.WithDetails(m)
		m["a"] = "changed"
		assert.False(t, orig.HasDetails(), "the original is unchanged")
		assert.NotSame(t, orig, withD)
		assert.Equal(t, "c", withD.Code)
		assert.Equal(t, "m", withD.Message)
		assert.Equal(t, md, withD.Metadata())
		assert.Equal(t, orig.Error(), withD.Error())
		var got map[string]string
		require.NoError(t, withD.Details(&got))
		assert.Equal(t, map[string]string{"a": "1"}, got)

		raw := withD.DetailsRaw()
		raw[0] = 0xc0
		require.NoError(t, withD.Details(&got), "DetailsRaw returns a copy")
		assert.Equal(t, map[string]string{"a": "1"}, got)

		again := withD.WithDetails("second")
		var s string
		require.NoError(t, again.Details(&s))
		assert.Equal(t, "second", s)
		require.NoError(t, withD.Details(&got), "replacing makes a copy too")
	})
	t.Run("errors.Is still matches the code", func(t *testing.T) {
		e := (&RemoteError{Code: CodeBusy}).WithDetails(1)
		assert.ErrorIs(t, e, ErrBusy)
	})

	deep := func(levels int) any {
		var v any = 1
		for range levels {
			v = []any{v}
		}
		return v
	}
	for name, v := range map[string]any{
		"a channel":             make(chan int),
		"a func":                func() {},
		"an encoder error":      detailsBadEncoder{"error"},
		"two values":            detailsBadEncoder{"two values"},
		"no value":              detailsBadEncoder{""},
		"an encoder panic":      detailsBadEncoder{"panic"},
		"nested 257 levels":     deep(257),
		"a map with a chan key": map[string]any{"c": make(chan int)},
	} {
		t.Run("fails: "+name, func(t *testing.T) {
			before := (&RemoteError{Code: "c", Message: "m"}).WithDetails("earlier")
			var after *RemoteError
			require.NotPanics(t, func() { after = before.WithDetails(v) })
			assert.False(t, after.HasDetails(), "no details, earlier ones included")
			assert.True(t, before.HasDetails(), "the original keeps its own")
			assert.Equal(t, "c", after.Code)
			assert.Equal(t, "m", after.Message)
			require.ErrorIs(t, after.Details(new(any)), ErrNoDetails)
		})
	}
	t.Run("nested 256 levels encodes", func(t *testing.T) {
		assert.True(t, (&RemoteError{}).WithDetails(deep(256)).HasDetails())
	})
}

// TestErrorDetailsHostile: a raw peer answers with ERRORs whose details
// break the rules (§5.1): a bad header, so the connection closes with a
// *ProtocolError, without a panic or a hang. The same key 2 in a
// RESPONSE is skipped; details at the limit are accepted.
func TestErrorDetailsHostile(t *testing.T) {
	body := func(h []byte) []byte { return append(slices.Clone(h), 0x92, 0xa1, 'c', 0xa0) }
	bad := map[string][]byte{
		"key 2 twice":                   detailsVecTwice,
		"key 2 twice, a map then nil":   {0x82, 0x02, 0x80, 0x02, 0xc0},
		"not well-formed":               detailsVecMalformed,
		"an array of 2 with 1 item":     {0x81, 0x02, 0x92, 0xc0}, // the body's end cuts it: sent alone
		"truncated string":              {0x81, 0x02, 0xa5, 'a'},  // alone
		"nothing after key 2":           {0x81, 0x02},             // alone
		"over the limit":                detailsVecBin(MaxErrorDetailsSize + 1),
		"over the limit, many items":    append([]byte{0x81, 0x02, 0xdc, 0x10, 0x00}, bytes.Repeat([]byte{0xc0}, 0x1000)...),
		"nested 257 levels":             append(append([]byte{0x81, 0x02}, bytes.Repeat([]byte{0x91}, 257)...), 0xc0),
		"array 32 announcing 4 billion": {0x81, 0x02, 0xdd, 0xff, 0xff, 0xff, 0xff},
		"twice, with metadata between":  {0x83, 0x02, 0xc0, 0x01, 0x80, 0x02, 0xc0},
	}
	for name, h := range bad {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			rc := robOpen(t, nil, hdrPeer)
			p, call := ruleCall(t, rc)
			b := body(h)
			if strings.HasPrefix(name, "an array") || strings.HasPrefix(name, "truncated") || strings.HasPrefix(name, "nothing") {
				b = h // what follows could complete it
			}
			rc.rp.write(robMsgFrameFlags(kindError, flagHeader, p, b))
			ruleProtocolClose(t, rc, "ERROR with a bad header")
			err := ruleWait(t, call).err
			assert.ErrorIs(t, err, ErrClosed)
			assert.ErrorIs(t, err, ErrProtocol)
			assert.ErrorIs(t, err, ErrBadMetadata)
		})
	}

	good := []struct {
		name string
		hdr  []byte
		raw  []byte
	}{
		{"at the limit", detailsVecBin(MaxErrorDetailsSize), detailsVecBin(MaxErrorDetailsSize)[2:]},
		{"nil", []byte{0x81, 0x02, 0xc0}, []byte{0xc0}},
		{"longer encodings, after metadata", []byte{0x82, 0x01, 0x80, 0xcc, 0x02, 0xda, 0x00, 0x01, 'x'}, []byte{0xda, 0x00, 0x01, 'x'}},
		{"an extension", []byte{0x81, 0x02, 0xd4, 0x05, 0x01}, []byte{0xd4, 0x05, 0x01}},
		{"with an unknown key", []byte{0x82, 0x07, 0xc0, 0x02, 0x01}, []byte{0x01}},
	}
	for _, tc := range good {
		t.Run("accepted: "+tc.name, func(t *testing.T) {
			t.Parallel()
			rc := robOpen(t, nil, hdrPeer)
			p, call := ruleCall(t, rc)
			rc.rp.write(robMsgFrameFlags(kindError, flagHeader, p, body(tc.hdr)))
			var rerr *RemoteError
			require.ErrorAs(t, ruleWait(t, call).err, &rerr)
			assert.Equal(t, "c", rerr.Code)
			require.True(t, rerr.HasDetails())
			assert.Equal(t, hexDump(tc.raw), hexDump(rerr.DetailsRaw()), "kept as received")
			require.NotPanics(t, func() { _ = rerr.Details(new(string)) })
			ruleSynced(t, rc)
			require.NoError(t, rc.Err())
		})
	}

	t.Run("key 2 in a RESPONSE is skipped", func(t *testing.T) {
		t.Parallel()
		rc := robOpen(t, nil, hdrPeer)
		for _, h := range [][]byte{detailsVecTwice, detailsVecBin(MaxErrorDetailsSize + 1), {0x81, 0x02, 0x81, 0xa1, 'k', 0xa1, 'v'}} {
			p, call := ruleCall(t, rc)
			rc.rp.write(robMsgFrameFlags(kindResponse, flagHeader, p, append(slices.Clone(h), 0xa2, 'o', 'k')))
			r := ruleWait(t, call)
			require.NoError(t, r.err)
			assert.Equal(t, "ok", r.reply)
		}
		require.NoError(t, rc.Err())
	})
	t.Run("key 2 in a REQUEST is skipped", func(t *testing.T) {
		t.Parallel()
		h := newHdrRecorder()
		rc := robOpen(t, &Config{Handler: h}, hdrPeer)
		rc.rp.write(robMsgFrameFlags(kindRequest, flagHeader, 3, append(slices.Clone(detailsVecTwice), 0x00, 0xa4, 'p', 'i', 'n', 'g')))
		assert.Equal(t, hdrSeen{msg: "ping", size: 5}, h.next(t))
		assert.Equal(t, "", hostileAnswer(t, rc.rp, 3))
		require.NoError(t, rc.Err())
	})
	t.Run("an answer nobody waits for is not checked", func(t *testing.T) {
		t.Parallel()
		rc := robOpen(t, nil, hdrPeer)
		ctx, cancel := context.WithCancel(testCtx(t))
		errc := make(chan error, 1)
		go func() {
			_, err := rc.Request(ctx, "x")
			errc <- err
		}()
		p := rc.rp.nextKind(t, kindRequest).id
		cancel()
		require.ErrorIs(t, ruleWait(t, errc), context.Canceled)
		rc.rp.nextKind(t, kindCancel)
		rc.rp.write(robMsgFrameFlags(kindError, flagHeader, p, body(detailsVecTwice)))
		ruleSynced(t, rc)
		require.NoError(t, rc.Err())
	})
}
