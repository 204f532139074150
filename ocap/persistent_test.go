package ocap

import (
	"context"
	"errors"
	"net"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/bokbok-go/bokbok"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

// Tests of Node.Hold and Persistent: a sturdyref held across restarts of
// its host.

// phCounts counts, across restarts of a host, the messages its counter
// actors received.
type phCounts struct {
	hello atomic.Int64
	block atomic.Int64
}

// phActor is the object a held sturdyref names. Its vat runs one message
// at a time.
type phActor struct {
	name    string
	counts  *phCounts
	release chan struct{} // Block waits for it
}

// Hello answers a greeting and counts it.
func (a *phActor) Hello(who string) string {
	a.counts.hello.Add(1)
	return "hello " + who + " from " + a.name
}

// Block counts itself and waits until released (or the host stops).
func (a *phActor) Block() string {
	a.counts.block.Add(1)
	select {
	case <-a.release:
	case <-time.After(20 * time.Second):
	}
	return "released"
}

// phHost is one run of a host process: a Node with a Store, served on a
// listener until stop, as a program that is restarted would be.
type phHost struct {
	node     *Node
	vat      *Vat
	srv      *bokbok.Server
	served   chan error
	accepted *atomic.Int64
	release  chan struct{}
	once     sync.Once
}

// countingListener counts the connections it accepts: every dial, whether
// its handshake succeeds or not.
type countingListener struct {
	net.Listener
	n *atomic.Int64
}

func (l countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.n.Add(1)
	}
	return c, err
}

// startPHost starts a host on addr ("127.0.0.1:0" for a free port) with
// the store at storePath, registering a phActor as label "echo", and
// returns it with its sturdyref. accepted counts the connections it
// accepts. The host is stopped when the test ends.
func startPHost(t *testing.T, addr, storePath, name string, counts *phCounts, accepted *atomic.Int64) (*phHost, Sturdyref) {
	t.Helper()
	st, err := OpenStore(storePath)
	require.NoError(t, err)
	h := &phHost{node: &Node{Store: st}, vat: NewVat(name), served: make(chan error, 1), accepted: accepted, release: make(chan struct{})}
	ln, err := h.node.Listen(addr)
	require.NoError(t, err)
	sr, err := h.node.RegisterAs("echo", h.vat.Spawn(&phActor{name: name, counts: counts, release: h.release}))
	require.NoError(t, err)
	h.srv = &bokbok.Server{Config: bokbok.Config{Handler: h.node}, UserKey: h.node.UserKey(nil)}
	go func() { h.served <- h.srv.Serve(countingListener{ln, accepted}) }()
	t.Cleanup(h.stop)
	return h, sr
}

// stop ends the host at once, as a crash would (its connections close
// without a goodbye), and waits until its goroutines have ended; the
// address is free again.
func (h *phHost) stop() {
	h.once.Do(func() {
		h.srv.Close()
		<-h.served
		h.srv.Wait()
		h.node.Close()
		close(h.release) // after the connections, so that Block answers nobody
		h.vat.Close()
		<-h.vat.Done()
	})
}

// phHello requires that p answers hello as the host named name.
func phHello(ctx context.Context, t *testing.T, p *Persistent, name string) {
	t.Helper()
	res, err := p.Send(ctx, "hello", "alice").Await(ctx)
	require.NoError(t, err)
	var s string
	require.NoError(t, res.Decode(&s))
	require.Equal(t, "hello alice from "+name, s)
}

// phNoLeaks checks, when the test ends, that it left no goroutine behind.
func phNoLeaks(t *testing.T) {
	leaks := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, leaks) }) // runs last
}

// phFast are options with short delays, for tests.
func phFast(hook func(context.Context, Ref) error) *HoldOptions {
	return &HoldOptions{OnEnliven: hook, InitialDelay: 2 * time.Millisecond, MaxDelay: 20 * time.Millisecond}
}

// TestPersistentSurvivesRestarts: the host is stopped and started again
// on the same address with the same store several times; the handle
// enlivens again after each restart, and OnEnliven runs each time, before
// the reference is handed out.
func TestPersistentSurvivesRestarts(t *testing.T) {
	phNoLeaks(t)
	ctx := srCtx(t)
	store := filepath.Join(t.TempDir(), "host.json")
	var counts phCounts
	var accepted atomic.Int64
	h, sr := startPHost(t, "127.0.0.1:0", store, "run 0", &counts, &accepted)
	addr := h.node.Addr

	alice := &Node{}
	defer alice.Close()
	var mu sync.Mutex // guards hooked
	var hooked []Ref  // the references OnEnliven was given, in order
	p := alice.Hold(sr, phFast(func(ctx context.Context, r Ref) error {
		// The hook can use the reference before anyone else gets it.
		res, err := r.Send("hello", "the hook").Await(ctx)
		if err != nil {
			return err
		}
		var s string
		if err := res.Decode(&s); err != nil {
			return err
		}
		mu.Lock()
		hooked = append(hooked, r)
		mu.Unlock()
		return nil
	}))
	defer p.Close()
	require.Equal(t, sr, p.Sturdyref())
	require.Zero(t, accepted.Load(), "Hold dials nothing")

	const restarts = 4
	for i := 0; i <= restarts; i++ {
		name := "run " + string(rune('0'+i))
		if i > 0 {
			as := srOnlySession(t, alice)
			h.stop()
			// Until alice's end notices, the reference looks live, and a
			// message sent meanwhile would break (see TestPersistentWhileHostDown).
			srWaitDone(ctx, t, as)
			var again Sturdyref
			h, again = startPHost(t, addr, store, name, &counts, &accepted)
			require.Equal(t, sr.String(), again.String(), "the store keeps the sturdyref")
		}
		phHello(ctx, t, p, name)
		phHello(ctx, t, p, name)
		r, err := p.Ref(ctx)
		require.NoError(t, err)
		mu.Lock()
		require.Len(t, hooked, i+1, "OnEnliven runs once per enlivening")
		require.True(t, r == hooked[i], "Ref gives the reference OnEnliven was given")
		mu.Unlock()
		require.Equal(t, int64(i+1), accepted.Load(), "one connection per run of the host")
	}
	require.Equal(t, int64(3*(restarts+1)), counts.hello.Load(), "every message delivered once")
}

// TestPersistentWhileHostDown: a message sent while the host is down
// waits within its context; if the context ends first it is not sent,
// and if the host comes back in time it is delivered once. A message
// whose delivery is unknown (the connection broke after it was sent) is
// not sent again.
func TestPersistentWhileHostDown(t *testing.T) {
	phNoLeaks(t)
	ctx := srCtx(t)
	store := filepath.Join(t.TempDir(), "host.json")
	var counts phCounts
	var accepted atomic.Int64
	h, sr := startPHost(t, "127.0.0.1:0", store, "first", &counts, &accepted)
	addr := h.node.Addr

	alice := &Node{}
	defer alice.Close()
	p := alice.Hold(sr, phFast(nil))
	defer p.Close()
	phHello(ctx, t, p, "first")

	// In flight when the host dies: the promise breaks and the message
	// is not resent, not even once the host is back.
	blocked := p.Send(ctx, "block")
	require.Eventually(t, func() bool { return counts.block.Load() == 1 }, 10*time.Second, time.Millisecond)
	as := srOnlySession(t, alice)
	h.stop()
	_, err := blocked.Await(ctx)
	require.ErrorIs(t, err, ErrDisconnected)

	srWaitDone(ctx, t, as)

	// Down: a send whose context ends is not sent, and says why. (Its
	// context leaves time for attempts to fail first even on a loaded
	// machine: dials to a closed loopback port fail within milliseconds.)
	short, cancel := context.WithTimeout(ctx, 2*time.Second)
	_, err = p.Send(short, "hello", "nobody").Await(ctx)
	cancel()
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.ErrorIs(t, err, syscall.ECONNREFUSED, "the last attempt's error: %v", err)
	require.ErrorContains(t, err, "the last attempt failed")
	require.ErrorIs(t, p.SendOnly(ctxDone(), "hello", "nobody"), context.Canceled)

	// Down: a send with time to spare waits for the host to come back.
	waited := make(chan *Promise, 1)
	go func() { waited <- p.Send(ctx, "hello", "alice") }()
	time.Sleep(50 * time.Millisecond) // some attempts fail meanwhile
	startPHost(t, addr, store, "second", &counts, &accepted)
	res, err := (<-waited).Await(ctx)
	require.NoError(t, err)
	var s string
	require.NoError(t, res.Decode(&s))
	require.Equal(t, "hello alice from second", s)

	require.Equal(t, int64(1), counts.block.Load(), "the message in flight was not resent")
	require.Equal(t, int64(2), counts.hello.Load(), "the message of the expired context was never sent")
}

// ctxDone returns a context that has ended.
func ctxDone() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return ctx
}

// TestPersistentUnknownAfterRestart: a host restarted without its store
// no longer knows the sturdyref. The use fails with ErrUnknownSturdyref,
// later uses fail at once, and the handle dials no more.
func TestPersistentUnknownAfterRestart(t *testing.T) {
	phNoLeaks(t)
	ctx := srCtx(t)
	dir := t.TempDir()
	var counts phCounts
	var accepted atomic.Int64
	h, sr := startPHost(t, "127.0.0.1:0", filepath.Join(dir, "host.json"), "first", &counts, &accepted)
	addr := h.node.Addr

	alice := &Node{}
	defer alice.Close()
	p := alice.Hold(sr, phFast(nil))
	defer p.Close()
	phHello(ctx, t, p, "first")

	as := srOnlySession(t, alice)
	h.stop()
	srWaitDone(ctx, t, as)
	_, other := startPHost(t, addr, filepath.Join(dir, "lost.json"), "second", &counts, &accepted)
	require.NotEqual(t, sr.String(), other.String())

	_, err := p.Ref(ctx)
	require.ErrorIs(t, err, ErrUnknownSturdyref)
	require.NoError(t, ctx.Err())
	dials := accepted.Load()
	for range 3 {
		start := time.Now()
		_, err = p.Send(ctx, "hello", "alice").Await(ctx)
		require.ErrorIs(t, err, ErrUnknownSturdyref)
		require.Less(t, time.Since(start), time.Second, "fails at once")
	}
	time.Sleep(50 * time.Millisecond)
	require.Equal(t, dials, accepted.Load(), "no more dials")
	p.mu.Lock()
	require.Nil(t, p.run, "no goroutine")
	p.mu.Unlock()
}

// TestPersistentClose: Close stops an enlivening under way, fails the
// uses waiting and later ones, and ends the handle's goroutine.
func TestPersistentClose(t *testing.T) {
	phNoLeaks(t)
	ctx := srCtx(t)
	// Nothing listens on the address.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr, err := bokbok.ParseAddr(ln.Addr().String())
	require.NoError(t, err)
	ln.Close()
	sr := Sturdyref{Addr: addr, Swiss: make([]byte, SwissSize)}

	alice := &Node{}
	defer alice.Close()
	p := alice.Hold(sr, phFast(nil))
	errs := make(chan error, 3)
	for range 3 {
		go func() {
			_, err := p.Ref(ctx)
			errs <- err
		}()
	}
	require.Eventually(t, func() bool {
		p.mu.Lock()
		defer p.mu.Unlock()
		return p.waiters == 3 && p.failSeq > 2
	}, 10*time.Second, time.Millisecond)
	require.NoError(t, p.Close())
	for range 3 {
		select {
		case err := <-errs:
			require.ErrorIs(t, err, ErrPersistentClosed)
		case <-ctx.Done():
			t.Fatal("a waiting use did not end")
		}
	}
	_, err = p.Ref(ctx)
	require.ErrorIs(t, err, ErrPersistentClosed)
	require.ErrorIs(t, p.SendOnly(ctx, "hello"), ErrPersistentClosed)
	require.NoError(t, p.Close(), "closing again")
}

// TestPersistentLazy: a handle dials only while a use waits: once every
// waiting use has given up, its goroutine ends; the next use resumes.
func TestPersistentLazy(t *testing.T) {
	phNoLeaks(t)
	ctx := srCtx(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	ln.Close()

	var counts phCounts
	var accepted atomic.Int64
	store := filepath.Join(t.TempDir(), "host.json")
	// Learn the sturdyref the host will serve, then take the host down.
	h, sr := startPHost(t, addr, store, "host", &counts, &accepted)
	h.stop()

	alice := &Node{}
	defer alice.Close()
	p := alice.Hold(sr, phFast(nil))
	defer p.Close()
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	_, err = p.Ref(short)
	cancel()
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.Eventually(t, func() bool {
		p.mu.Lock()
		defer p.mu.Unlock()
		return p.run == nil
	}, 10*time.Second, time.Millisecond, "the goroutine ends once nobody waits")
	p.mu.Lock()
	fails := p.failSeq
	p.mu.Unlock()
	time.Sleep(50 * time.Millisecond)
	p.mu.Lock()
	require.Equal(t, fails, p.failSeq, "no attempts while nobody waits")
	p.mu.Unlock()

	startPHost(t, addr, store, "host", &counts, &accepted)
	phHello(ctx, t, p, "host")
}

// TestPersistentSharedAndHookErrors: uses at the same time share one
// enlivening and one run of OnEnliven; an OnEnliven that fails is tried
// again after the backoff; MaxAttempts bounds how many failures one use
// waits through; a released reference is enlivened again.
func TestPersistentSharedAndHookErrors(t *testing.T) {
	phNoLeaks(t)
	ctx := srCtx(t)
	var counts phCounts
	var accepted atomic.Int64
	_, sr := startPHost(t, "127.0.0.1:0", filepath.Join(t.TempDir(), "host.json"), "host", &counts, &accepted)

	alice := &Node{}
	defer alice.Close()
	errHook := errors.New("not yet")
	var calls atomic.Int64
	failFirst := atomic.Int64{}
	failFirst.Store(2)
	hook := func(ctx context.Context, r Ref) error {
		calls.Add(1)
		if failFirst.Add(-1) >= 0 {
			return errHook
		}
		return nil
	}
	p := alice.Hold(sr, phFast(hook))
	defer p.Close()

	const uses = 8
	refs := make(chan Ref, uses)
	for range uses {
		go func() {
			r, err := p.Ref(ctx)
			if err != nil {
				t.Error(err)
			}
			refs <- r
		}()
	}
	var first Ref
	for i := range uses {
		r := <-refs
		if i == 0 {
			first = r
		}
		require.True(t, r == first, "every use gets the same reference")
	}
	require.Equal(t, int64(3), calls.Load(), "two failed runs of OnEnliven, one that worked, for all the uses")
	require.Len(t, alice.Sessions(), 1)

	// A released reference is enlivened again (over the same connection).
	first.Release()
	phHello(ctx, t, p, "host")
	require.Equal(t, int64(4), calls.Load())
	r, err := p.Ref(ctx)
	require.NoError(t, err)
	require.True(t, r != first)

	// MaxAttempts: a use gives up after that many failures.
	failFirst.Store(1 << 30)
	q := alice.Hold(sr, &HoldOptions{OnEnliven: hook, InitialDelay: time.Millisecond, MaxDelay: 2 * time.Millisecond, MaxAttempts: 3})
	defer q.Close()
	before := calls.Load()
	_, err = q.Ref(ctx)
	require.ErrorIs(t, err, errHook)
	require.ErrorContains(t, err, "after 3 failed attempts")
	require.GreaterOrEqual(t, calls.Load()-before, int64(3))
}

// TestHoldMalformed: a handle on a sturdyref that cannot be enlivened at
// all fails every use at once.
func TestHoldMalformed(t *testing.T) {
	n := &Node{}
	for _, sr := range []Sturdyref{
		{},
		{Addr: bokbok.Addr{Network: "tcp", Address: "127.0.0.1:1"}, Swiss: []byte("short")},
		{Addr: bokbok.Addr{Network: "udp", Address: "127.0.0.1:1"}, Swiss: make([]byte, SwissSize)},
	} {
		p := n.Hold(sr, nil)
		_, err := p.Ref(context.Background())
		require.ErrorContains(t, err, "ocap: Hold of ", "%+v", sr)
		require.NoError(t, p.Close())
	}
}

// TestPersistentBackoff: the waits grow from InitialDelay, doubling, up
// to MaxDelay, each between half of its value and all of it.
func TestPersistentBackoff(t *testing.T) {
	p := (&Node{}).Hold(Sturdyref{}, &HoldOptions{InitialDelay: 10 * time.Millisecond, MaxDelay: 70 * time.Millisecond})
	for fails, want := range map[int]time.Duration{1: 10, 2: 20, 3: 40, 4: 70, 5: 70, 100: 70} {
		want *= time.Millisecond
		for range 50 {
			d := p.backoff(fails)
			require.LessOrEqual(t, d, want, "failure %d", fails)
			require.GreaterOrEqual(t, d, want/2, "failure %d", fails)
		}
	}
	d := (&Node{}).Hold(Sturdyref{}, nil)
	require.Equal(t, DefaultHoldInitialDelay, d.initial)
	require.Equal(t, DefaultHoldMaxDelay, d.max)
	big := (&Node{}).Hold(Sturdyref{}, &HoldOptions{InitialDelay: time.Minute})
	require.Equal(t, time.Minute, big.max, "MaxDelay is at least InitialDelay")
}
