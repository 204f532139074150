package msgpackcheck

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"github.com/vmihailenco/msgpack/v5"
)

func TestCheck(t *testing.T) {
	deep := func(n int) []byte { return append(bytes.Repeat([]byte{0x91}, n), 0xc0) }
	for _, tc := range []struct {
		name    string
		in      []byte
		wantErr string
	}{
		{"nil", []byte{0xc0}, ""},
		{"map", []byte{0x81, 0xa1, 'a', 0x01}, ""},
		{"empty", nil, "truncated"},
		{"trailing bytes", []byte{0xc0, 0xc0}, "1 bytes left"},
		{"string longer than the input", []byte{0xdb, 0xff, 0xff, 0xff, 0xff, 'x'}, "bytes declared"},
		{"array count larger than the input", []byte{0xdd, 0xff, 0xff, 0xff, 0xff, 0xc0}, "items declared"},
		{"map count larger than the input", []byte{0xdf, 0x00, 0x10, 0x00, 0x00}, "items declared"},
		{"not a type", []byte{0xc1}, "not a msgpack type"},
		{"nested 256 levels", deep(MaxDepth), ""},
		{"nested 257 levels", deep(MaxDepth + 1), "nested deeper"},
		{"ext payload is opaque", []byte{0xd7, 0xff, 0xdf, '0', '0', '0', '0', '0', '0', '0'}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Check(tc.in)
			if tc.wantErr == "" {
				require.NoError(t, err)
			} else {
				require.ErrorContains(t, err, tc.wantErr)
			}
		})
	}
}

// TestDecodeRefusesExtPayloadAsMap: msgpack v5 reads an extension's
// payload as a map header when it expects a map. These two inputs made it
// allocate a map of 808 million entries from 10 bytes.
func TestDecodeRefusesExtPayloadAsMap(t *testing.T) {
	for _, in := range []string{"\xd7\xff\xdf0000000", "\xd7\r\xdf0000000", "\xc7\x05\x01\xdf\xff\xff\xff\xff"} {
		var m map[string]any
		err := Decode([]byte(in), &m)
		require.ErrorIs(t, err, ErrExtPayload, "%q", in)
		var typed map[int]string
		require.ErrorIs(t, Decode([]byte(in), &typed), ErrExtPayload, "%q", in)
		var v any // into an interface the extension is an extension
		err = Decode([]byte(in), &v)
		require.False(t, errors.Is(err, ErrExtPayload), "%q: %v", in, err)
	}
}

func TestDecodeReadsExtensionsAsBytes(t *testing.T) {
	ts := time.Date(2041, 3, 4, 5, 6, 7, 550_000_000, time.UTC) // nanoseconds whose payload starts like a map
	b, err := msgpack.Marshal(map[string]any{"at": ts, "list": []any{ts, "x"}})
	require.NoError(t, err)
	var out struct {
		At   time.Time `msgpack:"at"`
		List []any     `msgpack:"list"`
	}
	require.NoError(t, Decode(b, &out))
	require.True(t, out.At.Equal(ts))
	require.Len(t, out.List, 2)
}

func TestDecodedEstimateBoundsRealDecoding(t *testing.T) {
	for _, item := range [][]byte{{0xc0}, {0x05}, {0xca, 1, 2, 3, 4}, {0xa1, 'x'}, {0x90}, {0x91, 0xc0}, {0x80}, {0x81, 0xa0, 0xc0}} {
		n := 20000
		b := append([]byte{0xdd, 0, 0, byte(n >> 8), byte(n)}, bytes.Repeat(item, n)...)
		info, err := Check(b)
		require.NoError(t, err)
		used := measureDecode(b)
		require.GreaterOrEqual(t, info.Decoded, used, "item % x: estimate %d, decoding took %d", item, info.Decoded, used)
		require.LessOrEqual(t, info.Decoded, int64(len(b))*MaxAmplification)
	}
}

func TestReaderUnreadByte(t *testing.T) {
	b := []byte{0xd4, 0x01, 0x02, 0xc0}
	info, err := Check([]byte{0x92, 0xd4, 0x01, 0x02, 0xc0})
	require.NoError(t, err)
	_ = info
	var r Reader
	info2, err := Check(b[:3])
	require.NoError(t, err)
	r.Reset(b[:3], info2)
	c, err := r.ReadByte()
	require.NoError(t, err)
	require.Equal(t, byte(0xd4), c)
	_, err = r.ReadByte() // the type byte
	require.NoError(t, err)
	_, err = r.ReadByte() // the payload
	require.ErrorIs(t, err, ErrExtPayload)
	require.NoError(t, r.UnreadByte())
	require.NoError(t, r.UnreadByte())
	c, err = r.ReadByte()
	require.NoError(t, err)
	require.Equal(t, byte(0xd4), c)
	require.True(t, strings.Contains(ErrExtPayload.Error(), "extension"))
}
