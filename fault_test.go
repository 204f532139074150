package bokbok

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

// Fault tests: a real client and server over loopback TCP, with a
// faultProxy between them injecting network faults. What each test checks
// is summed up in RELIABILITY.md. Deadlines in these tests only bound a
// hang; none asserts that anything is fast, except that keepalive notices
// a black hole within its configured interval and timeout (plus an
// allowance for a loaded machine).

// faultBound bounds every wait in the fault tests: a call, a close, an
// OnClose that has not come by then is taken as hung.
const faultBound = 20 * time.Second

// faultRig is a Server on loopback behind a faultProxy.
type faultRig struct {
	srv    *Server
	proxy  *faultProxy
	secure bool
	key    Key
	closes *faultCloseLog // the server's OnClose calls
	served chan error
}

// newFaultRig starts a server with cfg (secure if secure) and a proxy in
// front of it. At the end of the test, the clients close first (their
// cleanups run first), then the server, then the proxy.
func newFaultRig(t *testing.T, secure bool, cfg Config, seed uint64) *faultRig {
	t.Helper()
	r := &faultRig{secure: secure, closes: newFaultCloseLog(), served: make(chan error, 1)}
	if cfg.OnClose != nil {
		t.Fatal("newFaultRig sets the server's OnClose itself")
	}
	cfg.OnClose = r.closes.onClose
	r.srv = &Server{Config: cfg}
	if secure {
		r.key = mustKey(t)
		r.srv.Realm = "fault"
		r.srv.UserKey = func(user string) (Key, bool) { return r.key, user == "alice" }
	}
	ln, err := Listen("127.0.0.1:0")
	require.NoError(t, err)
	r.proxy = newFaultProxy(t, ln.Addr().String(), seed)
	go func() { r.served <- r.srv.Serve(ln) }()
	t.Cleanup(r.stop)
	return r
}

// stop closes the server and waits for it, and for its OnClose calls.
func (r *faultRig) stop() {
	r.srv.Close()
	r.srv.Wait()
	if r.served != nil {
		<-r.served
		r.served = nil
	}
}

// dial connects a client through the proxy; it is closed when the test ends.
func (r *faultRig) dial(t *testing.T, cfg Config) *Conn {
	t.Helper()
	if r.secure {
		cfg.Key, cfg.User, cfg.Realm = &r.key, "alice", "fault"
	}
	c, err := Dial(testCtx(t), r.proxy.addr(), &cfg)
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	return c
}

// faultCloseLog records OnClose calls and when they came.
type faultCloseLog struct {
	mu      sync.Mutex
	reasons []error
	times   []time.Time
	first   chan struct{}
}

func newFaultCloseLog() *faultCloseLog { return &faultCloseLog{first: make(chan struct{})} }

func (l *faultCloseLog) onClose(_ *Conn, reason error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.reasons = append(l.reasons, reason)
	l.times = append(l.times, time.Now())
	if len(l.reasons) == 1 {
		close(l.first)
	}
}

// wait waits for the first OnClose and returns every call seen so far.
func (l *faultCloseLog) wait(t *testing.T) ([]error, []time.Time) {
	t.Helper()
	faultAwait(t, l.first, "OnClose")
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.reasons), slices.Clone(l.times)
}

// faultNoLeaks fails the test if goroutines started during it are still
// running once all its cleanups have run. Call it first, so that its check
// runs last.
func faultNoLeaks(t *testing.T) {
	opt := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, opt) })
}

// faultSeed returns a seed for the test's random choices, and logs it.
func faultSeed(t *testing.T) uint64 {
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	return seed
}

// faultPayload returns n random bytes.
func faultPayload(rng *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	return b
}

// faultMode names a security mode in subtest names.
func faultMode(secure bool) string {
	if secure {
		return "secure"
	}
	return "insecure"
}

// faultResult is how one echo call ended.
type faultResult struct {
	i   int
	out []byte
	err error
}

// faultEchoCalls sends each payload in its own concurrent call to an echo
// handler and returns every result, in payload order. It fails the test
// if any call has not returned within faultBound.
func faultEchoCalls(t *testing.T, c *Conn, payloads [][]byte) []faultResult {
	t.Helper()
	ch := make(chan faultResult, len(payloads))
	for i, p := range payloads {
		go func() {
			var out []byte
			err := c.Call(context.Background(), p, &out)
			ch <- faultResult{i, out, err}
		}()
	}
	res := make([]faultResult, len(payloads))
	bound := time.After(faultBound)
	for n := range payloads {
		select {
		case r := <-ch:
			res[r.i] = r
		case <-bound:
			t.Fatalf("%d of %d calls still pending after %v", len(payloads)-n, len(payloads), faultBound)
		}
	}
	return res
}

// faultAwait waits for ch within faultBound.
func faultAwait[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(faultBound):
		t.Fatalf("%s: still waiting after %v", what, faultBound)
		panic("unreachable")
	}
}

// cleanClose reports whether a connection's close reason is an orderly
// one: a local Close, the peer's graceful end, or a shutdown. Only a
// secure connection can always tell a cut from an orderly end (by the
// CLOSE record): on an insecure one a reset can surface as io.EOF, as the
// kernel reports it once, to whichever of the reader and the writer asks
// first, and then reads find the stream ended.
func cleanClose(err error) bool {
	return err == ErrClosed || errors.Is(err, io.EOF) || errors.Is(err, ErrShutdown)
}

// TestFaultSlowLink: latency, jitter and bandwidth limits slow calls down
// but do not break them: every call completes with its own bytes, and
// notifications reach the handler in the order they were sent.
func TestFaultSlowLink(t *testing.T) {
	faultNoLeaks(t)
	cases := []struct {
		name   string
		secure bool
		f      faults
	}{
		{"latency and jitter", false, faults{Latency: 15 * time.Millisecond, Jitter: 15 * time.Millisecond}},
		{"latency and jitter", true, faults{Latency: 15 * time.Millisecond, Jitter: 15 * time.Millisecond}},
		{"bandwidth", false, faults{Bandwidth: 4 << 20}},
		{"bandwidth", true, faults{Bandwidth: 4 << 20}},
		{"latency, jitter and bandwidth", false, faults{Latency: 10 * time.Millisecond, Jitter: 10 * time.Millisecond, Bandwidth: 2 << 20}},
	}
	const notes = 200
	sizes := []int{64, 1 << 10, 16 << 10, 100 << 10, 300 << 10}
	for i, tc := range cases {
		t.Run(tc.name+"/"+faultMode(tc.secure), func(t *testing.T) {
			var (
				mu   sync.Mutex
				seen []int
				all  = make(chan struct{})
			)
			h := HandlerFunc(func(ctx context.Context, req *Request) (any, error) {
				if !req.IsNotification() {
					return echoHandler(ctx, req)
				}
				var n struct {
					Seq int    `msgpack:"seq"`
					Pad []byte `msgpack:"pad"`
				}
				if err := req.Decode(&n); err != nil {
					t.Errorf("decoding a notification: %v", err)
					return nil, err
				}
				mu.Lock()
				seen = append(seen, n.Seq)
				if len(seen) == notes {
					close(all)
				}
				mu.Unlock()
				return nil, nil
			})
			rig := newFaultRig(t, tc.secure, Config{Handler: h}, uint64(i))
			rig.proxy.set(toServer, tc.f)
			rig.proxy.set(toClient, tc.f)
			c := rig.dial(t, Config{})

			rng := rand.New(rand.NewPCG(uint64(i), 1))
			var payloads [][]byte
			for j := range 20 {
				payloads = append(payloads, faultPayload(rng, sizes[j%len(sizes)]))
			}
			noted := make(chan error, 1)
			go func() {
				ctx, cancel := context.WithTimeout(context.Background(), faultBound)
				defer cancel()
				for seq := range notes {
					if err := c.Notify(ctx, map[string]any{"seq": seq, "pad": make([]byte, 512)}); err != nil {
						noted <- fmt.Errorf("notification %d: %w", seq, err)
						return
					}
				}
				noted <- nil
			}()
			for j, r := range faultEchoCalls(t, c, payloads) {
				if assert.NoError(t, r.err, "call %d (%d bytes)", j, len(payloads[j])) {
					assert.True(t, bytes.Equal(payloads[j], r.out), "call %d: reply differs from the request", j)
				}
			}
			require.NoError(t, faultAwait(t, noted, "sending notifications"))
			faultAwait(t, all, "notifications reaching the handler")
			mu.Lock()
			defer mu.Unlock()
			for j, seq := range seen {
				if seq != j {
					t.Fatalf("notification %d arrived in place %d; order: %v", seq, j, seen)
				}
			}
		})
	}
}

// TestFaultResetMidMessage: the proxy resets the connection (RST both
// ways) after a random number of bytes, in the middle of large messages.
// Every call that was pending fails, once, with an error matching
// ErrClosed; calls that were answered before the reset have their own
// bytes; both sides close and run OnClose exactly once, and a secure
// connection does not mistake the cut for an orderly close.
func TestFaultResetMidMessage(t *testing.T) {
	faultNoLeaks(t)
	seed := faultSeed(t)
	rng := rand.New(rand.NewPCG(seed, 2))
	for trial := range 12 {
		d, secure := faultDir(trial%2), trial/2%2 == 1
		t.Run(fmt.Sprintf("%s/%s/%d", faultMode(secure), d, trial), func(t *testing.T) {
			rig := newFaultRig(t, secure, Config{Handler: echoHandler}, seed+uint64(trial))
			var onClose atomic.Int32
			closed := make(chan error, 2)
			c := rig.dial(t, Config{OnClose: func(_ *Conn, reason error) {
				onClose.Add(1)
				closed <- reason
			}})
			require.NoError(t, c.Call(testCtx(t), []byte("warm"), nil))

			var payloads [][]byte
			total := 0
			for range 6 {
				p := faultPayload(rng, 64<<10+rng.IntN(320<<10))
				payloads = append(payloads, p)
				total += len(p)
			}
			// At least total bytes go each way (requests up, replies
			// down), so a reset within the first half is sure to come,
			// and to cut at least one message short.
			at := rig.proxy.offset(d) + 1 + rng.Int64N(int64(total/2))
			t.Logf("reset %s after byte %d", d, at)
			rig.proxy.set(d, faults{ResetAfter: at})

			failed := 0
			for j, r := range faultEchoCalls(t, c, payloads) {
				if r.err != nil {
					failed++
					assert.ErrorIs(t, r.err, ErrClosed, "call %d", j)
					continue
				}
				assert.True(t, bytes.Equal(payloads[j], r.out), "call %d: reply differs from the request", j)
			}
			assert.NotZero(t, failed, "no call failed: the reset came too late")

			reason := faultAwait(t, closed, "the client's OnClose")
			assert.ErrorIs(t, reason, ErrClosed)
			if secure {
				assert.False(t, cleanClose(reason), "the client closed as if in order: %v", reason)
			}
			faultAwait(t, c.Done(), "the client closing")
			assert.ErrorIs(t, c.Err(), ErrClosed)
			_, err := c.Request(context.Background(), []byte("after"))
			assert.ErrorIs(t, err, ErrClosed, "a call on the reset connection")

			rig.closes.wait(t) // the server notices the reset by itself
			c.Close()
			rig.stop()
			assert.Equal(t, int32(1), onClose.Load(), "the client's OnClose calls")
			reasons, _ := rig.closes.wait(t)
			if assert.Len(t, reasons, 1, "the server's OnClose calls") {
				assert.ErrorIs(t, reasons[0], ErrClosed)
				if secure {
					assert.False(t, cleanClose(reasons[0]), "the server closed as if in order: %v", reasons[0])
				}
			}
		})
	}
}

// TestFaultBlackHole: bytes stop flowing in one or both directions, and
// no FIN or RST ever comes; with a large message on its way, the writer
// is stuck in a write once the socket buffers fill. The side that hears nothing closes by
// keepalive within KeepaliveInterval + KeepaliveTimeout of the black hole
// opening (with an allowance for a loaded machine), with
// ErrKeepaliveTimeout; the other side closes too (by keepalive as well, or
// because the deaf side's close reaches it); the pending call fails.
func TestFaultBlackHole(t *testing.T) {
	faultNoLeaks(t)
	const (
		interval  = 100 * time.Millisecond
		timeout   = 200 * time.Millisecond
		allowance = 3 * time.Second // timers firing late on a loaded machine under -race
	)
	cases := []struct {
		name       string
		secure     bool
		holes      []faultDir
		clientDeaf bool // the client hears nothing
		serverDeaf bool
		size       int // of the call made into the black hole
	}{
		{"both directions", false, []faultDir{toServer, toClient}, true, true, 16},
		{"both directions", true, []faultDir{toServer, toClient}, true, true, 16},
		{"to server only", false, []faultDir{toServer}, false, true, 16},
		{"to client only", false, []faultDir{toClient}, true, false, 16},
		{"both directions, 8 MiB on its way", false, []faultDir{toServer, toClient}, true, true, 8 << 20},
		{"both directions, 8 MiB on its way", true, []faultDir{toServer, toClient}, true, true, 8 << 20},
	}
	for i, tc := range cases {
		t.Run(tc.name+"/"+faultMode(tc.secure), func(t *testing.T) {
			cfg := Config{Handler: echoHandler, KeepaliveInterval: interval, KeepaliveTimeout: timeout}
			rig := newFaultRig(t, tc.secure, cfg, uint64(i))
			clientClosed := make(chan time.Time, 1)
			cfg.OnClose = func(*Conn, error) { clientClosed <- time.Now() }
			c := rig.dial(t, cfg)
			require.NoError(t, c.Call(testCtx(t), []byte("warm"), nil))

			start := time.Now()
			for _, d := range tc.holes {
				rig.proxy.set(d, faults{BlackHole: true})
			}
			callErr := make(chan error, 1)
			go func() {
				_, err := c.Request(context.Background(), make([]byte, tc.size))
				callErr <- err
			}()

			faultAwait(t, c.Done(), "the client closing")
			clientAt := faultAwait(t, clientClosed, "the client's OnClose")
			reasons, times := rig.closes.wait(t)
			serverAt := times[0]
			require.Len(t, reasons, 1, "the server's OnClose calls")

			check := func(side string, deaf bool, reason error, at time.Time) {
				assert.ErrorIs(t, reason, ErrClosed, "%s", side)
				if deaf {
					assert.ErrorIs(t, reason, ErrKeepaliveTimeout, "%s", side)
					assert.Less(t, at.Sub(start), interval+timeout+allowance,
						"%s: keepalive took too long to notice the black hole", side)
				}
			}
			check("client", tc.clientDeaf, c.Err(), clientAt)
			check("server", tc.serverDeaf, reasons[0], serverAt)

			err := faultAwait(t, callErr, "the pending call")
			assert.ErrorIs(t, err, ErrClosed)
			if tc.clientDeaf {
				assert.ErrorIs(t, err, ErrKeepaliveTimeout)
			}
		})
	}
}

// TestFaultCorruptSecure: the proxy flips one byte at a random offset in
// the middle of a secure connection's traffic. The record layer detects
// it: the connection closes with an error on both sides (the receiving
// side sees a failed record, or, if the byte was in a record's length,
// keepalive ends the wait for bytes that never come), and no call returns
// a reply other than its own.
func TestFaultCorruptSecure(t *testing.T) {
	faultNoLeaks(t)
	const (
		interval = 200 * time.Millisecond
		timeout  = 400 * time.Millisecond
	)
	seed := faultSeed(t)
	rng := rand.New(rand.NewPCG(seed, 3))
	for trial := range 12 {
		d := faultDir(trial % 2)
		t.Run(fmt.Sprintf("%s/%d", d, trial), func(t *testing.T) {
			cfg := Config{Handler: echoHandler, KeepaliveInterval: interval, KeepaliveTimeout: timeout}
			rig := newFaultRig(t, true, cfg, seed+uint64(trial))
			c := rig.dial(t, cfg)
			require.NoError(t, c.Call(testCtx(t), []byte("warm"), nil))

			var payloads [][]byte
			total := 0
			for range 8 {
				p := faultPayload(rng, 1+rng.IntN(160<<10))
				payloads = append(payloads, p)
				total += len(p)
			}
			at := rig.proxy.offset(d) + rng.Int64N(int64(total/2))
			t.Logf("corrupt byte %d %s", at, d)
			rig.proxy.set(d, faults{Corrupt: []int64{at}})

			failed := 0
			for j, r := range faultEchoCalls(t, c, payloads) {
				if r.err != nil {
					failed++
					assert.ErrorIs(t, r.err, ErrClosed, "call %d", j)
					continue
				}
				assert.True(t, bytes.Equal(payloads[j], r.out), "call %d: a wrong reply was delivered", j)
			}
			assert.NotZero(t, failed, "no call failed: the corruption went unnoticed")

			faultAwait(t, c.Done(), "the client closing")
			reasons, _ := rig.closes.wait(t)
			require.Len(t, reasons, 1, "the server's OnClose calls")
			detected := false
			for side, err := range map[string]error{"client": c.Err(), "server": reasons[0]} {
				assert.ErrorIs(t, err, ErrClosed, "%s", side)
				assert.False(t, cleanClose(err), "%s closed as if in order: %v", side, err)
				detected = detected || errors.Is(err, ErrProtocol) || errors.Is(err, ErrKeepaliveTimeout)
				t.Logf("%s: %v", side, err)
			}
			assert.True(t, detected, "neither side reported the corruption")
		})
	}
}

// TestFaultCorruptSecureRecordLength: a corrupted byte in a record's
// length field. A length out of range is refused at once; a length still
// in range makes the receiver wait for bytes that are not coming, and
// keepalive ends the wait (KeepaliveInterval + KeepaliveTimeout), so the
// call still fails rather than hang.
func TestFaultCorruptSecureRecordLength(t *testing.T) {
	faultNoLeaks(t)
	cases := []struct {
		name string
		pos  int64 // which byte of the next record's 4-byte length to flip
		want error // the server's close reason matches it
	}{
		// Records after the handshake are shorter than 2^24 bytes, so the
		// high byte is 0: flipped, the length is far beyond the limit.
		{"out of range", 0, ErrProtocol},
		// A short record's length 0x000000nn becomes 0x0000ffnn, within
		// the limit of a record; nothing more that long follows.
		{"in range", 2, ErrKeepaliveTimeout},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := Config{Handler: echoHandler, KeepaliveInterval: 200 * time.Millisecond, KeepaliveTimeout: 400 * time.Millisecond}
			rig := newFaultRig(t, true, cfg, uint64(i))
			c := rig.dial(t, cfg)
			require.NoError(t, c.Call(testCtx(t), []byte("warm"), nil))
			rig.proxy.set(toServer, faults{Corrupt: []int64{rig.proxy.offset(toServer) + tc.pos}})

			_, err := c.Request(context.Background(), []byte("probe"))
			assert.ErrorIs(t, err, ErrClosed)
			faultAwait(t, c.Done(), "the client closing")
			reasons, _ := rig.closes.wait(t)
			require.Len(t, reasons, 1, "the server's OnClose calls")
			assert.ErrorIs(t, reasons[0], tc.want)
			assert.False(t, cleanClose(c.Err()), "the client closed as if in order: %v", c.Err())
			t.Logf("client: %v; server: %v", c.Err(), reasons[0])
		})
	}
}

// TestFaultCorruptInsecureHeader: an insecure connection has no integrity
// check of its own, but a corrupted frame header that makes no sense ends
// the connection with a *ProtocolError, on the side that can tell: an
// unknown frame kind on the side that reads it, a frame length beyond the
// limit likewise, and an answer for an id with no request waiting on the
// client (whichever direction the id was corrupted in: a request with a
// wrong id runs, and its answer finds no caller). The pending call fails
// with ErrClosed.
func TestFaultCorruptInsecureHeader(t *testing.T) {
	faultNoLeaks(t)
	cases := []struct {
		name     string
		dir      faultDir
		pos      int64  // which byte of the next frame header to flip
		size     int    // bytes in the probe call
		client   bool   // the client reports the protocol error (else the server)
		reason   string // in ProtocolError.Reason
		frameLen int    // if set, the frame length the corruption relies on
	}{
		{"request kind", toServer, 0, 16, false, "unknown frame kind 0xfd", 0},
		{"response kind", toClient, 0, 16, true, "unknown frame kind 0xfc", 0},
		{"request id", toServer, 7, 16, true, "which has no request waiting", 0},
		{"response id", toClient, 7, 16, true, "which has no request waiting", 0},
		// A 244-byte []byte echoed: a 250-byte payload (0x00fa); flipping
		// the high byte announces 0xfffa, more than a frame may carry.
		{"response length", toClient, 2, 244, true, "exceeds", 250},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			// No keepalive: nothing but our calls crosses the link, so the
			// next frame's offset is known exactly.
			cfg := Config{Handler: echoHandler, KeepaliveInterval: -1}
			rig := newFaultRig(t, false, cfg, uint64(i))
			c := rig.dial(t, cfg)
			probe := bytes.Repeat([]byte{0x5a}, tc.size)

			before := rig.proxy.offset(tc.dir)
			require.NoError(t, c.Call(testCtx(t), probe, nil))
			next := rig.proxy.offset(tc.dir)
			if tc.frameLen > 0 {
				require.EqualValues(t, frameHeaderSize+tc.frameLen, next-before, "the warm-up call's frame, %s", tc.dir)
			}
			rig.proxy.set(tc.dir, faults{Corrupt: []int64{next + tc.pos}})

			_, err := c.Request(context.Background(), probe)
			require.ErrorIs(t, err, ErrClosed)
			faultAwait(t, c.Done(), "the client closing")
			reasons, _ := rig.closes.wait(t)
			require.Len(t, reasons, 1, "the server's OnClose calls")
			detector, other := reasons[0], c.Err()
			if tc.client {
				detector, other = other, detector
				var perr *ProtocolError
				assert.ErrorAs(t, err, &perr, "the failed call carries the cause")
			}
			var perr *ProtocolError
			if assert.ErrorAs(t, detector, &perr) {
				assert.Contains(t, perr.Reason, tc.reason)
			}
			assert.ErrorIs(t, detector, ErrClosed)
			assert.ErrorIs(t, other, ErrClosed)
		})
	}
}

// TestFaultSlowReader: the server reads slowly (the proxy passes 256 KiB/s
// towards it) while the client keeps sending. The client's memory stays
// bounded by its send queue, Config.SendQueueBytes: the live heap grows by
// no more than a few times that bound however long the senders push, and
// Notify accepts no more than the network carried plus the queue. Callers
// wait and then see their context's deadline.
func TestFaultSlowReader(t *testing.T) {
	faultNoLeaks(t)
	const (
		queue     = 1 << 20
		bandwidth = 256 << 10
		run       = 1500 * time.Millisecond
		noteSize  = 64 << 10
		callSize  = 128 << 10
		callers   = 4
	)
	for i, secure := range []bool{false, true} {
		t.Run(faultMode(secure), func(t *testing.T) {
			h := HandlerFunc(func(ctx context.Context, req *Request) (any, error) {
				return len(req.Raw()), nil
			})
			// The window is large so that only the send queue holds back
			// notifications.
			rig := newFaultRig(t, secure, Config{Handler: h, NotifyWindow: 1 << 16}, uint64(i))
			rig.proxy.set(toServer, faults{Bandwidth: bandwidth})
			c := rig.dial(t, Config{SendQueueBytes: queue})
			require.NoError(t, c.Call(testCtx(t), []byte("warm"), nil))

			var ms runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&ms)
			base := ms.HeapAlloc
			sent0 := rig.proxy.offset(toServer)

			end := time.Now().Add(run)
			var wg sync.WaitGroup
			var notesOK atomic.Int64
			noteErr := make(chan error, 1)
			wg.Go(func() {
				ctx, cancel := context.WithDeadline(context.Background(), end)
				defer cancel()
				p := make([]byte, noteSize)
				for {
					if err := c.Notify(ctx, p); err != nil {
						noteErr <- err
						return
					}
					notesOK.Add(1)
				}
			})
			var deadlines, answered atomic.Int64
			callErrs := make(chan error, callers)
			for range callers {
				wg.Go(func() {
					p := make([]byte, callSize)
					for time.Now().Before(end) {
						ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
						_, err := c.Request(ctx, p)
						cancel()
						switch {
						case err == nil:
							answered.Add(1)
						case errors.Is(err, context.DeadlineExceeded):
							deadlines.Add(1)
						default:
							callErrs <- err
							return
						}
					}
				})
			}
			// Sample the live heap while the senders push.
			var peak uint64
			for time.Now().Before(end) {
				time.Sleep(250 * time.Millisecond)
				runtime.GC()
				runtime.ReadMemStats(&ms)
				peak = max(peak, ms.HeapAlloc)
			}
			done := make(chan struct{})
			go func() { wg.Wait(); close(done) }()
			faultAwait(t, done, "the senders returning")
			close(callErrs)
			for err := range callErrs {
				t.Errorf("a call failed with %v, want success or its deadline", err)
			}

			growth := int64(peak) - int64(base)
			carried := rig.proxy.offset(toServer) - sent0
			t.Logf("live heap %d KiB -> peak %d KiB (growth %d KiB); notifications accepted %d (%d KiB), carried %d KiB; calls answered %d, deadlines %d",
				base>>10, peak>>10, growth>>10, notesOK.Load(), notesOK.Load()*noteSize>>10, carried>>10, answered.Load(), deadlines.Load())
			assert.Less(t, growth, int64(8*queue), "the live heap grew by more than 8 times SendQueueBytes")
			// The queue holds SendQueueBytes plus the small-message lane
			// (a quarter more); the kernel buffers some more on the way.
			assert.LessOrEqual(t, notesOK.Load()*noteSize, carried+queue+queue/4+(1<<20),
				"Notify accepted more than the network carried plus the send queue")
			assert.ErrorIs(t, faultAwait(t, noteErr, "Notify returning"), context.DeadlineExceeded)
			assert.NotZero(t, deadlines.Load(), "no caller waited until its deadline")
		})
	}
}

// TestFaultServerOverload: several clients each send more concurrent
// requests than the server's handler limit and queue allow. The requests
// beyond them are refused at once with bokbok.busy (ErrBusy), the rest run
// once the handlers are free, nothing deadlocks, and the server goes on
// serving everyone. Then a free-for-all with handlers of random length:
// every call ends, with a reply or ErrBusy.
func TestFaultServerOverload(t *testing.T) {
	faultNoLeaks(t)
	const (
		clients = 5
		limit   = 4
		queued  = 8
		burst   = 40 // concurrent requests per client
	)
	for i, secure := range []bool{false, true} {
		t.Run(faultMode(secure), func(t *testing.T) {
			gate := make(chan struct{})
			h := HandlerFunc(func(ctx context.Context, req *Request) (any, error) {
				var d time.Duration
				if err := req.Decode(&d); err != nil {
					return nil, err
				}
				select {
				case <-gate:
				case <-ctx.Done():
					return nil, ctx.Err()
				}
				time.Sleep(d)
				return "ok", nil
			})
			rig := newFaultRig(t, secure, Config{Handler: h, MaxConcurrentHandlers: limit, MaxQueuedRequests: queued}, uint64(i))
			jitter := faults{Latency: time.Millisecond, Jitter: 3 * time.Millisecond}
			rig.proxy.set(toServer, jitter)
			rig.proxy.set(toClient, jitter)
			conns := make([]*Conn, clients)
			for j := range conns {
				conns[j] = rig.dial(t, Config{})
			}

			// Phase 1: handlers held at the gate until every refusal is in.
			results := make(chan error, clients*burst)
			for _, c := range conns {
				for range burst {
					go func() { results <- c.Call(context.Background(), time.Duration(0), nil) }()
				}
			}
			wantBusy := clients * (burst - limit - queued)
			busy := 0
			for busy < wantBusy {
				err := faultAwait(t, results, "refusals")
				require.ErrorIs(t, err, ErrBusy, "a call ended before the handlers were released")
				var re *RemoteError
				require.ErrorAs(t, err, &re)
				require.Equal(t, CodeBusy, re.Code)
				busy++
			}
			close(gate)
			for range clients * (limit + queued) {
				assert.NoError(t, faultAwait(t, results, "queued requests"))
			}

			// Phase 2: everyone at once, handlers of random length.
			var ok, refused atomic.Int64
			var wg sync.WaitGroup
			for j, c := range conns {
				rng := rand.New(rand.NewPCG(uint64(i), uint64(j)))
				for range 200 {
					d := time.Duration(rng.IntN(3000)) * time.Microsecond
					wg.Go(func() {
						err := c.Call(context.Background(), d, nil)
						switch {
						case err == nil:
							ok.Add(1)
						case errors.Is(err, ErrBusy):
							refused.Add(1)
						default:
							t.Errorf("a call failed with %v, want success or ErrBusy", err)
						}
					})
				}
			}
			done := make(chan struct{})
			go func() { wg.Wait(); close(done) }()
			faultAwait(t, done, "the free-for-all")
			t.Logf("free-for-all: %d answered, %d refused busy", ok.Load(), refused.Load())
			assert.Equal(t, int64(clients*200), ok.Load()+refused.Load())

			// The server still serves every client.
			for j, c := range conns {
				assert.NoError(t, c.Call(testCtx(t), time.Duration(0), nil), "client %d after the overload", j)
			}
		})
	}
}
