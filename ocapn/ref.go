package ocapn

import (
	"errors"
	"fmt"

	"github.com/bokbok-go/bokbok/ocapn/syrup"
)

// Ref is a reference to a peer's object or promise, held through a
// session. Its methods may be called from any goroutine, objects' Deliver
// included; messages sent through one Ref are delivered in the order they
// were sent.
type Ref struct {
	s       *session
	pos     int  // the peer's export position
	promise bool // the peer exported a promise
}

// Peer returns the locator of the peer whose object r names: the peer
// that exported it, which for a reference handed off by a third party is
// the object's own node, not the introducer.
func (r *Ref) Peer() Peer { return r.s.peer }

// IsPromise reports whether the peer exported the reference as a
// promise.
func (r *Ref) IsPromise() bool { return r.promise }

// DeliverOnly sends the object a message and expects no answer
// (op:deliver-only).
func (r *Ref) DeliverOnly(args ...any) {
	r.s.n.post(func() { r.deliverOnly(args...) })
}

// deliverOnly is DeliverOnly on the loop.
func (r *Ref) deliverOnly(args ...any) {
	s := r.s
	if s.ended {
		return
	}
	wire, err := s.toWire(args, 0)
	if err != nil {
		s.n.logf("ocapn: a message not sent", "err", err)
		return
	}
	s.send(syrup.Record{Label: sym("op:deliver-only"), Fields: []any{
		syrup.Record{Label: sym("desc:export"), Fields: []any{int64(r.pos)}}, wire,
	}})
}

// Deliver sends the object a message (op:deliver) and returns a promise
// for its answer: the value the peer fulfills it with, or a
// *BrokenError; ErrSessionEnded if the session ends first.
func (r *Ref) Deliver(args ...any) *Promise {
	s := r.s
	p, res := s.n.NewPromise()
	s.n.post(func() { s.ask(syrup.Record{Label: sym("desc:export"), Fields: []any{int64(r.pos)}}, args, p, res) })
	return p
}

// ask sends op:deliver to to (the peer's export or answer) with an answer
// position, p being the promise for the answer and res its resolver;
// until the answer comes, messages sent to p are pipelined to that
// position. On the loop.
func (s *session) ask(to syrup.Record, args []any, p *Promise, res *Resolver) {
	if s.ended {
		res.Break(fmt.Errorf("%w: %v", ErrSessionEnded, s.endErr))
		return
	}
	wire, err := s.toWire(args, 0)
	if err != nil {
		res.Break(err)
		return
	}
	answer := s.nextAnswer
	pos, err := s.exportValue(resolverObject{s: s, r: res, answer: answer})
	if err != nil {
		res.Break(err)
		return
	}
	s.nextAnswer++
	s.resolvers[res] = struct{}{}
	s.send(syrup.Record{Label: sym("op:deliver"), Fields: []any{
		to, wire, int64(answer), syrup.Record{Label: sym("desc:import-object"), Fields: []any{int64(pos)}},
	}})
	if !p.resolved {
		p.answerS, p.answerPos = s, answer
		p.reroute()
	}
}

// resolverObject is the object a peer answers one of our op:deliver
// messages through: fulfill or break. Messages to the promise wait here,
// not at the peer's answer, so once it is settled the answer is given
// back (op:gc-answer).
type resolverObject struct {
	s      *session
	r      *Resolver
	answer int // the op:deliver's answer position
}

func (o resolverObject) Deliver(args []any) (any, error) {
	if len(args) != 2 {
		return nil, errors.New("ocapn: a resolver takes fulfill or break and one value")
	}
	if _, open := o.s.resolvers[o.r]; open {
		delete(o.s.resolvers, o.r)
		o.r.p.answerS = nil // the position is given back: pipeline no more
		o.s.send(syrup.Record{Label: sym("op:gc-answer"), Fields: []any{[]any{int64(o.answer)}}})
	}
	switch args[0] {
	case sym("fulfill"):
		o.r.Fulfill(args[1])
	case sym("break"):
		o.r.Break(&BrokenError{Reason: args[1]})
	default:
		return nil, fmt.Errorf("ocapn: a resolver has no method %v", args[0])
	}
	return nil, nil
}

// bootstrapObject is export 0 of every session: fetch gives the object
// registered under a swiss number.
type bootstrapObject struct{ s *session }

func (b bootstrapObject) Deliver(args []any) (any, error) {
	if len(args) == 0 {
		return nil, errors.New("ocapn: the bootstrap object needs a method")
	}
	switch args[0] {
	case sym("fetch"):
		if len(args) != 2 {
			return nil, errors.New("ocapn: fetch takes a swiss number")
		}
		swiss, ok := bytesOf(args[1])
		if !ok {
			return nil, errors.New("ocapn: fetch takes a swiss number (a byte string)")
		}
		if obj, ok := b.s.n.objects[string(swiss)]; ok {
			return obj, nil
		}
		return nil, errors.New("ocapn: no object has that swiss number")
	case sym("deposit-gift"):
		return nil, b.s.depositGift(args)
	case sym("withdraw-gift"):
		return b.s.withdrawGift(args)
	}
	return nil, fmt.Errorf("ocapn: the bootstrap object has no method %v", args[0])
}

// Value returns the sturdyref as OCapN's Syrup record,
// <ocapn-sturdyref peer swiss-num>, for sending it in a message.
func (s Sturdyref) Value() syrup.Record { return s.syrup() }

// SturdyrefFromValue reads a sturdyref sent as a Syrup record (see
// Sturdyref.Value).
func SturdyrefFromValue(v any) (Sturdyref, error) {
	sr, err := sturdyrefFromSyrup(v)
	if err != nil {
		return Sturdyref{}, fmt.Errorf("ocapn: %w", err)
	}
	return sr, nil
}
