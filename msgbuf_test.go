package bokbok

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestMessageBufferSizeClasses(t *testing.T) {
	for _, tc := range []struct {
		n, class, size int
	}{
		{1, -1, 1},
		{64 << 10, -1, 64 << 10},          // a message of one frame is not pooled
		{64<<10 + 1, 0, 72 << 10},         // the first class
		{72 << 10, 0, 72 << 10},           // exactly a class
		{72<<10 + 1, 1, 80 << 10},         // the next
		{128 << 10, 7, 128 << 10},         // a power of two closes its doubling
		{128<<10 + 1, 8, 144 << 10},       // and the next doubling starts
		{2<<20 + 16, 40, 2<<20 + 256<<10}, // a 2 MiB message and its header
		{64 << 20, msgClasses - 1, 64 << 20},
		{64<<20 + 1, -1, 64<<20 + 1}, // beyond the pools: exact
	} {
		class, size := msgClass(tc.n)
		assert.Equal(t, tc.class, class, "class of %d", tc.n)
		assert.Equal(t, tc.size, size, "size for %d", tc.n)
	}
	for n := 64<<10 + 1; n <= 64<<20; n += 4093 * 7 {
		class, size := msgClass(n)
		require.True(t, class >= 0 && class < msgClasses, "class %d for %d", class, n)
		require.GreaterOrEqual(t, size, n)
		require.LessOrEqual(t, size, n+n/8, "size %d for %d is more than 1/8 over", size, n)
		c2, s2 := msgClass(size)
		require.Equal(t, class, c2, "a class's own size is in the class")
		require.Equal(t, size, s2)
	}
}

func TestMessageBuffersOfSmallAndHugeMessagesAreNotPooled(t *testing.T) {
	putMsgBuf(make([]byte, 0, 100))      // not a class: ignored
	putMsgBuf(make([]byte, 0, 72<<10+1)) // not a class's size: ignored
	putMsgBuf(make([]byte, 0, 128<<20))  // beyond the pools: ignored
	assert.Equal(t, 80<<10, cap(getMsgBuf(72<<10+1)))
	assert.Equal(t, 100, cap(getMsgBuf(100)))
}

// pattern returns n bytes that differ for every (seq, i).
func pattern(seq, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(seq*31 + i*7 + i>>8)
	}
	return b
}

// sizeOf returns the size of message seq: a few hundred KiB, all in one
// size class, so that buffers are there to be reused from the start.
func sizeOf(seq int) int { return 260<<10 + (seq*9973)%(28<<10) }

// TestLargeMessageBuffersAreReusedAndWhatIsKeptStaysIntact: many large
// messages both ways, from several goroutines, while the two ends reuse
// message buffers. Every reply is checked; so are what must outlive reuse
// (a request's Raw kept by its handler, a Response returned by Request, a
// Bulk decoded by Invoke), after every other message has been through.
func TestLargeMessageBuffersAreReusedAndWhatIsKeptStaysIntact(t *testing.T) {
	users := map[string]Key{"alice": mustKey(t)}
	for _, secure := range []bool{false, true} {
		t.Run(fmt.Sprintf("secure=%v", secure), func(t *testing.T) {
			var (
				mu      sync.Mutex
				keptRaw = map[int][]byte{} // seq -> the request's Raw, kept past its handler
			)
			mux := NewMux()
			Handle(mux, "bytes", func(ctx context.Context, req bytesMsg) (bytesMsg, error) { return req, nil })
			Handle(mux, "bulk", func(ctx context.Context, req bulkMsg) (bulkMsg, error) { return req, nil })
			mux.Handle("keep", HandlerFunc(func(ctx context.Context, r *Request) (any, error) {
				var m bulkMsg
				if err := r.Decode(&m); err != nil {
					return nil, err
				}
				mu.Lock()
				keptRaw[int(m.Seq)] = r.Raw()
				mu.Unlock()
				return len(m.Data), nil
			}))
			srv := &Server{Config: Config{Handler: mux}}
			var ccfg *Config
			if secure {
				srv = secureServer(users, Config{})
				srv.Config.Handler = mux
				k := users["alice"]
				ccfg = &Config{Key: &k, User: "alice"}
			}
			client, _ := tcpPair(t, ccfg, srv)
			ctx := testCtx(t)
			reused := msgBufReused.Load()

			type keptReply struct {
				seq  int
				resp *Response // from Request: the caller's
				bulk Bulk      // from Invoke into a Bulk: the caller's
			}
			const workers, calls = 4, 12
			kept := make([][]keptReply, workers)
			var wg sync.WaitGroup
			for w := range workers {
				wg.Go(func() {
					for i := range calls {
						seq := w*1000 + i
						want := pattern(seq, sizeOf(seq))
						switch i % 4 {
						case 0:
							var r bytesMsg
							if !assert.NoError(t, client.Invoke(ctx, "bytes", bytesMsg{Seq: int64(seq), Data: want}, &r)) {
								return
							}
							assert.True(t, bytes.Equal(want, r.Data), "bytes echo %d", seq)
						case 1:
							var r bulkMsg
							if !assert.NoError(t, client.Invoke(ctx, "bulk", bulkMsg{Seq: int64(seq), Data: want}, &r)) {
								return
							}
							assert.True(t, bytes.Equal(want, r.Data), "bulk echo %d", seq)
							kept[w] = append(kept[w], keptReply{seq: seq, bulk: r.Data})
						case 2:
							resp, err := client.RequestMethod(ctx, "bulk", bulkMsg{Seq: int64(seq), Data: want})
							if !assert.NoError(t, err) {
								return
							}
							kept[w] = append(kept[w], keptReply{seq: seq, resp: resp})
						case 3:
							var n int
							if !assert.NoError(t, client.Invoke(ctx, "keep", bulkMsg{Seq: int64(seq), Data: want}, &n)) {
								return
							}
							assert.Equal(t, len(want), n)
						}
					}
				})
			}
			wg.Wait()
			// Everything kept is intact, though buffers were reused since.
			for w := range kept {
				for _, k := range kept[w] {
					want := pattern(k.seq, sizeOf(k.seq))
					if k.resp != nil {
						var m bytesMsg
						require.NoError(t, k.resp.Decode(&m))
						assert.True(t, bytes.Equal(want, m.Data), "Response of %d changed", k.seq)
					} else {
						assert.True(t, bytes.Equal(want, k.bulk), "Bulk reply of %d changed", k.seq)
					}
				}
			}
			mu.Lock()
			defer mu.Unlock()
			require.Len(t, keptRaw, workers*calls/4)
			for seq, raw := range keptRaw {
				var m bytesMsg
				require.NoError(t, decodeValue(raw, &m, 0))
				assert.True(t, bytes.Equal(pattern(seq, sizeOf(seq)), m.Data), "kept Raw of %d changed", seq)
			}
			// Half the calls leave both ends a buffer to reuse (bytes), a
			// quarter the server's (bulk: the client's reply is the
			// caller's); the race detector's pools drop a quarter of what
			// they are given.
			assert.GreaterOrEqual(t, msgBufReused.Load()-reused, int64(workers*calls/2), "buffers reused")
		})
	}
}

// BenchmarkLargeEchoAllocations: bytes allocated per 2 MiB echo decoded
// into a []byte at both ends (the decoded copies are all that is left).
func BenchmarkLargeEchoAllocations(b *testing.B) {
	payload := make([]byte, 2<<20)
	mux := NewMux()
	Handle(mux, "echo", func(ctx context.Context, req bytesMsg) (bytesMsg, error) { return req, nil })
	client, _ := tcpPair(b, nil, &Server{Config: Config{Handler: mux}})
	b.SetBytes(4 << 20)
	b.ReportAllocs()
	for b.Loop() {
		var r bytesMsg
		if err := client.Invoke(context.Background(), "echo", bytesMsg{Data: payload}, &r); err != nil {
			b.Fatal(err)
		}
	}
}
