package bokbok

import (
	"bytes"
	"context"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// specGateConn is a net.Conn whose reads the test meters out: Read returns
// at most the bytes granted so far and then waits for more, telling the
// test (on starved) that it is waiting. It lets a spec hold a transfer in
// the middle, by events rather than by time.
type specGateConn struct {
	net.Conn
	mu      sync.Mutex
	cond    *sync.Cond
	allow   int64 // bytes Read may still return; -1 = unlimited
	read    int64
	closed  bool
	starved chan struct{} // capacity 1
}

func newSpecGateConn(nc net.Conn, allow int64) *specGateConn {
	g := &specGateConn{Conn: nc, allow: allow, starved: make(chan struct{}, 1)}
	g.cond = sync.NewCond(&g.mu)
	return g
}

func (g *specGateConn) Read(p []byte) (int, error) {
	g.mu.Lock()
	for g.allow == 0 && !g.closed {
		select {
		case g.starved <- struct{}{}:
		default:
		}
		g.cond.Wait()
	}
	if g.allow > 0 && int64(len(p)) > g.allow {
		p = p[:g.allow]
	}
	g.mu.Unlock()
	n, err := g.Conn.Read(p)
	g.mu.Lock()
	if g.allow > 0 {
		g.allow -= int64(n)
	}
	g.read += int64(n)
	g.mu.Unlock()
	return n, err
}

// grant lets n more bytes through; n < 0 opens the gate for good.
func (g *specGateConn) grant(n int64) {
	g.mu.Lock()
	if n < 0 || g.allow < 0 {
		g.allow = -1
	} else {
		g.allow += n
	}
	g.mu.Unlock()
	g.cond.Broadcast()
}

func (g *specGateConn) bytesRead() int64 {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.read
}

func (g *specGateConn) Close() error {
	g.mu.Lock()
	g.closed = true
	g.mu.Unlock()
	g.cond.Broadcast()
	return g.Conn.Close()
}

// specSized is a request with a payload that asks for a []byte reply of a
// given size (specSizedHandler).
type specSized struct {
	Data  []byte `msgpack:"data"`
	Reply int    `msgpack:"reply"` // size of the []byte to answer with
}

func specSizedHandler(ctx context.Context, req *Request) (any, error) {
	if req.IsNotification() {
		return nil, nil
	}
	var m specSized
	if err := req.Decode(&m); err != nil {
		return nil, err
	}
	return make([]byte, m.Reply), nil
}

func TestMessageTooLarge(t *testing.T) {
	const limit = 1024
	small := &Config{Handler: HandlerFunc(specSizedHandler), MaxMessageSize: limit}
	roomy := &Config{Handler: HandlerFunc(specSizedHandler)}

	// Both directions: the side with the small limit is first the
	// receiver of the request, then the sender of it.
	directions := []struct {
		name string
		open func(t *testing.T) (sender, receiver *Conn)
	}{
		{"dialler sends", func(t *testing.T) (*Conn, *Conn) { return pipePair(t, roomy, small) }},
		{"accepter sends", func(t *testing.T) (*Conn, *Conn) { c, s := pipePair(t, small, roomy); return s, c }},
	}
	for _, dir := range directions {
		t.Run(dir.name, func(t *testing.T) {
			t.Run("request larger than the peer's limit fails on the sender", func(t *testing.T) {
				ctx := testCtx(t)
				sender, _ := dir.open(t)
				err := sender.Call(ctx, specSized{Data: make([]byte, 2*limit)}, nil)
				require.ErrorIs(t, err, ErrMessageTooLarge)
				var tooLarge *MessageTooLargeError
				require.ErrorAs(t, err, &tooLarge)
				assert.Equal(t, limit, tooLarge.Limit)
				assert.Greater(t, tooLarge.Size, 2*limit)
				var re *RemoteError
				assert.False(t, errors.As(err, &re), "refused locally, not by the peer")

				var got []byte
				require.NoError(t, sender.Call(ctx, specSized{Data: make([]byte, limit/2), Reply: 10}, &got),
					"the connection stays usable")
				assert.Len(t, got, 10)
			})
			t.Run("notification larger than the peer's limit fails on the sender", func(t *testing.T) {
				ctx := testCtx(t)
				sender, _ := dir.open(t)
				err := sender.Notify(ctx, make([]byte, 2*limit))
				require.ErrorIs(t, err, ErrMessageTooLarge)
				var tooLarge *MessageTooLargeError
				require.ErrorAs(t, err, &tooLarge)
				assert.Equal(t, limit, tooLarge.Limit)
				require.NoError(t, sender.Notify(ctx, make([]byte, 10)))
				require.NoError(t, sender.Call(ctx, specSized{Reply: 1}, nil))
			})
			t.Run("reply larger than the caller's limit comes back as a remote error", func(t *testing.T) {
				ctx := testCtx(t)
				_, receiver := dir.open(t) // receiver has the small limit: make it the caller
				// A []byte of n (256 <= n < 65536) encodes in n+3 bytes:
				// 1021 is exactly the limit, 1022 one byte over.
				var got []byte
				require.NoError(t, receiver.Call(ctx, specSized{Reply: limit - 3}, &got), "a reply of exactly the limit")
				assert.Len(t, got, limit-3)

				err := receiver.Call(ctx, specSized{Reply: limit - 2}, &got)
				var re *RemoteError
				require.ErrorAs(t, err, &re)
				assert.Equal(t, CodeTooLarge, re.Code)
				assert.ErrorIs(t, err, ErrMessageTooLarge)
				assert.NotErrorIs(t, err, ErrClosed)

				require.NoError(t, receiver.Call(ctx, specSized{Reply: 5}, &got), "the connection stays usable")
				assert.Len(t, got, 5)
			})
		})
	}
}

// specBlob is a request with a payload.
type specBlob struct {
	Op   string `msgpack:"op"`
	Data []byte `msgpack:"data"`
}

func TestSmallCallOvertakesLargeRequest(t *testing.T) {
	const (
		bigSize   = 16 << 20
		headStart = 1 << 20  // the server reads this much of the big request freely
		step      = 64 << 10 // then this much at a time
		giveUp    = 15 << 20 // a small call still stuck here waits behind the big one
	)
	transports := []struct {
		name string
		open func(t *testing.T, client, server *Config) (*Conn, *Conn, *specGateConn)
	}{
		{"net.Pipe", func(t *testing.T, client, server *Config) (*Conn, *Conn, *specGateConn) {
			na, nb := net.Pipe()
			g := newSpecGateConn(nb, headStart)
			c, s := openPair(t, na, g, client, server)
			return c, s, g
		}},
		{"TCP loopback", func(t *testing.T, client, server *Config) (*Conn, *Conn, *specGateConn) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			require.NoError(t, err)
			defer ln.Close()
			accepted := make(chan net.Conn, 1)
			go func() { nc, _ := ln.Accept(); accepted <- nc }()
			nc, err := net.Dial("tcp", ln.Addr().String())
			require.NoError(t, err)
			snc := <-accepted
			require.NotNil(t, snc)
			// Small socket buffers, so that the kernel does not soak up
			// megabytes of the big request ahead of the gate.
			require.NoError(t, nc.(*net.TCPConn).SetWriteBuffer(64<<10))
			require.NoError(t, snc.(*net.TCPConn).SetReadBuffer(64<<10))
			g := newSpecGateConn(snc, headStart)
			c, s := openPair(t, nc, g, client, server)
			return c, s, g
		}},
	}
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) {
			ctx := testCtx(t)
			var bigStarted atomic.Bool
			handler := HandlerFunc(func(ctx context.Context, req *Request) (any, error) {
				var m specBlob
				if err := req.Decode(&m); err != nil {
					return nil, err
				}
				if m.Op == "big" {
					bigStarted.Store(true)
				}
				return len(m.Data), nil
			})
			client, _, gate := tr.open(t, &Config{}, &Config{Handler: handler})

			var mu sync.Mutex
			var events []string
			event := func(e string) { mu.Lock(); events = append(events, e); mu.Unlock() }

			big := bytes.Repeat([]byte("0123456789abcdef"), bigSize/16)
			bigDone := make(chan error, 1)
			go func() {
				var n int
				err := client.Call(ctx, specBlob{Op: "big", Data: big}, &n)
				if err == nil && n != bigSize {
					err = errors.New("big request arrived incomplete")
				}
				event("big")
				bigDone <- err
			}()
			specAwait(t, ctx, gate.starved, "the big request to fill the head start")

			smallDone := make(chan error, 1)
			go func() {
				var n int
				err := client.Call(ctx, specBlob{Op: "small", Data: []byte("hi")}, &n)
				if err == nil && n != 2 {
					err = errors.New("wrong reply to the small call")
				}
				event("small")
				smallDone <- err
			}()

			// Let the big request trickle on; the small call must come back
			// long before the big one has been read.
			for done := false; !done; {
				require.Less(t, gate.bytesRead(), int64(giveUp),
					"the small call is stuck behind the large request (head-of-line blocking)")
				gate.grant(step)
				select {
				case err := <-smallDone:
					require.NoError(t, err)
					done = true
				case <-gate.starved:
				case <-ctx.Done():
					t.Fatal("timed out")
				}
			}
			assert.False(t, bigStarted.Load(), "the big request's handler cannot have run yet")

			gate.grant(-1)
			require.NoError(t, specAwait(t, ctx, bigDone, "the big call"))
			assert.True(t, bigStarted.Load())
			mu.Lock()
			assert.Equal(t, []string{"small", "big"}, events)
			mu.Unlock()
		})
	}
}

// specRaiseTo raises m to n if n is larger.
func specRaiseTo(m *atomic.Int64, n int64) {
	for {
		old := m.Load()
		if n <= old || m.CompareAndSwap(old, n) {
			return
		}
	}
}

func TestHandlerLimitQueuesThenRefuses(t *testing.T) {
	const (
		limit   = 2
		queue   = 3
		callers = 10
	)
	ctx := testCtx(t)
	release, let := specReleaser(t)
	var running, maxRunning, ran atomic.Int64
	started := make(chan struct{}, callers)
	handler := specDecodeAs(func(m specMsg) (any, error) {
		specRaiseTo(&maxRunning, running.Add(1))
		ran.Add(1)
		started <- struct{}{}
		<-release
		running.Add(-1)
		return m.N, nil
	})
	client, _ := pipePair(t, &Config{}, &Config{Handler: handler, MaxConcurrentHandlers: limit, MaxQueuedRequests: queue})

	type result struct {
		n   int
		err error
	}
	results := make(chan result, callers)
	for i := range callers {
		go func() {
			var got int
			err := client.Call(ctx, specMsg{N: i}, &got)
			if err == nil && got != i {
				err = errors.New("reply to another request")
			}
			results <- result{i, err}
		}()
	}

	// While the handlers are held, two run, three wait in the queue, and
	// the other five are refused at once.
	for range callers - limit - queue {
		r := specAwait(t, ctx, results, "a refusal")
		require.ErrorIs(t, r.err, ErrBusy, "request %d", r.n)
		var re *RemoteError
		require.ErrorAs(t, r.err, &re)
		assert.Equal(t, CodeBusy, re.Code)
	}
	for range limit {
		specAwait(t, ctx, started, "the running handlers to start")
	}
	assert.EqualValues(t, limit, ran.Load(), "only the limit runs at once")

	// Once the handlers move, the queued requests run too.
	let()
	for range limit + queue {
		r := specAwait(t, ctx, results, "a queued or running call")
		assert.NoError(t, r.err, "request %d", r.n)
	}
	assert.EqualValues(t, limit+queue, ran.Load(), "refused requests never ran")
	assert.EqualValues(t, limit, maxRunning.Load())
}

// specChain is a request that bounces between the peers: a handler that
// gets Depth > 0 calls the peer back with Depth-1 from inside the handler
// and answers the peer's answer plus one.
type specChain struct {
	Depth int `msgpack:"depth"`
	ID    int `msgpack:"id"`
}

func specChainHandler(ctx context.Context, req *Request) (any, error) {
	var m specChain
	if err := req.Decode(&m); err != nil {
		return nil, err
	}
	if m.Depth == 0 {
		return m.ID, nil
	}
	var got int
	if err := req.Conn().Call(ctx, specChain{Depth: m.Depth - 1, ID: m.ID}, &got); err != nil {
		return nil, err
	}
	return got + 1, nil
}

func TestNestedCallsAtHandlerLimitDoNotDeadlock(t *testing.T) {
	const limit = 2
	cfg := func() *Config {
		return &Config{Handler: HandlerFunc(specChainHandler), MaxConcurrentHandlers: limit, MaxQueuedRequests: 64}
	}

	// A deadlock shows as calls stuck until this context ends.
	run := func(t *testing.T, a, b *Conn, fromA, fromB, depth int) (ok, busy int) {
		ctx, cancel := context.WithTimeout(testCtx(t), 10*time.Second)
		defer cancel()
		results := make(chan error, fromA+fromB)
		call := func(c *Conn, id int) {
			var got int
			err := c.Call(ctx, specChain{Depth: depth, ID: id}, &got)
			if err == nil && got != id+depth {
				err = errors.New("wrong answer")
			}
			results <- err
		}
		for i := range fromA {
			go call(a, 1000*i)
		}
		for i := range fromB {
			go call(b, 1000*i+1)
		}
		for range fromA + fromB {
			select {
			case err := <-results:
				switch {
				case err == nil:
					ok++
				case errors.Is(err, ErrBusy):
					busy++
				default:
					require.NoError(t, err, "a nested call failed (a deadline here means deadlock)")
				}
			case <-ctx.Done():
				t.Fatal("deadlock: calls still pending when the time ran out")
			}
		}
		return ok, busy
	}

	t.Run("within twice the limit every chain completes", func(t *testing.T) {
		// A's six requests fill B's two handler slots and queue four.
		// Each running handler on B calls A (nested), which calls B
		// (nested), which calls A (nested): three levels deep, with both
		// peers running twice their limit, and every call succeeds.
		a, b := pipePair(t, cfg(), cfg())
		ok, busy := run(t, a, b, 6, 0, 3)
		assert.Equal(t, 6, ok)
		assert.Zero(t, busy)
	})
	t.Run("both peers saturated with deep nesting: no hang, only refusals", func(t *testing.T) {
		// Both sides send more top-level requests than the other can run
		// and every handler nests five levels deep: more than twice the
		// limit would be needed, so some nested calls are refused with
		// ErrBusy (PROTOCOL.md section 9) - but every call returns.
		a, b := pipePair(t, cfg(), cfg())
		ok, busy := run(t, a, b, 6, 6, 5)
		assert.Equal(t, 12, ok+busy)
		t.Logf("%d chains completed, %d refused as busy", ok, busy)
		// The connection is still fine afterwards.
		ctx := testCtx(t)
		var got int
		require.NoError(t, a.Call(ctx, specChain{Depth: 1, ID: 7}, &got))
		assert.Equal(t, 8, got)
	})
}

// specLive reports how many of the peer's requests are queued or running on
// c. (White-box, like specQueued.)
func specLive(c *Conn) int {
	c.in.mu.Lock()
	defer c.in.mu.Unlock()
	return len(c.in.live)
}

func TestFinishedNestedRequestDoesNotStartQueuedOneBeyondLimit(t *testing.T) {
	// B runs one request at a time. A nested request runs on B beyond that
	// limit; when it finishes, the request queued on B must keep waiting
	// for the one running, not take the nested request's extra slot.
	ctx := testCtx(t)
	release, let := specReleaser(t)
	holds := make(chan int, 2)
	var holding, maxHolding atomic.Int64
	bHandler := specDecodeAs(func(m specMsg) (any, error) {
		if m.Op == "hold" {
			specRaiseTo(&maxHolding, holding.Add(1))
			holds <- m.N
			<-release
			holding.Add(-1)
		}
		return m.N, nil
	})
	aHandler := HandlerFunc(func(ctx context.Context, req *Request) (any, error) {
		// Called by B; calls B back, so the call is nested.
		var n int
		err := req.Conn().Call(ctx, specMsg{Op: "quick", N: 7}, &n)
		return n, err
	})
	a, b := pipePair(t, &Config{Handler: aHandler}, &Config{Handler: bHandler, MaxConcurrentHandlers: 1})

	held := make(chan error, 2)
	go func() { held <- a.Call(ctx, specMsg{Op: "hold", N: 1}, nil) }()
	require.Equal(t, 1, specAwait(t, ctx, holds, "the first request to run"))
	go func() { held <- a.Call(ctx, specMsg{Op: "hold", N: 2}, nil) }()
	require.Eventually(t, func() bool { return specQueued(b) == 1 }, 5*time.Second, time.Millisecond,
		"the second request waits for B's only slot")

	var n int
	require.NoError(t, b.Call(ctx, "go nest", &n), "a nested request runs at once although B is at its limit")
	assert.Equal(t, 7, n)
	// Wait until B has retired the nested request: then only the two
	// holds are left, one running and one queued.
	require.Eventually(t, func() bool { return specLive(b) == 2 }, 5*time.Second, time.Millisecond)
	assert.Equal(t, 1, specQueued(b), "the queued request started when the nested one finished")

	let()
	require.NoError(t, specAwait(t, ctx, held, "a hold"))
	require.NoError(t, specAwait(t, ctx, held, "a hold"))
	assert.EqualValues(t, 1, maxHolding.Load(), "B ran more requests at once than MaxConcurrentHandlers")
}

// TestHandlerSlotIsFreeOnceTheReplyIsOut: with one handler slot and no
// queue, a caller that sends its next request as soon as it has a reply
// never finds the slot still taken by the request just answered: the slot
// is given back before the reply can be written (the reply may be written
// by the handler's own goroutine, at once). Over TCP and over net.Pipe,
// insecure and secure.
func TestHandlerSlotIsFreeOnceTheReplyIsOut(t *testing.T) {
	const calls = 2000
	srvCfg := Config{Handler: echoHandler, MaxConcurrentHandlers: 1, MaxQueuedRequests: -1}
	key := mustKey(t)
	pairs := []struct {
		name string
		open func(t *testing.T) *Conn
	}{
		{"tcp", func(t *testing.T) *Conn {
			c, _ := tcpPair(t, nil, &Server{Config: srvCfg})
			return c
		}},
		{"tcp secure", func(t *testing.T) *Conn {
			srv := &Server{Config: srvCfg, UserKey: func(string) (Key, bool) { return key, true }}
			c, _ := tcpPair(t, &Config{Key: &key, User: "u"}, srv)
			return c
		}},
		{"pipe", func(t *testing.T) *Conn {
			cfg := srvCfg
			c, _ := pipePair(t, nil, &cfg)
			return c
		}},
	}
	for _, p := range pairs {
		t.Run(p.name, func(t *testing.T) {
			c := p.open(t)
			ctx := testCtx(t)
			for i := range calls {
				var out []byte
				require.NoError(t, c.Call(ctx, []byte("x"), &out), "call %d", i)
			}
		})
	}
}
