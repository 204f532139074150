package ocapn

import (
	"errors"
	"fmt"

	"github.com/bokbok-go/bokbok/ocapn/syrup"
)

// Send delivers a message to to, whatever it is, and returns a promise
// for the answer: to may be a *Ref (the message goes to the peer), a
// *Promise (the message waits for its resolution and goes to what it
// resolved to, as a pipelined message would) or an Object of this node
// (delivered on the event loop, after what is queued). Promises and
// references must be this node's.
func (n *Node) Send(to any, args ...any) *Promise {
	p, r := n.NewPromise()
	n.post(func() {
		deliverTo(to, args, func(v any, err error) {
			if err != nil {
				r.Break(err)
			} else {
				r.Fulfill(v)
			}
		})
	})
	return p
}

// SendOnly is Send without an answer: for a *Ref, an op:deliver-only.
func (n *Node) SendOnly(to any, args ...any) {
	if ref, ok := to.(*Ref); ok {
		ref.DeliverOnly(args...)
		return
	}
	n.post(func() { deliverTo(to, args, nil) })
}

// deliverTo delivers args to t (an Object, a promise, or the peer's Ref)
// and passes the result, or a promise for it, to settle, which may be
// nil. On the loop.
func deliverTo(t any, args []any, settle func(any, error)) {
	if settle == nil {
		settle = func(any, error) {}
	}
	switch x := t.(type) {
	case *Promise:
		// Follow the promises it was fulfilled with to the last one.
		end := x
		for hops := 0; !end.resolved && end.follows != nil && hops < maxFollow; hops++ {
			end = end.follows
		}
		if !end.resolved {
			if s := end.answerS; s != nil && !s.ended {
				// The answer to a question on the wire: pipeline (send
				// to <desc:answer N> now, without waiting for it).
				q, r := end.n.NewPromise()
				s.ask(syrup.Record{Label: sym("desc:answer"), Fields: []any{int64(end.answerPos)}}, args, q, r)
				settle(q, nil)
				return
			}
			end.routed = append(end.routed, func() { deliverTo(end, args, settle) })
			return
		}
		end.whenSettled(func(v any, err error) {
			if err != nil {
				settle(nil, err)
				return
			}
			if _, again := v.(*Promise); again { // cannot happen: a settled promise holds no promise
				settle(nil, errors.New("ocapn: a promise settled to a promise"))
				return
			}
			deliverTo(v, args, settle)
		})
	case *Ref:
		settle(x.Deliver(args...), nil)
	case Object:
		v, err := safeDeliver(x, args)
		settle(v, err)
	default:
		settle(nil, fmt.Errorf("ocapn: a message to %T, which is not an object", t))
	}
}

// maxFollow bounds the chain of promises a delivery follows before it
// waits instead.
const maxFollow = 64

// safeDeliver runs o.Deliver, turning a panic into an error.
func safeDeliver(o Object, args []any) (v any, err error) {
	defer func() {
		if p := recover(); p != nil {
			v, err = nil, fmt.Errorf("ocapn: the object panicked: %v", p)
		}
	}()
	return o.Deliver(args)
}
