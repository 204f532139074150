package ocapn

import (
	"context"
	"errors"
	"fmt"
)

// Object is what OCapN peers send messages to: a Go value exported to a
// session (returned from a delivery, passed as an argument, or registered
// under a swiss number with Node.Register).
//
// Deliver runs on the node's event loop, one message at a time for the
// whole node, so an object needs no locks; it must not block. args are
// the message's arguments as Syrup values (see package syrup), in which
// references to the peer's objects are *Ref and references to this
// node's own objects are those objects. What it returns resolves the
// sender's promise: a Syrup value, an Object, a *Ref, a *Promise, or a
// slice, Dict, Record or Set holding them. An error breaks the promise;
// the peer sees its message as a string.
type Object interface {
	Deliver(args []any) (any, error)
}

// ObjectFunc adapts a function to the Object interface.
type ObjectFunc func(args []any) (any, error)

// Deliver calls f(args).
func (f ObjectFunc) Deliver(args []any) (any, error) { return f(args) }

// Promise is an eventual value: the answer to a message sent with
// Ref.Deliver, a session being opened by Node.Enliven, or one made by
// NewPromise. Objects may return a Promise; messages sent to a Ref that
// names a promise wait for its resolution.
type Promise struct {
	n    *Node         // whose event loop settles it
	done chan struct{} // closed once settled
	// guarded by the node's loop; read by Wait after done
	resolved bool
	value    any
	err      error
	then     []func(any, error)

	// Routing messages sent to it before it settles (pipelining; on the
	// loop): the promise it was fulfilled with, the session and answer
	// position of the question it answers while that is open, and the
	// deliveries waiting for one of these to appear.
	follows   *Promise
	answerS   *session
	answerPos int
	routed    []func()
}

// Resolver settles its Promise, once; later calls do nothing.
type Resolver struct{ p *Promise }

// NewPromise returns an unresolved promise and its resolver, for an
// object to hand out before it knows the value. It may be called from any
// goroutine.
func (n *Node) NewPromise() (*Promise, *Resolver) {
	p := &Promise{n: n, done: make(chan struct{})}
	return p, &Resolver{p: p}
}

// Fulfill resolves the promise with v (which may be another promise). It
// may be called from any goroutine; the promise is settled on the node's
// event loop.
func (r *Resolver) Fulfill(v any) { r.p.settle(v, nil) }

// Break breaks the promise with err.
func (r *Resolver) Break(err error) {
	if err == nil {
		err = errors.New("ocapn: promise broken")
	}
	r.p.settle(nil, err)
}

// settle resolves p, following a promise it is fulfilled with.
func (p *Promise) settle(v any, err error) {
	if q, ok := v.(*Promise); ok && err == nil {
		if q == p {
			err, v = errors.New("ocapn: a promise fulfilled with itself"), nil
		} else {
			q.whenSettled(func(v any, err error) { p.settle(v, err) })
			p.onLoop(func() {
				if !p.resolved && p.follows == nil {
					p.follows = q
					p.reroute()
				}
			})
			return
		}
	}
	p.onLoop(func() {
		if p.resolved {
			return
		}
		p.resolved, p.value, p.err = true, v, err
		close(p.done)
		callbacks := p.then
		p.then = nil
		for _, f := range callbacks {
			f(v, err)
		}
		p.reroute()
	})
}

// reroute hands the deliveries waiting on p back to deliverTo, in order:
// p has settled, or now follows a promise, or answers an open question.
// On the loop.
func (p *Promise) reroute() {
	waiting := p.routed
	p.routed = nil
	for _, f := range waiting {
		f()
	}
}

// whenSettled runs f on the node's event loop once p is settled.
func (p *Promise) whenSettled(f func(any, error)) {
	p.onLoop(func() {
		if p.resolved {
			f(p.value, p.err)
			return
		}
		p.then = append(p.then, f)
	})
}

// onLoop runs f on p's node's event loop, after what was posted before.
func (p *Promise) onLoop(f func()) { p.n.post(f) }

// Then runs f on the node's event loop once the promise is settled, with
// its value or the error that broke it.
func (p *Promise) Then(f func(v any, err error)) { p.whenSettled(f) }

// Wait blocks until the promise is settled or ctx ends, and returns the
// value or the error. It must not be called from an object's Deliver
// (the event loop would wait for itself).
func (p *Promise) Wait(ctx context.Context) (any, error) {
	select {
	case <-p.done:
		return p.value, p.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// BrokenError is the error of a promise the peer broke: its reason, as
// the peer sent it.
type BrokenError struct {
	Reason any
}

// Error returns the reason, as text.
func (e *BrokenError) Error() string {
	if s, ok := e.Reason.(string); ok {
		return "ocapn: broken by the peer: " + s
	}
	return fmt.Sprintf("ocapn: broken by the peer: %v", e.Reason)
}

// ErrSessionEnded breaks what was waiting on a session when it ended.
var ErrSessionEnded = errors.New("ocapn: session ended")
