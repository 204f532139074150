package ocap

import (
	"context"
	"runtime"
	"sync"
	"sync/atomic"

	"github.com/vmihailenco/msgpack/v5"
)

// Promise is the eventual answer of a Send. It is fulfilled with a Result
// or broken with an error, once. Messages can be sent to a promise before
// it settles (promise pipelining): they are delivered, in order, to what
// it resolves to. A promise for an answer from the peer sends them to the
// peer at once, and they keep travelling through the peer's answer.
//
// When a program drops every reference to a *Promise for a peer's answer,
// the garbage collector tells the peer it can forget the answer.
type Promise struct{ st *promiseState }

// remoteAnswer names the peer's answer that a promise stands for.
type remoteAnswer struct {
	s *Session
	q uint64
}

// promiseState is a promise's shared state. Lock order: a promise's mu may
// be held while taking another promise's mu (a promise forwarding to the
// next), a vat's mu, or a session's mu; never the other way round.
type promiseState struct {
	// remote is set once, when the message this promise answers leaves on
	// a connection; from then on messages to the promise go there.
	remote atomic.Pointer[remoteAnswer]

	mu        sync.Mutex // guards the fields below
	settled   bool
	result    payload
	err       error
	pending   []*message // sent to the promise before it settled or left
	listeners []func()   // run once when the promise settles
	dropped   bool       // the program dropped its *Promise
}

// newPromise returns a promise whose handle tells the peer, once the
// garbage collector finds it unreachable, that its answer is finished.
func newPromise() *Promise {
	p := &Promise{st: &promiseState{}}
	runtime.AddCleanup(p, (*promiseState).handleDropped, p.st)
	return p
}

// handleDropped runs when the program's *Promise is gone.
func (st *promiseState) handleDropped() {
	st.mu.Lock()
	st.dropped = true
	ra := st.remote.Load()
	st.mu.Unlock()
	if ra != nil {
		ra.s.finish(ra.q)
	}
}

// Send sends a message to what the promise resolves to and returns a
// promise for its answer; see Ref.Send.
func (p *Promise) Send(method string, args ...any) *Promise { return p.Ref().Send(method, args...) }

// SendOnly sends a message to what the promise resolves to; see
// Ref.SendOnly.
func (p *Promise) SendOnly(method string, args ...any) error {
	return p.Ref().SendOnly(method, args...)
}

// Ref returns a reference to the promise, to pass in a message or to send
// through later. The reference keeps the promise alive.
func (p *Promise) Ref() Ref { return Ref{t: p} }

// Await waits until the promise settles or ctx ends. Use it outside vats;
// inside an actor use On, which does not block the vat.
func (p *Promise) Await(ctx context.Context) (Result, error) {
	done := make(chan struct{})
	p.st.onSettle(func() { close(done) })
	select {
	case <-done:
	case <-ctx.Done():
		return Result{}, ctx.Err()
	}
	r, err := p.st.outcome()
	runtime.KeepAlive(p)
	return Result{p: r}, err
}

// Settled reports whether the promise has settled, without waiting.
func (p *Promise) Settled() bool {
	p.st.mu.Lock()
	defer p.st.mu.Unlock()
	return p.st.settled
}

// EncodeMsgpack encodes the promise as a reference; see Ref.
func (p *Promise) EncodeMsgpack(enc *msgpack.Encoder) error { return encodeRef(enc, Ref{t: p}) }

// deliver sends a message to the promise.
func (p *Promise) deliver(m *message) { p.st.deliver(m) }

func (st *promiseState) deliver(m *message) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if ra := st.remote.Load(); ra != nil {
		ra.s.transmit(desc{kind: descYourAnswer, id: ra.q}, m)
		return
	}
	if !st.settled {
		st.pending = append(st.pending, m)
		return
	}
	st.forwardLocked(m)
}

// forwardLocked delivers m to what the settled promise resolved to.
func (st *promiseState) forwardLocked(m *message) {
	if st.err != nil {
		m.fail(st.err)
		return
	}
	r, ok := st.result.asRef()
	switch {
	case !ok:
		m.fail(ErrNotReference)
	case r.t == nil:
		m.fail(ErrNilRef)
	default:
		if p, self := r.t.(*Promise); self && p.st == st {
			m.fail(ErrNotReference)
			return
		}
		r.t.deliver(m)
	}
}

// settle fulfils (err == nil) or breaks the promise, once; later calls do
// nothing. Messages waiting on it go on to the resolution, in order.
func (st *promiseState) settle(r payload, err error) {
	st.mu.Lock()
	if st.settled {
		st.mu.Unlock()
		return
	}
	st.settled, st.result, st.err = true, r, err
	if st.remote.Load() == nil {
		for _, m := range st.pending {
			st.forwardLocked(m)
		}
	}
	st.pending = nil
	ls := st.listeners
	st.listeners = nil
	st.mu.Unlock()
	for _, f := range ls {
		f()
	}
}

// onSettle runs f once the promise has settled: now, if it has.
func (st *promiseState) onSettle(f func()) {
	st.mu.Lock()
	if !st.settled {
		st.listeners = append(st.listeners, f)
		st.mu.Unlock()
		return
	}
	st.mu.Unlock()
	f()
}

// outcome returns what the promise settled with.
func (st *promiseState) outcome() (payload, error) {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.result, st.err
}

// On arranges for fulfilled or broken (either may be nil) to run in the
// current vat, in a turn of its own, once p settles. ctx must be the
// context of a vat's turn (the one an actor's method receives); otherwise
// On returns ErrNoVat.
func On(ctx context.Context, p *Promise, fulfilled func(Result), broken func(error)) error {
	v := VatOf(ctx)
	if v == nil {
		return ErrNoVat
	}
	v.On(p, fulfilled, broken)
	return nil
}
