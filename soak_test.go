package bokbok

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// The soak test runs only when asked for, for as long as asked:
//
//	go test -run Soak -soak=10m -timeout 20m -count=1 -v .
//
// Without -timeout, go test stops any test after 10 minutes; the soak then
// shortens its load so that it still ends, and checks, in time.
// RELIABILITY.md describes it and records a run.
var soakFlag = flag.Duration("soak", 0, "run TestSoak for this long, e.g. -soak=10m (0 skips it)")

const (
	soakWorkers     = 12               // client workers, half secure, half insecure
	soakMaxCallers  = 5                // concurrent callers on one connection
	soakMaxSize     = 1 << 20          // largest call payload
	soakHeapBound   = 4 << 20          // the heap at the end may exceed the start by this much
	soakFinishBound = 2 * time.Minute  // every call must have returned this long after the end
	soakWindDown    = 30 * time.Second // kept free before the test's deadline for the end and the checks
)

// soakMsg is a soak call; the handler echoes it back.
type soakMsg struct {
	ID    uint64 `msgpack:"id"`
	Delay int64  `msgpack:"delay"` // microseconds the handler waits first
	Data  []byte `msgpack:"data"`
}

// soakIDs is a set of call ids (they are dense, so a bitmap).
type soakIDs struct {
	mu   sync.Mutex
	bits []uint64
}

// add adds id and reports whether it was new.
func (s *soakIDs) add(id uint64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	w := int(id / 64)
	if w >= len(s.bits) {
		s.bits = append(s.bits, make([]uint64, w+1-len(s.bits)+len(s.bits)/2)...)
	}
	had := s.bits[w]&(1<<(id%64)) != 0
	s.bits[w] |= 1 << (id % 64)
	return !had
}

// missingFrom returns the ids in s that are not in other.
func (s *soakIDs) missingFrom(other *soakIDs) []uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	other.mu.Lock()
	defer other.mu.Unlock()
	var missing []uint64
	for w, bits := range s.bits {
		if w < len(other.bits) {
			bits &^= other.bits[w]
		}
		for b := range 64 {
			if bits&(1<<b) != 0 {
				missing = append(missing, uint64(w*64+b))
			}
		}
	}
	return missing
}

// soakStats counts every call by how it ended, and the churn around them.
type soakStats struct {
	nextID                              atomic.Uint64
	sent, ok                            atomic.Int64
	closed, shutdown, ctx, busy, remote atomic.Int64 // failed with a typed error
	other, wrong, ranTwice              atomic.Int64 // must stay 0
	inflight                            atomic.Int64
	conns                               [2]atomic.Int64 // opened, [0] insecure, [1] secure
	dialFailed, clientCloses, restart   atomic.Int64
	bytes                               atomic.Int64 // payload bytes of successful calls

	ran, answered soakIDs // ids the handlers ran; ids answered to their callers

	mu       sync.Mutex
	examples []string // the first few untyped errors and wrong replies
}

func (st *soakStats) note(format string, args ...any) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if len(st.examples) < 10 {
		st.examples = append(st.examples, fmt.Sprintf(format, args...))
	}
}

func (st *soakStats) failed() int64 {
	return st.closed.Load() + st.shutdown.Load() + st.ctx.Load() + st.busy.Load() + st.remote.Load() + st.other.Load()
}

func (st *soakStats) String() string {
	return fmt.Sprintf("sent=%d succeeded=%d failed=%d (closed=%d shutdown=%d context=%d busy=%d remote=%d untyped=%d) wrong-replies=%d ran-twice=%d in-flight=%d; connections=%d (insecure %d, secure %d, %d closed abruptly) dial-failures=%d server-restarts=%d; %d MiB echoed",
		st.sent.Load(), st.ok.Load(), st.failed(), st.closed.Load(), st.shutdown.Load(), st.ctx.Load(),
		st.busy.Load(), st.remote.Load(), st.other.Load(), st.wrong.Load(), st.ranTwice.Load(), st.inflight.Load(),
		st.conns[0].Load()+st.conns[1].Load(), st.conns[0].Load(), st.conns[1].Load(), st.clientCloses.Load(),
		st.dialFailed.Load(), st.restart.Load(), st.bytes.Load()>>20)
}

// TestSoak runs client workers against two servers (one secure, one
// insecure) for the -soak duration: mixed call sizes from 64 B to 1 MiB,
// random cancellations and deadlines, clients that reconnect (closing
// abruptly or gracefully, sometimes with calls in flight), and servers
// that restart on the same address (by Shutdown or Close). Every call must
// end with its own reply or a typed error, no request may run twice, and
// at the end goroutines and heap must be back to where they started.
func TestSoak(t *testing.T) {
	if *soakFlag == 0 {
		t.Skip("a soak test; run it with -soak=DURATION")
	}
	leaks := goleak.IgnoreCurrent()
	var ms runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&ms)
	heap0, goroutines0 := ms.HeapAlloc, runtime.NumGoroutine()

	st := &soakStats{}
	key := mustKey(t)
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d, %v, %d workers", seed, *soakFlag, soakWorkers)
	pool := faultPayload(rand.New(rand.NewPCG(seed, 0)), 2*soakMaxSize)

	load, finishBound := *soakFlag, soakFinishBound
	if d, ok := t.Deadline(); ok {
		left := time.Until(d) - soakWindDown
		if left <= 0 {
			t.Fatalf("the test timeout leaves no time to soak; pass -timeout")
		}
		if left < load {
			t.Logf("the test timeout (-timeout) leaves time to soak for %v only", left.Round(time.Second))
			load = left
		}
		finishBound = min(finishBound, time.Until(d)-soakWindDown/3)
	}
	ctx, stop := context.WithTimeout(context.Background(), load)
	defer stop()
	var servers, workers sync.WaitGroup
	addrs := make(map[bool]string)
	for _, secure := range []bool{false, true} {
		s := &soakServer{st: st, secure: secure, key: key, rng: rand.New(rand.NewPCG(seed, uint64(len(addrs)+1)))}
		addrs[secure] = s.listen(t)
		servers.Go(func() { s.run(ctx) })
	}
	for w := range soakWorkers {
		secure := w%2 == 1
		cfg := &Config{}
		if secure {
			cfg = &Config{Key: &key, User: "soak", Realm: "soak"}
		}
		rng := rand.New(rand.NewPCG(seed, uint64(100+w)))
		workers.Go(func() { soakWorker(ctx, st, addrs[secure], cfg, pool, rng) })
	}

	var peakHeap uint64
	peakGoroutines := 0
	tick := time.NewTicker(5 * time.Second)
	start, report := time.Now(), time.Now()
	for running := true; running; {
		select {
		case <-ctx.Done():
			running = false
		case <-tick.C:
			runtime.ReadMemStats(&ms)
			peakHeap = max(peakHeap, ms.HeapAlloc)
			peakGoroutines = max(peakGoroutines, runtime.NumGoroutine())
			if time.Since(report) >= time.Minute {
				report = time.Now()
				t.Logf("%v: %v; heap %d MiB, %d goroutines", time.Since(start).Round(time.Second), st, ms.HeapAlloc>>20, runtime.NumGoroutine())
			}
		}
	}
	tick.Stop()

	finished := make(chan struct{})
	go func() { workers.Wait(); servers.Wait(); close(finished) }()
	select {
	case <-finished:
	case <-time.After(finishBound):
		t.Fatalf("calls still pending %v after the end: %v", finishBound.Round(time.Second), st)
	}

	// Every call is accounted for, answered with its own reply, and ran
	// at most once; every call answered ran.
	sent, failed := st.sent.Load(), st.failed()
	if sent != st.ok.Load()+failed {
		t.Errorf("calls lost: sent %d, succeeded %d, failed %d", sent, st.ok.Load(), failed)
	}
	if st.other.Load() != 0 || st.wrong.Load() != 0 || st.ranTwice.Load() != 0 {
		t.Errorf("untyped errors, wrong replies or requests run twice: %v", st)
	}
	if missing := st.answered.missingFrom(&st.ran); len(missing) > 0 {
		t.Errorf("%d calls answered that no handler ran, such as %v", len(missing), missing[:min(5, len(missing))])
	}
	for _, e := range st.examples {
		t.Log(e)
	}
	if sent == 0 || st.ok.Load() == 0 || st.restart.Load() == 0 {
		t.Errorf("the soak did not get going: %v", st)
	}

	// Goroutines and heap back to where they started.
	goleak.VerifyNone(t, leaks)
	goroutines1 := runtime.NumGoroutine()
	st.ran.bits, st.answered.bits = nil, nil
	pool = nil
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&ms)
	heap1 := ms.HeapAlloc
	if heap1 > heap0+soakHeapBound {
		t.Errorf("heap %d KiB at the end, %d KiB at the start: more than %d MiB above", heap1>>10, heap0>>10, soakHeapBound>>20)
	}
	t.Logf("soak %v: %v; goroutines %d -> %d (peak %d); heap %d KiB -> %d KiB (peak %d MiB)",
		load.Round(time.Second), st, goroutines0, goroutines1, peakGoroutines, heap0>>10, heap1>>10, peakHeap>>20)
}

// soakServer is one server slot: a Server on a fixed address, restarted
// every few seconds.
type soakServer struct {
	st     *soakStats
	secure bool
	key    Key
	rng    *rand.Rand // used by run only
	addr   string
	ln     net.Listener // the first listener
}

// listen takes the slot's address.
func (s *soakServer) listen(t *testing.T) string {
	ln, err := Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.addr, s.ln = ln.Addr().String(), ln
	return s.addr
}

// handler echoes a soakMsg after its delay, and notes that its id ran.
func (s *soakServer) handler(ctx context.Context, req *Request) (any, error) {
	var m soakMsg
	if err := req.Decode(&m); err != nil {
		return nil, err
	}
	if !s.st.ran.add(m.ID) {
		s.st.ranTwice.Add(1)
		s.st.note("request %d ran twice", m.ID)
	}
	if m.Delay > 0 {
		t := time.NewTimer(time.Duration(m.Delay) * time.Microsecond)
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return m, nil
}

// run serves until ctx ends, stopping the server every 3 to 12 seconds,
// by Shutdown or Close at random, and starting a new one on the same
// address after a pause in which clients find nobody listening.
func (s *soakServer) run(ctx context.Context) {
	ln := s.ln
	for {
		srv := &Server{Config: Config{Handler: HandlerFunc(s.handler)}}
		if s.secure {
			srv.Realm = "soak"
			srv.UserKey = func(user string) (Key, bool) { return s.key, user == "soak" }
		} else {
			// A small handler limit and no queue, so that some calls are
			// refused busy.
			srv.MaxConcurrentHandlers, srv.MaxQueuedRequests = 3, -1
		}
		served := make(chan error, 1)
		go func() { served <- srv.Serve(ln) }()
		up := time.NewTimer(time.Duration(3000+s.rng.IntN(9000)) * time.Millisecond)
		select {
		case <-ctx.Done():
		case <-up.C:
		}
		up.Stop()
		if s.rng.IntN(2) == 0 {
			sctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			srv.Shutdown(sctx)
			cancel()
		} else {
			srv.Close()
		}
		srv.Wait()
		<-served
		if ctx.Err() != nil {
			return
		}
		s.st.restart.Add(1)
		time.Sleep(time.Duration(s.rng.IntN(200)) * time.Millisecond)
		for {
			var err error
			if ln, err = Listen(s.addr); err == nil {
				break
			}
			if ctx.Err() != nil {
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
}

// soakSleep sleeps for d or until ctx ends.
func soakSleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

// soakWorker connects to addr again and again until ctx ends. On each
// connection a few callers make a few hundred calls between them; then
// the worker closes it (Close or Shutdown), and sometimes it closes it
// abruptly while calls are in flight.
func soakWorker(ctx context.Context, st *soakStats, addr string, cfg *Config, pool []byte, rng *rand.Rand) {
	for ctx.Err() == nil {
		dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		c, err := Dial(dctx, addr, cfg)
		cancel()
		if err != nil {
			if ctx.Err() == nil {
				st.dialFailed.Add(1) // the server is restarting
			}
			soakSleep(ctx, time.Duration(10+rng.IntN(90))*time.Millisecond)
			continue
		}
		if cfg.Key != nil {
			st.conns[1].Add(1)
		} else {
			st.conns[0].Add(1)
		}
		var budget atomic.Int64
		budget.Store(int64(20 + rng.IntN(400)))
		var wg sync.WaitGroup
		for range 1 + rng.IntN(soakMaxCallers) {
			crng := rand.New(rand.NewPCG(rng.Uint64(), rng.Uint64()))
			wg.Go(func() {
				for ctx.Err() == nil && budget.Add(-1) >= 0 && soakCall(c, st, pool, crng) {
				}
			})
		}
		switch rng.IntN(10) {
		case 0, 1: // abruptly, calls in flight
			soakSleep(context.Background(), time.Duration(rng.IntN(500))*time.Millisecond)
			st.clientCloses.Add(1)
			c.Close()
			wg.Wait()
		case 2, 3, 4, 5:
			wg.Wait()
			sctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			c.Shutdown(sctx)
			cancel()
		default:
			wg.Wait()
			c.Close()
		}
	}
}

// soakCall makes one call with a fresh id, a payload of 64 B to 1 MiB and
// sometimes a short deadline or a cancellation, and counts how it ended.
// It reports whether the connection may take more calls.
func soakCall(c *Conn, st *soakStats, pool []byte, rng *rand.Rand) bool {
	id := st.nextID.Add(1)
	k := rng.IntN(15) // 64 B << k: 64 B to 1 MiB, as many calls per doubling
	n := min(soakMaxSize, 64<<k+rng.IntN(64<<k))
	off := rng.IntN(len(pool) - n + 1)
	msg := soakMsg{ID: id, Data: pool[off : off+n]}
	if rng.IntN(10) == 0 {
		msg.Delay = rng.Int64N(20_000)
	}
	ctx, cancel := context.Background(), context.CancelFunc(func() {})
	switch r := rng.IntN(100); {
	case r < 8:
		ctx, cancel = context.WithTimeout(ctx, time.Duration(1+rng.IntN(50))*time.Millisecond)
	case r < 12:
		ctx, cancel = context.WithCancel(ctx)
		defer time.AfterFunc(time.Duration(rng.IntN(20_000))*time.Microsecond, cancel).Stop()
	}
	defer cancel()

	st.sent.Add(1)
	st.inflight.Add(1)
	var out soakMsg
	err := c.Call(ctx, msg, &out)
	st.inflight.Add(-1)
	var re *RemoteError
	switch {
	case err == nil:
		st.ok.Add(1)
		if out.ID != id || !bytes.Equal(out.Data, msg.Data) {
			st.wrong.Add(1)
			st.note("call %d (%d bytes) answered with id %d (%d bytes)", id, n, out.ID, len(out.Data))
			return true
		}
		st.answered.add(id)
		st.bytes.Add(int64(n))
		return true
	case errors.Is(err, ErrClosed):
		st.closed.Add(1)
		return false
	case errors.Is(err, ErrShutdown):
		st.shutdown.Add(1)
		return false
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		st.ctx.Add(1)
		return true
	case errors.Is(err, ErrBusy):
		st.busy.Add(1)
		return true
	case errors.As(err, &re):
		st.remote.Add(1)
		st.note("call %d: %v", id, err)
		return true
	default:
		st.other.Add(1)
		st.note("call %d: untyped error %v", id, err)
		return c.Err() == nil
	}
}
