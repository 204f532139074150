package bokbok

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// partialDirectWrites returns how many direct writes the socket took only
// part of.
func (q *sendQueue) partialDirectWrites() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.partial
}

// TestDirectWritesWhenTheSocketFills: one goroutine sends notifications
// while the path to the peer is blocked. Each is written directly by
// Notify until the socket's buffers are full; the socket then takes part of
// a frame (or none of it), the writer goroutine is left the rest, and
// everything queued after waits behind it. Once the path opens, the peer
// gets every notification, whole and in order.
func TestDirectWritesWhenTheSocketFills(t *testing.T) {
	if !canTryIO {
		t.Skip("no direct writes on this platform")
	}
	faultNoLeaks(t)
	for _, secure := range []bool{false, true} {
		t.Run(faultMode(secure), func(t *testing.T) {
			const count = 200
			var (
				mu  sync.Mutex
				got [][]byte
				all = make(chan struct{})
			)
			cfg := Config{Handler: HandlerFunc(func(ctx context.Context, r *Request) (any, error) {
				var b []byte
				if err := r.Decode(&b); err != nil {
					return nil, err
				}
				mu.Lock()
				defer mu.Unlock()
				if got = append(got, b); len(got) == count+1 { // the warm-up one too
					close(all)
				}
				return nil, nil
			})}
			rig := newFaultRig(t, secure, cfg, 7)

			nc, err := net.Dial("tcp", rig.proxy.addr())
			require.NoError(t, err)
			require.NoError(t, nc.(*net.TCPConn).SetWriteBuffer(4096)) // fills after a few frames
			ccfg := Config{}
			if secure {
				ccfg.Key, ccfg.User, ccfg.Realm = &rig.key, "alice", "fault"
			}
			c, err := NewConn(testCtx(t), nc, &ccfg)
			require.NoError(t, err)
			t.Cleanup(func() { c.Close() })
			require.NoError(t, c.Notify(testCtx(t), []byte("warm")))

			rig.proxy.set(toServer, faults{BlackHole: true})
			want := make([][]byte, count)
			sent := make(chan error, 1)
			go func() {
				for i := range want {
					b := make([]byte, 3000+i*5) // up to the largest message written directly
					for j := range b {
						b[j] = byte(i + j)
					}
					want[i] = b
					if err := c.Notify(testCtx(t), b); err != nil {
						sent <- fmt.Errorf("notification %d: %w", i, err)
						return
					}
				}
				sent <- nil
			}()
			require.Eventually(t, func() bool { return c.sendq.partialDirectWrites() > 0 },
				faultBound, time.Millisecond, "no direct write met a full socket")
			rig.proxy.set(toServer, faults{})

			require.NoError(t, faultAwait(t, sent, "the notifications being queued"))
			faultAwait(t, all, "every notification arriving")
			mu.Lock()
			defer mu.Unlock()
			require.Len(t, got, count+1)
			assert.Equal(t, []byte("warm"), got[0])
			for i, b := range want {
				if !assert.True(t, bytes.Equal(b, got[i+1]), "notification %d: %d bytes, want %d", i, len(got[i+1]), len(b)) {
					break
				}
			}
		})
	}
}
