package ocap

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"
)

// Defaults of HoldOptions.
const (
	// DefaultHoldInitialDelay is the wait after the first failed attempt
	// to enliven a held sturdyref, and the least time between two
	// enlivenings.
	DefaultHoldInitialDelay = 100 * time.Millisecond

	// DefaultHoldMaxDelay bounds the wait between two attempts.
	DefaultHoldMaxDelay = 10 * time.Second
)

// ErrPersistentClosed is the error of every use of a Persistent after its
// Close.
var ErrPersistentClosed = errors.New("ocap: the persistent reference is closed")

// HoldOptions are the settings of Node.Hold. The zero value (or nil) is
// ready to use: no hook, the default delays, no bound on attempts.
type HoldOptions struct {
	// OnEnliven, if not nil, runs after each new enlivening, the first
	// one included, before the reference is handed to any caller: a
	// program uses it to set up what the host forgot when the connection
	// was lost (join again, register its callback actors again). It runs
	// in the Persistent's own goroutine, one call at a time, with a
	// context that ends when no use is waiting any more or on Close, and
	// it must not call Close. While it runs, uses wait; a use from inside
	// it deadlocks unless it goes through the Ref it was given.
	//
	// If it returns an error, the reference is not handed out: the
	// attempt counts as failed (see MaxAttempts), and the next attempt,
	// after the backoff, enlivens again and runs OnEnliven again.
	OnEnliven func(ctx context.Context, r Ref) error

	// InitialDelay is the wait after the first failed attempt; each
	// further failure doubles it, up to MaxDelay. The wait is jittered:
	// between half of it and all of it. It is also the least time between
	// two enlivenings, so that a host that accepts and at once drops
	// connections is not dialled in a loop. 0 means
	// DefaultHoldInitialDelay.
	InitialDelay time.Duration

	// MaxDelay bounds the wait between two attempts. 0 means
	// DefaultHoldMaxDelay (or InitialDelay, if that is larger).
	MaxDelay time.Duration

	// MaxAttempts, if positive, bounds how many failed attempts one use
	// waits through (made for it or for other uses at the same time)
	// before it fails with the last attempt's error; 0 means no bound but
	// the use's context. The handle goes on dialing while other uses
	// wait, and a later use starts counting again.
	MaxAttempts int
}

// Persistent is a handle on a sturdyref that stays usable when the
// connection to its host is lost. A program keeps the handle rather than a
// Ref: each use (Ref, Send, SendOnly) gets the live reference, and
// enlivens the sturdyref again if that reference broke because its
// connection closed, say because the host restarted (with a Store, so that
// it serves the same sturdyref). Node.Hold makes one.
//
// # Enlivening
//
// A Persistent enlivens lazily: Hold dials nothing, the first use
// enlivens, and so does the first use after the reference broke (its
// session ended, or the program released it). A use waits, within its
// context, while the handle enlivens; uses at the same time share one
// enlivening and one run of OnEnliven. A failed attempt (the host is
// unreachable, OnEnliven failed) is tried again after a wait that grows
// exponentially, with jitter, from HoldOptions.InitialDelay up to
// HoldOptions.MaxDelay. Attempts go on while a use waits and stop when
// none does (a later use resumes them, with the backoff reached so far),
// or on Close. A use that gives up because its context ended fails with an
// error matching the context's error and, if an attempt failed, that
// attempt's error.
//
// A sturdyref the host does not know (an error matching
// ErrUnknownSturdyref: revoked, or its swiss number not kept across the
// host's restart) ends the attempts for good: that use and every later one
// fail with that error at once, and nothing is dialled again.
//
// # At most once
//
// The handle never sends a message twice. Send and SendOnly wait only for
// a reference to send through: a message that was not sent because no
// connection was open waits for one within its context, and if the
// context ends first the message is not sent at all (Send's promise
// breaks with the context's error). Once a message has been handed to the
// connection, its fate is that of any message sent through a Ref: if the
// connection is lost before the answer comes back, the promise breaks
// with an error matching ErrDisconnected, and the handle does not send it
// again, since the host may or may not have received it. The next use
// enlivens again; resending is the caller's decision. A connection whose
// host has just gone, before this end has noticed, still looks live: a
// message sent then breaks the same way.
//
// # Bounds and goroutines
//
// There is no queue of waiting messages: each waiting message is held by
// the goroutine that called Send or SendOnly, which blocks. The handle
// owns at most one goroutine, which enlivens while a use waits and ends
// when the reference is live, the attempts stop, or Close is called.
//
// A Persistent is safe for concurrent use. Its methods block, so call
// them outside vats (as Promise.Await), not in an actor's turn.
type Persistent struct {
	node     *Node
	sr       Sturdyref
	where    string // the host's address, for errors
	hook     func(ctx context.Context, r Ref) error
	initial  time.Duration
	max      time.Duration
	attempts int

	wg sync.WaitGroup // counts the goroutine of the run, if any

	mu      sync.Mutex    // guards the fields below
	ref     Ref           // the live reference, or the zero Ref
	sess    *Session      // ref's session (nil for a reference without one)
	changed chan struct{} // closed, and replaced, whenever the fields below change
	run     *holdRun      // the enlivening under way, or nil
	waiters int           // uses waiting for the reference
	fails   int           // consecutive failed attempts, for the backoff
	failSeq uint64        // failed attempts so far, for MaxAttempts
	lastErr error         // the last failed attempt's error
	nextTry time.Time     // no attempt before this
	gone    error         // if not nil, every use fails with it
}

// holdRun is one enlivening under way: the goroutine that tries, with
// backoff, until it succeeds or is stopped.
type holdRun struct {
	cancel   context.CancelFunc // stops it
	stopping bool               // cancel was called (guarded by Persistent.mu)
}

// Hold returns a handle on the sturdyref s that enlivens it when it is
// used, and again after the connection to its host is lost; see
// Persistent. opts may be nil. Hold dials nothing; a sturdyref that
// cannot be enlivened at all (the zero Sturdyref, a malformed one) gives
// a handle whose every use fails. Close the handle when done with it.
func (n *Node) Hold(s Sturdyref, opts *HoldOptions) *Persistent {
	var o HoldOptions
	if opts != nil {
		o = *opts
	}
	if o.InitialDelay <= 0 {
		o.InitialDelay = DefaultHoldInitialDelay
	}
	if o.MaxDelay <= 0 {
		o.MaxDelay = max(DefaultHoldMaxDelay, o.InitialDelay)
	}
	o.MaxDelay = max(o.MaxDelay, o.InitialDelay)
	p := &Persistent{
		node: n, sr: s, where: s.Addr.String(),
		hook: o.OnEnliven, initial: o.InitialDelay, max: o.MaxDelay, attempts: o.MaxAttempts,
		changed: make(chan struct{}),
	}
	switch {
	case s.IsZero():
		p.gone = errors.New("ocap: Hold of the zero Sturdyref")
	case len(s.Swiss) < minSwissSize || (s.Addr.Network != "tcp" && s.Addr.Network != "unix"):
		p.gone = fmt.Errorf("ocap: Hold of a malformed sturdyref (network %q, a swiss number of %d bytes)", s.Addr.Network, len(s.Swiss))
	}
	return p
}

// Sturdyref returns the sturdyref the handle holds.
func (p *Persistent) Sturdyref() Sturdyref { return p.sr }

// Ref returns the live reference to the sturdyref's object, enlivening it
// first if there is none or the one it had broke; it waits for that
// within ctx. Every caller gets the same Ref until it breaks. Releasing
// it (Ref.Release) makes the next use enliven again.
func (p *Persistent) Ref(ctx context.Context) (Ref, error) {
	p.mu.Lock()
	var stop context.CancelFunc // to call once p.mu is unlocked
	waiting := false
	defer func() {
		if waiting {
			p.waiters--
			if p.waiters == 0 && p.run != nil && !p.run.stopping {
				// Nobody waits any more: enliven lazily, at the next use.
				p.run.stopping = true
				stop = p.run.cancel
			}
		}
		p.mu.Unlock()
		if stop != nil {
			stop()
		}
	}()
	start := p.failSeq
	for {
		if p.gone != nil {
			return Ref{}, p.gone
		}
		if r, ok := p.liveLocked(); ok {
			return r, nil
		}
		if err := ctx.Err(); err != nil {
			return Ref{}, fmt.Errorf("ocap: waiting for a sturdyref of %s: %w", p.where, err)
		}
		if p.attempts > 0 && p.failSeq-start >= uint64(p.attempts) {
			return Ref{}, fmt.Errorf("ocap: gave up on a sturdyref of %s after %d failed attempts: %w", p.where, p.attempts, p.lastErr)
		}
		if !waiting {
			p.waiters++
			waiting = true
		}
		if p.run == nil {
			p.startLocked()
		}
		ch := p.changed
		p.mu.Unlock()
		select {
		case <-ch:
			p.mu.Lock()
		case <-ctx.Done():
			p.mu.Lock()
			if p.lastErr != nil {
				return Ref{}, fmt.Errorf("ocap: waiting for a sturdyref of %s: %w; the last attempt failed: %w", p.where, ctx.Err(), p.lastErr)
			}
			return Ref{}, fmt.Errorf("ocap: waiting for a sturdyref of %s: %w", p.where, ctx.Err())
		}
	}
}

// Send sends a message to the sturdyref's object and returns a promise for
// its answer, as Ref.Send does, once there is a live reference: it waits
// for one within ctx (see Persistent, "At most once"). Arguments are
// encoded at once. If no reference comes, or the handle is closed or gone,
// the message is not sent and the promise is broken with the error Ref
// gives. ctx bounds only the wait for a reference, not the answer: await
// the promise for that.
func (p *Persistent) Send(ctx context.Context, method string, args ...any) *Promise {
	pr := newPromise()
	m, err := newMessage(method, args, pr.st)
	if err != nil {
		settleNow(pr.st, payload{}, err)
		return pr
	}
	r, err := p.Ref(ctx)
	if err != nil {
		settleNow(pr.st, payload{}, err)
		return pr
	}
	deliverNow(r.t, m)
	return pr
}

// SendOnly sends a message and expects no answer, as Ref.SendOnly does,
// once there is a live reference: it waits for one within ctx. It returns
// the error of Ref, or of encoding the arguments, in which cases nothing
// was sent.
func (p *Persistent) SendOnly(ctx context.Context, method string, args ...any) error {
	m, err := newMessage(method, args, nil)
	if err != nil {
		return err
	}
	r, err := p.Ref(ctx)
	if err != nil {
		return err
	}
	deliverNow(r.t, m)
	return nil
}

// Close stops the handle: an enlivening under way is cancelled, uses
// waiting and later uses fail with ErrPersistentClosed, and Close returns
// once the handle's goroutine has ended. The connection and the Ref
// already handed out are left alone (Node.Close closes the node's
// connections). Closing again does nothing. Close must not be called from
// OnEnliven.
func (p *Persistent) Close() error {
	p.mu.Lock()
	var stop context.CancelFunc
	if p.gone != ErrPersistentClosed {
		p.gone = ErrPersistentClosed
		p.ref, p.sess = Ref{}, nil
		if p.run != nil && !p.run.stopping {
			p.run.stopping = true
			stop = p.run.cancel
		}
		p.broadcastLocked()
	}
	p.mu.Unlock()
	if stop != nil {
		stop()
	}
	p.wg.Wait()
	return nil
}

// liveLocked returns the live reference, if there is one, forgetting one
// that broke. p.mu is held.
func (p *Persistent) liveLocked() (Ref, bool) {
	if p.ref.IsZero() {
		return Ref{}, false
	}
	broke := false
	if p.sess != nil {
		select {
		case <-p.sess.Done():
			broke = true
		default:
		}
	}
	if ir, ok := p.ref.t.(*importRef); ok && ir.released.Load() {
		broke = true
	}
	if broke {
		p.ref, p.sess = Ref{}, nil
		return Ref{}, false
	}
	return p.ref, true
}

// broadcastLocked wakes every use waiting for a change. p.mu is held.
func (p *Persistent) broadcastLocked() {
	close(p.changed)
	p.changed = make(chan struct{})
}

// startLocked starts a run: the handle's goroutine, which enlivens. p.mu
// is held, and p.gone is nil, so Close has not begun to wait.
func (p *Persistent) startLocked() {
	ctx, cancel := context.WithCancel(context.Background())
	run := &holdRun{cancel: cancel}
	p.run = run
	p.wg.Add(1)
	go p.enlivenLoop(ctx, run)
}

// enlivenLoop is the handle's goroutine, owned by the handle (Close waits
// for it). It tries to enliven the sturdyref, waiting out the backoff
// before each attempt, until an attempt succeeds, the host does not know
// the sturdyref, or ctx ends (no use waits any more, or Close). Then it
// clears p.run and ends.
func (p *Persistent) enlivenLoop(ctx context.Context, run *holdRun) {
	defer p.wg.Done()
	defer run.cancel()
	for {
		p.mu.Lock()
		wait := time.Until(p.nextTry)
		p.mu.Unlock()
		if wait > 0 {
			t := time.NewTimer(wait)
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
			}
		}
		var r Ref
		var err error
		unknown := false
		if err = ctx.Err(); err == nil {
			r, unknown, err = p.attempt(ctx)
		}
		p.mu.Lock()
		done := true
		switch {
		case err == nil && p.gone == nil:
			p.ref, p.sess = r, r.Session()
			p.fails, p.lastErr = 0, nil
			p.nextTry = time.Now().Add(p.initial)
		case err == nil || ctx.Err() != nil:
			// Closed, or nobody waits any more: not the host's failure.
		case unknown:
			p.gone = err
		default:
			p.fails++
			p.failSeq++
			p.lastErr = err
			p.nextTry = time.Now().Add(p.backoff(p.fails))
			done = false
		}
		if done {
			p.run = nil
		}
		p.broadcastLocked()
		p.mu.Unlock()
		if done {
			return
		}
	}
}

// attempt enlivens the sturdyref once and runs OnEnliven. unknown reports
// that the host does not know the sturdyref.
func (p *Persistent) attempt(ctx context.Context) (r Ref, unknown bool, err error) {
	r, err = p.node.Enliven(ctx, p.sr)
	if err != nil {
		return Ref{}, errors.Is(err, ErrUnknownSturdyref), err
	}
	if p.hook != nil {
		if err := p.hook(ctx, r); err != nil {
			return Ref{}, false, fmt.Errorf("ocap: OnEnliven for a sturdyref of %s: %w", p.where, err)
		}
	}
	if s := r.Session(); s != nil {
		select {
		case <-s.Done():
			return Ref{}, false, fmt.Errorf("ocap: enlivening a sturdyref of %s: %w", p.where, &disconnected{cause: s.Err()})
		default:
		}
	}
	return r, false, nil
}

// backoff is the wait after the given number of consecutive failures:
// InitialDelay doubled for each failure after the first, at most
// MaxDelay, of which a random part up to half is taken off (jitter, so
// that many clients of a restarted host do not dial it all at once).
func (p *Persistent) backoff(fails int) time.Duration {
	d := p.initial
	for i := 1; i < fails && d < p.max; i++ {
		d *= 2
	}
	d = min(d, p.max)
	return d - rand.N(d/2+1)
}
