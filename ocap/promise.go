package ocap

import (
	"context"
	"runtime"
	"slices"
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

// DefaultMaxPendingPerPromise is how many messages may wait on one
// unsettled promise made by this program (Send, NewPromise); see
// Node.MaxPendingPerPromise for the answers a node owes its peers.
const DefaultMaxPendingPerPromise = 4096

// maxPromiseHops bounds how many promises a message may pass through on
// its way from one promise that resolved to another, and how long a chain
// of promises Resolver.Fulfil and an actor answering with a promise
// follow: longer ones are treated as cycles (ErrPromiseCycle).
const maxPromiseHops = 4096

// promiseState is a promise's shared state. Its mu is never held while
// anything else happens: no delivery, no callback, no other promise's mu.
// The one exception is Session.transmit, which holds it while taking the
// session's mu, so that a message leaves before any message sent to its
// answer. Lock order: followMu, then a promise's mu, then a session's mu.
type promiseState struct {
	// remote is set once, when the message this promise answers leaves on
	// a connection; from then on messages to the promise go there.
	remote atomic.Pointer[remoteAnswer]

	mu      sync.Mutex // guards the fields below
	settled bool
	result  payload
	err     error
	// pending are messages sent to the promise before it settled or left,
	// in order. While draining is set they are being handed on (by one
	// flow at a time), and new messages join them rather than overtake.
	pending   []*message
	draining  bool
	limit     int             // most messages pending; 0: DefaultMaxPendingPerPromise
	follows   *promiseState   // the promise this one will settle as, if any
	listeners []func(w *flow) // run once when the promise settles
	dropped   bool            // the program dropped its *Promise
	finished  bool            // op:finish is due or sent for the remote answer
}

// newPromise returns a promise whose handle tells the peer, once the
// garbage collector finds it unreachable, that its answer is finished.
func newPromise() *Promise {
	p := &Promise{st: &promiseState{}}
	runtime.AddCleanup(p, (*promiseState).handleDropped, p.st)
	return p
}

// handleDropped runs when the program's *Promise is gone. The peer is
// told its answer is finished, after any messages still being handed on
// to it.
func (st *promiseState) handleDropped() {
	st.mu.Lock()
	st.dropped = true
	ra := st.remote.Load()
	finish := !st.draining && st.finishLocked()
	st.mu.Unlock()
	if finish {
		ra.s.finish(ra.q)
	}
}

// finishLocked reports whether op:finish for the promise's remote answer
// is due now (the promise left and was dropped), claiming it: it is sent
// once. st.mu is held.
func (st *promiseState) finishLocked() bool {
	if !st.dropped || st.finished || st.remote.Load() == nil {
		return false
	}
	st.finished = true
	return true
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
	var w flow
	p.st.onSettle(func(*flow) { close(done) }, &w)
	w.run()
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
func (p *Promise) deliver(m *message, w *flow) { forward(p.st, m, w, true) }

// forward carries m from promise cur on, without recursion: if arriving,
// m has just been sent to cur and waits there if cur has not settled or
// left (or is handing on earlier messages); otherwise m is one of cur's
// waiting messages being handed on. A promise that resolved to another
// promise passes m along; coming back to a promise already passed breaks
// m with ErrPromiseCycle.
func forward(cur *promiseState, m *message, w *flow, arriving bool) {
	var seen []*promiseState // the promises passed, small
	var seenMap map[*promiseState]bool
	for {
		cur.mu.Lock()
		ra := cur.remote.Load()
		if arriving && (cur.draining || (ra == nil && !cur.settled)) {
			if len(cur.pending) >= cur.limitLocked() {
				cur.mu.Unlock()
				m.fail(errTooManyPending(cur.limitLocked()), w)
				return
			}
			cur.pending = append(cur.pending, m)
			cur.mu.Unlock()
			return
		}
		var next target
		var err error
		if ra == nil {
			next, err = cur.resolutionLocked()
		}
		cur.mu.Unlock()
		switch {
		case ra != nil:
			ra.s.transmit(desc{kind: descYourAnswer, id: ra.q}, m, w)
			return
		case err != nil:
			m.fail(err, w)
			return
		}
		p, ok := next.(*Promise)
		if !ok {
			next.deliver(m, w)
			return
		}
		if seenMap == nil && len(seen) < 8 {
			seen = append(seen, cur)
		} else {
			if seenMap == nil {
				seenMap = make(map[*promiseState]bool, 16)
				for _, s := range seen {
					seenMap[s] = true
				}
			}
			seenMap[cur] = true
		}
		m.hops++
		if m.hops > maxPromiseHops || seenMap[p.st] || slices.Contains(seen, p.st) {
			m.fail(ErrPromiseCycle, w)
			return
		}
		cur, arriving = p.st, true
	}
}

// limitLocked is how many messages may wait on the promise. st.mu is held.
func (st *promiseState) limitLocked() int {
	if st.limit > 0 {
		return st.limit
	}
	return DefaultMaxPendingPerPromise
}

// resolutionLocked returns what messages to the settled promise go to, or
// the error they break with. st.mu is held.
func (st *promiseState) resolutionLocked() (target, error) {
	if st.err != nil {
		return nil, st.err
	}
	r, ok := st.result.asRef()
	switch {
	case !ok:
		return nil, ErrNotReference
	case r.t == nil:
		return nil, ErrNilRef
	}
	return r.t, nil
}

// startDrainLocked reports whether the caller must hand on the promise's
// waiting messages (it has settled or left), claiming that job. st.mu is
// held.
func (st *promiseState) startDrainLocked() bool {
	if st.draining || len(st.pending) == 0 {
		return false
	}
	st.draining = true
	return true
}

// drain hands on the promise's waiting messages, in order, including
// those that arrive meanwhile, then lets later messages go straight on.
func (st *promiseState) drain(w *flow) {
	for {
		st.mu.Lock()
		batch := st.pending
		st.pending = nil
		if len(batch) == 0 {
			st.draining = false
			finish := st.finishLocked()
			st.mu.Unlock()
			if finish {
				ra := st.remote.Load()
				ra.s.finish(ra.q)
			}
			return
		}
		st.mu.Unlock()
		for i, m := range batch {
			batch[i] = nil
			forward(st, m, w, false)
		}
	}
}

// settle fulfils (err == nil) or breaks the promise, once; later calls do
// nothing. Messages waiting on it go on to the resolution, in order, and
// its callbacks run, later in w.
func (st *promiseState) settle(r payload, err error, w *flow) {
	st.mu.Lock()
	if st.settled {
		st.mu.Unlock()
		return
	}
	st.settled, st.result, st.err = true, r, err
	st.follows = nil
	drain := st.startDrainLocked()
	ls := st.listeners
	st.listeners = nil
	st.mu.Unlock()
	if drain {
		w.push(flowItem{st: st})
	}
	for _, f := range ls {
		w.push(flowItem{fn: f})
	}
}

// onSettle runs f in w once the promise has settled: soon, if it has.
func (st *promiseState) onSettle(f func(w *flow), w *flow) {
	st.mu.Lock()
	if !st.settled {
		st.listeners = append(st.listeners, f)
		st.mu.Unlock()
		return
	}
	st.mu.Unlock()
	w.push(flowItem{fn: f})
}

// outcome returns what the promise settled with.
func (st *promiseState) outcome() (payload, error) {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.result, st.err
}

// followMu serializes follow, so that two promises made to follow each
// other at the same time cannot both miss the cycle.
var followMu sync.Mutex

// follow makes st settle as p does (Resolver.Fulfil with a promise, an
// actor answering with one). If p is st, or follows or resolves to st
// through other promises, st breaks with ErrPromiseCycle instead, and so
// do the promises that follow it.
func (st *promiseState) follow(p *promiseState, w *flow) {
	followMu.Lock()
	cyclic := p.leadsTo(st)
	if !cyclic {
		st.mu.Lock()
		if !st.settled {
			st.follows = p
		}
		st.mu.Unlock()
	}
	followMu.Unlock()
	if cyclic {
		st.settle(payload{}, ErrPromiseCycle, w)
		return
	}
	p.onSettle(func(w *flow) {
		r, err := p.outcome()
		st.settle(r, err, w)
	}, w)
}

// leadsTo reports whether st is to, or follows it or resolves to it
// through other promises, or the chain is too long to tell. followMu is
// held.
func (st *promiseState) leadsTo(to *promiseState) bool {
	cur := st
	for hops := 0; cur != nil; hops++ {
		if cur == to || hops > maxPromiseHops {
			return true
		}
		cur.mu.Lock()
		next := cur.follows
		if next == nil && cur.settled && cur.err == nil && cur.remote.Load() == nil {
			if r, ok := cur.result.asRef(); ok {
				if p, ok := r.t.(*Promise); ok {
					next = p.st
				}
			}
		}
		cur.mu.Unlock()
		cur = next
	}
	return false
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
