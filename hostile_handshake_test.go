package bokbok

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bokbok-go/bokbok/internal/testutil"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

// Hostile peers in the opening: clients that connect and say nothing, send
// only their preamble, or dribble their first message a byte at a time.
// Each test plays them from raw sockets against a real Server on a
// loopback listener, and checks what a well-behaved client sees meanwhile.

// hsVictim is a Server under attack and what a good client needs.
type hsVictim struct {
	srv    *Server
	addr   string
	secure bool
	client *Config
	// opening is the client's first bytes: preamble and first message
	// (SETTINGS, or message 1 of a user the server knows).
	opening []byte

	refusedMu sync.Mutex // guards refused
	refused   []error
}

// hsServe starts a Server (defaults unless set changes them) on a loopback
// listener; it is closed at the end of the test.
func hsServe(t *testing.T, secure bool, set func(*Server)) *hsVictim {
	t.Helper()
	v := &hsVictim{secure: secure}
	echo := HandlerFunc(func(ctx context.Context, r *Request) (any, error) {
		var s string
		err := r.Decode(&s)
		return s, err
	})
	v.srv = &Server{Config: Config{Handler: echo}}
	v.client = &Config{}
	v.opening = append(appendPreamble(nil, modeInsecure), atkSettingsFrame()...)
	if secure {
		key, err := GenerateKey()
		require.NoError(t, err)
		v.srv.UserKey = func(user string) (Key, bool) { return key, user == "alice" }
		v.client = &Config{Key: &key, User: "alice"}
		_, v.opening = atkHello(t, key, "alice", "", nil)
	}
	v.srv.OnRefused = func(_ net.Addr, err error) {
		v.refusedMu.Lock()
		v.refused = append(v.refused, err)
		v.refusedMu.Unlock()
	}
	if set != nil {
		set(v.srv)
	}
	ln, err := Listen("127.0.0.1:0")
	require.NoError(t, err)
	v.addr = ln.Addr().String()
	served := make(chan error, 1)
	go func() { served <- v.srv.Serve(ln) }()
	t.Cleanup(func() {
		v.srv.Close()
		v.srv.Wait()
		require.ErrorIs(t, <-served, ErrServerClosed)
	})
	return v
}

// refusals counts the connections OnRefused was told about with an error
// matching target.
func (v *hsVictim) refusals(target error) int {
	v.refusedMu.Lock()
	defer v.refusedMu.Unlock()
	return countMatching(v.refused, target)
}

// good dials with a 3 s bound on the whole opening and makes a call; it
// fails the test if either does not succeed.
func (v *hsVictim) good(t *testing.T, what string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	start := time.Now()
	c, err := Dial(ctx, v.addr, v.client)
	require.NoError(t, err, "%s: a well-behaved client did not open within its 3 s dial timeout", what)
	defer c.Close()
	var out string
	require.NoError(t, c.Call(ctx, what, &out), what)
	require.Equal(t, what, out)
	t.Logf("%s: opened and called in %v", what, time.Since(start).Round(time.Millisecond))
}

// hsHostile is a batch of raw hostile connections.
type hsHostile struct {
	conns []net.Conn
	stop  chan struct{}
	wg    sync.WaitGroup // the dribblers
}

// hsAttack opens n raw connections to addr and writes send on each (nothing
// if it is empty). If every is positive it then dribbles dribble on each,
// one byte per every, until closed. The connections are closed at the end
// of the test, or by close.
func hsAttack(t *testing.T, addr string, n int, send, dribble []byte, every time.Duration) *hsHostile {
	t.Helper()
	h := &hsHostile{stop: make(chan struct{})}
	t.Cleanup(h.close)
	for range n {
		nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
		require.NoError(t, err)
		h.conns = append(h.conns, nc)
		if len(send) > 0 {
			_, err := nc.Write(send)
			require.NoError(t, err)
		}
		if every > 0 {
			h.wg.Add(1)
			go func() {
				defer h.wg.Done()
				tick := time.NewTicker(every)
				defer tick.Stop()
				for _, b := range dribble {
					select {
					case <-h.stop:
						return
					case <-tick.C:
					}
					if _, err := nc.Write([]byte{b}); err != nil {
						return // the server closed it
					}
				}
			}()
		}
	}
	return h
}

// close closes every connection of the batch and stops its dribblers.
func (h *hsHostile) close() {
	select {
	case <-h.stop:
		return
	default:
	}
	close(h.stop)
	for _, nc := range h.conns {
		nc.Close()
	}
	h.wg.Wait()
}

// hsWaitOpening waits until the server counts n connections as opening.
func hsWaitOpening(t *testing.T, srv *Server, n int) {
	t.Helper()
	require.Eventually(t, func() bool { return srv.opening.Load() == int64(n) }, 20*time.Second, 5*time.Millisecond,
		"the server should count %d connections as opening (it counts %d)", n, srv.opening.Load())
}

// hsWaitGoroutines polls until no more than limit goroutines run.
func hsWaitGoroutines(t *testing.T, limit int) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for runtime.NumGoroutine() > limit {
		if time.Now().After(deadline) {
			t.Fatalf("%d goroutines still run, want at most %d", runtime.NumGoroutine(), limit)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// hsModes runs f for an insecure and a secure server.
func hsModes(t *testing.T, f func(t *testing.T, secure bool)) {
	for _, secure := range []bool{false, true} {
		t.Run(map[bool]string{false: "insecure", true: "secure"}[secure], func(t *testing.T) { f(t, secure) })
	}
}

// TestSlowlorisSilentClientsDoNotBlockOpening: against a server with the
// default limits (64 handshake slots, 5 s handshake timeout), 300 clients
// that connect and say nothing, 100 that send only their preamble, 50 that
// stop in the middle of their first message and 20 that dribble it a byte
// every 100 ms: a well-behaved client still opens and completes a call
// within its 3 s dial timeout. Each hostile connection costs the server at
// most two goroutines, and once they close the goroutines are back where
// they were. (When each took a slot at accept, the 64 slots stayed held
// for the 5 s timeout and the good client could not open in 3 s.)
func TestSlowlorisSilentClientsDoNotBlockOpening(t *testing.T) {
	hsModes(t, func(t *testing.T, secure bool) {
		v := hsServe(t, secure, nil)
		v.good(t, "before the attack")
		leaks := goleak.IgnoreCurrent()
		base := runtime.NumGoroutine()

		pre := v.opening[:preambleSize]
		half := v.opening[:preambleSize+(len(v.opening)-preambleSize)/2]
		const silent, preOnly, partial, dribblers = 300, 100, 50, 20
		const total = silent + preOnly + partial + dribblers
		batches := []*hsHostile{
			hsAttack(t, v.addr, silent, nil, nil, 0),
			hsAttack(t, v.addr, preOnly, pre, nil, 0),
			hsAttack(t, v.addr, partial, half, nil, 0),
			hsAttack(t, v.addr, dribblers, pre, v.opening[preambleSize:len(v.opening)-1], 100*time.Millisecond),
		}
		hsWaitOpening(t, v.srv, total)

		v.good(t, "during the attack")
		v.good(t, "still during the attack")
		require.EqualValues(t, total, v.srv.opening.Load(), "every hostile connection is still open")

		// Server side: a goroutine for the connection and one for its
		// writer; client side: a dribbler each.
		n := runtime.NumGoroutine()
		t.Logf("%d goroutines for %d hostile connections (%d before)", n, total, base)
		require.LessOrEqual(t, n, base+2*total+dribblers+20)

		for _, b := range batches {
			b.close()
		}
		hsWaitOpening(t, v.srv, 0)
		hsWaitGoroutines(t, base)
		goleak.VerifyNone(t, leaks)
		v.good(t, "after the attack")
	})
}

// TestSlowlorisClaimedLengthsDoNotAllocate: 300 clients whose first
// message claims the largest length allowed (a 65528-byte SETTINGS
// payload, a 512-byte message 1) and then stop make the server hold no
// more than their read buffers: nothing is allocated for the bytes they
// claim until the read buffer is full. The server still serves a good
// client meanwhile, with one handshake slot.
func TestSlowlorisClaimedLengthsDoNotAllocate(t *testing.T) {
	hsModes(t, func(t *testing.T, secure bool) {
		v := hsServe(t, secure, func(s *Server) { s.MaxHandshakes = 1 })
		v.good(t, "before the attack")
		claim := append(appendPreamble(nil, modeInsecure), appendFrameHeader(nil, kindSettings, 0, maxFramePayload, 0)...)
		claim = append(claim, 0x84) // the start of a map
		if secure {
			claim = append(appendPreamble(nil, modeSecure), byte(maxHandshakeMsg>>8), byte(maxHandshakeMsg&0xff), 5)
		}
		const n = 300
		heap0 := testutil.LiveHeap()
		h := hsAttack(t, v.addr, n, claim, nil, 0)
		hsWaitOpening(t, v.srv, n)
		grown := int64(testutil.LiveHeap()) - int64(heap0)
		t.Logf("live heap grew by %d KiB for %d connections (%d bytes each)", grown>>10, n, grown/n)
		// A connection's own state, read buffer included, is under 16 KiB;
		// a 64 KiB payload buffer each would be over 19 MiB.
		require.Less(t, grown, int64(n*16<<10), "the server allocated for lengths the peers only claimed")
		v.good(t, "during the attack")
		h.close()
		hsWaitOpening(t, v.srv, 0)
	})
}

// TestHandshakeFirstFrameRefusedBeforePayload: an insecure client whose
// first frame is a valid header of another kind than SETTINGS, claiming
// the largest payload, is refused at once: the server does not wait for
// (or make room for) a payload it would refuse anyway.
func TestHandshakeFirstFrameRefusedBeforePayload(t *testing.T) {
	v := hsServe(t, false, func(s *Server) { s.HandshakeTimeout = 20 * time.Second })
	for _, kind := range []frameKind{kindRequest, kindNotify} {
		h := hsAttack(t, v.addr, 1, append(appendPreamble(nil, modeInsecure), appendFrameHeader(nil, kind, 0, maxFramePayload, 1)...), nil, 0)
		nc := h.conns[0]
		nc.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, err := io.Copy(io.Discard, nc)
		require.False(t, errors.Is(err, os.ErrDeadlineExceeded), "the server waited for the payload of a %s frame it must refuse", kind)
		h.close()
	}
	require.Eventually(t, func() bool { return v.refusals(ErrProtocol) == 2 }, 10*time.Second, 5*time.Millisecond)
	v.refusedMu.Lock()
	var reasons []string // in either order: the two refusals are reported by their own goroutines
	for _, err := range v.refused {
		reasons = append(reasons, err.Error())
	}
	v.refusedMu.Unlock()
	require.Len(t, reasons, 2)
	joined := strings.Join(reasons, "\n")
	require.Contains(t, joined, "first frame is REQUEST, want SETTINGS")
	require.Contains(t, joined, "first frame is NOTIFY, want SETTINGS")
}

// TestOpeningBoundClosesExcess: with Server.MaxOpening connections opening,
// the server closes each further connection at once, without writing
// anything, tells OnRefused with ErrServerBusy and logs it at Warn; once
// the silent connections go, a good client opens again.
func TestOpeningBoundClosesExcess(t *testing.T) {
	hsModes(t, func(t *testing.T, secure bool) {
		logs := &testutil.SyncBuffer{}
		const limit, excess = 20, 5
		v := hsServe(t, secure, func(s *Server) {
			s.MaxOpening = limit
			s.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelWarn}))
		})
		held := hsAttack(t, v.addr, limit, nil, nil, 0)
		hsWaitOpening(t, v.srv, limit)

		extra := hsAttack(t, v.addr, excess, nil, nil, 0)
		for i, nc := range extra.conns {
			nc.SetReadDeadline(time.Now().Add(10 * time.Second))
			got, err := io.ReadAll(nc)
			require.False(t, errors.Is(err, os.ErrDeadlineExceeded), "connection %d beyond the bound was not closed", i)
			require.Empty(t, got, "a connection beyond the bound was sent something")
		}
		require.Eventually(t, func() bool { return v.refusals(ErrServerBusy) == excess }, 10*time.Second, 5*time.Millisecond,
			"OnRefused should hear of every connection beyond the bound")
		require.Contains(t, logs.String(), "level=WARN")
		require.Contains(t, logs.String(), "too many connections opening")
		require.Contains(t, logs.String(), "Server.MaxOpening")
		require.EqualValues(t, limit, v.srv.opening.Load())

		// A good client is refused too while the bound is reached.
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		_, err := Dial(ctx, v.addr, v.client)
		cancel()
		require.Error(t, err)

		held.close()
		hsWaitOpening(t, v.srv, 0)
		v.good(t, "after the silent connections closed")
	})
}

// TestOpeningBoundServeConn: ServeConn counts toward Server.MaxOpening
// too, and refuses beyond it with ErrServerBusy.
func TestOpeningBoundServeConn(t *testing.T) {
	srv := &Server{MaxOpening: 1, Config: Config{HandshakeTimeout: 10 * time.Second}}
	defer func() { srv.Close(); srv.Wait() }()
	a, b := net.Pipe()
	defer a.Close()
	served := make(chan error, 1)
	go func() {
		_, err := srv.ServeConn(context.Background(), b)
		served <- err
	}()
	hsWaitOpening(t, srv, 1)
	c, d := net.Pipe()
	defer c.Close()
	_, err := srv.ServeConn(context.Background(), d)
	require.ErrorIs(t, err, ErrServerBusy)
	_, err = c.Read(make([]byte, 1))
	require.ErrorIs(t, err, io.EOF, "the connection refused should be closed")
	a.Close()
	require.Error(t, <-served)
	require.Zero(t, srv.opening.Load())
}

// TestHandshakeTimeoutClosesSilentConnections: with a short handshake
// timeout, silent connections, ones that send only the preamble, and a
// dribbling one are all closed by the server once it passes, reported to
// OnRefused as handshake timeouts, and their goroutines end.
func TestHandshakeTimeoutClosesSilentConnections(t *testing.T) {
	hsModes(t, func(t *testing.T, secure bool) {
		const timeout = 300 * time.Millisecond
		v := hsServe(t, secure, func(s *Server) { s.HandshakeTimeout = timeout })
		leaks := goleak.IgnoreCurrent()
		base := runtime.NumGoroutine()
		pre := v.opening[:preambleSize]
		batches := []*hsHostile{
			hsAttack(t, v.addr, 50, nil, nil, 0),
			hsAttack(t, v.addr, 50, pre, nil, 0),
			hsAttack(t, v.addr, 1, pre, v.opening[preambleSize:len(v.opening)-1], 20*time.Millisecond),
		}
		var conns []net.Conn
		for _, b := range batches {
			conns = append(conns, b.conns...)
		}
		var wg sync.WaitGroup
		var kept atomic.Int32
		for _, nc := range conns {
			wg.Add(1)
			go func() {
				defer wg.Done()
				nc.SetReadDeadline(time.Now().Add(20 * time.Second))
				_, err := io.Copy(io.Discard, nc) // the server's preamble, then its close
				if errors.Is(err, os.ErrDeadlineExceeded) {
					kept.Add(1)
				}
			}()
		}
		wg.Wait()
		require.Zero(t, kept.Load(), "connections the server did not close after its handshake timeout")
		require.Eventually(t, func() bool { return v.refusals(ErrHandshakeTimeout) == len(conns) }, 10*time.Second, 5*time.Millisecond,
			"OnRefused should report every hostile connection as a handshake timeout (%d of %d)", v.refusals(ErrHandshakeTimeout), len(conns))
		hsWaitOpening(t, v.srv, 0)
		for _, b := range batches {
			b.close()
		}
		hsWaitGoroutines(t, base)
		goleak.VerifyNone(t, leaks)
		v.good(t, "after the timeouts")
	})
}

// TestHandshakeSlotWaitEndsOnClose: a connection waiting for a handshake
// slot stops waiting when the server is closed, without waiting for its
// timeout.
func TestHandshakeSlotWaitEndsOnClose(t *testing.T) {
	g := &slotGate{slots: make(chan struct{}, 1), ctx: context.Background(), deadline: time.Now().Add(time.Minute), timeout: time.Minute}
	quit := make(chan struct{})
	g.quit = quit
	release, err := g.take()
	require.NoError(t, err)
	done := make(chan error, 1)
	go func() {
		_, err := g.take()
		done <- err
	}()
	close(quit)
	require.ErrorIs(t, atkRecv(t, done, "the second take"), ErrServerClosed)
	release()
	release() // a second call gives back nothing
	require.Empty(t, g.slots)

	g = &slotGate{slots: make(chan struct{}, 1), ctx: context.Background(), deadline: time.Now().Add(50 * time.Millisecond), timeout: 50 * time.Millisecond}
	g.slots <- struct{}{}
	_, err = g.take()
	require.ErrorIs(t, err, ErrHandshakeTimeout)
	require.True(t, strings.Contains(err.Error(), "Server.MaxHandshakes"), fmt.Sprint(err))
}
