package bokbok

import (
	"bytes"
	"context"
	"runtime"
	"testing"
	"unsafe"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/vmihailenco/msgpack/v5"
)

type bulkMsg struct {
	Seq  int64
	Data Bulk
}

type bytesMsg struct {
	Seq  int64
	Data []byte
}

// within reports whether b's bytes lie inside buf's.
func within(b, buf []byte) bool {
	if len(b) == 0 || len(buf) == 0 {
		return false
	}
	p, lo := uintptr(unsafe.Pointer(unsafe.SliceData(b))), uintptr(unsafe.Pointer(unsafe.SliceData(buf)))
	return p >= lo && p+uintptr(len(b)) <= lo+uintptr(len(buf))
}

// bytesAllocated is the bytes f allocates per run, on one P.
func bytesAllocated(runs int, f func()) uint64 {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	f()
	least := ^uint64(0)
	for range 3 {
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		for range runs {
			f()
		}
		runtime.ReadMemStats(&after)
		least = min(least, (after.TotalAlloc-before.TotalAlloc)/uint64(runs))
	}
	return least
}

func TestBulkIsEncodedAsBytes(t *testing.T) {
	for _, data := range [][]byte{nil, {}, []byte("hello"), bytes.Repeat([]byte{7}, 70_000)} {
		want, err := msgpack.Marshal(bytesMsg{Seq: 3, Data: data})
		require.NoError(t, err)
		got, err := msgpack.Marshal(bulkMsg{Seq: 3, Data: data})
		require.NoError(t, err)
		assert.Equal(t, want, got, "len %d", len(data))

		var back bulkMsg
		require.NoError(t, decodeValue(got, &back, 0))
		assert.Equal(t, data == nil, back.Data == nil, "nil stays nil")
		assert.Equal(t, string(data), string(back.Data))
	}
	// A str is accepted where bytes are expected, as for []byte.
	var b Bulk
	require.NoError(t, decodeValue([]byte{0xa2, 'h', 'i'}, &b, 0))
	assert.Equal(t, "hi", string(b))
}

func TestBulkRefersToTheReceivedBuffer(t *testing.T) {
	raw, err := msgpack.Marshal(bytesMsg{Seq: 1, Data: bytes.Repeat([]byte("x"), 1<<20)})
	require.NoError(t, err)

	var alias bulkMsg
	require.NoError(t, decodeValue(raw, &alias, 0))
	assert.True(t, within(alias.Data, raw), "a Bulk refers to the message's bytes")
	assert.Equal(t, len(alias.Data), cap(alias.Data), "its capacity ends with it")
	alias.Data = append(alias.Data, 'y') // copies: the message's bytes after it are untouched
	assert.False(t, within(alias.Data, raw))

	var copied bytesMsg
	require.NoError(t, decodeValue(raw, &copied, 0))
	assert.False(t, within(copied.Data, raw), "a []byte is a copy")

	bulkCost := bytesAllocated(20, func() {
		var m bulkMsg
		_ = decodeValue(raw, &m, 0)
	})
	bytesCost := bytesAllocated(20, func() {
		var m bytesMsg
		_ = decodeValue(raw, &m, 0)
	})
	assert.Less(t, bulkCost, uint64(4<<10), "decoding 1 MiB into a Bulk allocates almost nothing")
	assert.GreaterOrEqual(t, bytesCost, uint64(1<<20), "decoding 1 MiB into a []byte allocates it")
}

func TestBulkOutsideConnectionsIsCopiedAndBounded(t *testing.T) {
	raw, err := msgpack.Marshal(bytesMsg{Seq: 1, Data: []byte("abc")})
	require.NoError(t, err)
	var m bulkMsg
	require.NoError(t, msgpack.Unmarshal(raw, &m))
	assert.Equal(t, "abc", string(m.Data))
	assert.False(t, within(m.Data, raw))

	// A bin32 claiming 2 GiB followed by 3 bytes: an error, not a 2 GiB
	// allocation.
	hostile := []byte{0xc6, 0x80, 0, 0, 0, 'a', 'b', 'c'}
	var b Bulk
	cost := bytesAllocated(5, func() { _ = msgpack.Unmarshal(hostile, &b) })
	require.Error(t, msgpack.Unmarshal(hostile, &b))
	assert.Less(t, cost, uint64(64<<10))
	// Through a connection's decoder the check refuses it first.
	require.Error(t, decodeValue(hostile, &b, 0))
}

func TestBulkOverAConnection(t *testing.T) {
	payload := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MiB
	mux := NewMux()
	Handle(mux, "echo", func(ctx context.Context, req bulkMsg) (bulkMsg, error) {
		if !bytes.Equal(req.Data, payload) {
			return bulkMsg{}, &RemoteError{Code: "bad", Message: "payload differs"}
		}
		return req, nil // the reply is encoded before the request's buffer is let go
	})
	client, _ := tcpPair(t, nil, &Server{Config: Config{Handler: mux}})
	ctx := testCtx(t)
	for i := range 3 {
		var reply bulkMsg
		require.NoError(t, client.Invoke(ctx, "echo", bulkMsg{Seq: int64(i), Data: payload}, &reply))
		assert.Equal(t, int64(i), reply.Seq)
		assert.True(t, bytes.Equal(payload, reply.Data))
	}
	var plain bytesMsg // a []byte peer interoperates
	require.NoError(t, client.Invoke(ctx, "echo", bytesMsg{Seq: 9, Data: payload}, &plain))
	assert.True(t, bytes.Equal(payload, plain.Data))
}

// BenchmarkBulkEcho echoes 1 MiB over loopback TCP with the payload as a
// []byte and as a Bulk, on both ends.
func BenchmarkBulkEcho(b *testing.B) {
	payload := make([]byte, 1<<20)
	b.Run("bytes", func(b *testing.B) {
		mux := NewMux()
		Handle(mux, "echo", func(ctx context.Context, req bytesMsg) (bytesMsg, error) { return req, nil })
		client, _ := tcpPair(b, nil, &Server{Config: Config{Handler: mux}})
		b.SetBytes(2 << 20)
		b.ReportAllocs()
		for b.Loop() {
			var r bytesMsg
			if err := client.Invoke(context.Background(), "echo", bytesMsg{Data: payload}, &r); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("bulk", func(b *testing.B) {
		mux := NewMux()
		Handle(mux, "echo", func(ctx context.Context, req bulkMsg) (bulkMsg, error) { return req, nil })
		client, _ := tcpPair(b, nil, &Server{Config: Config{Handler: mux}})
		b.SetBytes(2 << 20)
		b.ReportAllocs()
		for b.Loop() {
			var r bulkMsg
			if err := client.Invoke(context.Background(), "echo", bulkMsg{Data: payload}, &r); err != nil {
				b.Fatal(err)
			}
		}
	})
}
