package ocap

import (
	"errors"
	"fmt"
)

// Resolver settles the promise NewPromise made with it (Goblins'
// promise-and-resolver). An actor uses one to answer with a value it
// computes later, for example from another promise inside On:
//
//	p, r := ocap.NewPromise()
//	ocap.On(ctx, listener.Send("count"), func(res ocap.Result) {
//		var n int
//		if err := res.Decode(&n); err != nil {
//			r.Break(err)
//			return
//		}
//		r.Fulfil(fmt.Sprintf("the listener heard %d messages", n))
//	}, r.Break)
//	return p, nil
//
// Only the first Fulfil or Break counts. A Resolver is safe to use from any
// goroutine.
type Resolver struct{ st *promiseState }

// NewPromise returns an unsettled promise and the resolver that settles it.
// Messages sent to the promise wait until it is fulfilled with a reference,
// then go on to it in order.
func NewPromise() (*Promise, *Resolver) {
	p := newPromise()
	return p, &Resolver{st: p.st}
}

// errSettled is returned by Fulfil after the promise has settled.
var errSettled = errors.New("ocap: promise already settled")

// Fulfil fulfils the promise with v, encoded at once like a message's
// arguments (references inside travel as references). If v is a *Promise,
// the promise instead settles as v does; if v is the promise itself, or
// settles as it or resolves to it through other promises, the promise
// breaks with ErrPromiseCycle and Fulfil returns that error. Fulfil
// returns an error if v cannot be encoded (the promise then breaks with
// it) or if the promise had already settled.
func (r *Resolver) Fulfil(v any) error {
	if p, ok := v.(*Promise); ok && p != nil {
		r.st.mu.Lock()
		done := r.st.settled
		r.st.mu.Unlock()
		if done {
			return errSettled
		}
		var w flow
		r.st.follow(p.st, &w)
		w.run()
		if _, err := r.st.outcome(); errors.Is(err, ErrPromiseCycle) {
			return err
		}
		return nil
	}
	pl, err := encodePayload(v)
	if err != nil {
		err = fmt.Errorf("ocap: encoding a resolution: %w", err)
		r.settle(payload{}, err)
		return err
	}
	return r.settle(pl, nil)
}

// Break breaks the promise with err (which must not be nil).
func (r *Resolver) Break(err error) {
	if err == nil {
		err = errors.New("ocap: promise broken with a nil error")
	}
	r.settle(payload{}, err)
}

func (r *Resolver) settle(pl payload, err error) error {
	r.st.mu.Lock()
	done := r.st.settled
	r.st.mu.Unlock()
	if done {
		return errSettled
	}
	settleNow(r.st, pl, err)
	return nil
}
