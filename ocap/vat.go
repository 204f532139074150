package ocap

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
)

// Vat is an event loop: one goroutine that runs turns one at a time. A turn
// delivers one message to one of the vat's actors, or runs one callback
// registered with On. Actors of one vat therefore never run concurrently
// and need no locks; different vats run in parallel.
//
// The vat's goroutine starts in NewVat and ends after Close, once the turn
// in progress returns. Messages still queued then break with ErrVatClosed.
type Vat struct {
	name   string
	ctx    context.Context // given to every turn; cancelled by Close
	cancel context.CancelFunc
	wake   chan struct{} // capacity 1: the queue may have work
	done   chan struct{} // closed when the goroutine has ended

	mu     sync.Mutex // guards queue and closed
	queue  []turn
	closed bool
}

// turn is one unit of a vat's work: a message for an actor, or a callback.
type turn struct {
	cell *actorCell
	m    *message
	fn   func(ctx context.Context)
}

type vatKey struct{}

// NewVat starts a vat. The name appears in logs and in Ref.String.
func NewVat(name string) *Vat {
	v := &Vat{name: name, wake: make(chan struct{}, 1), done: make(chan struct{})}
	v.ctx, v.cancel = context.WithCancel(context.Background())
	v.ctx = context.WithValue(v.ctx, vatKey{}, v)
	go v.run()
	return v
}

// VatOf returns the vat whose turn ctx belongs to, or nil.
func VatOf(ctx context.Context) *Vat {
	v, _ := ctx.Value(vatKey{}).(*Vat)
	return v
}

// Name returns the name given to NewVat.
func (v *Vat) Name() string { return v.name }

// Spawn creates an actor in the vat and returns a reference to it. The
// actor is an Actor, a Methods table, or any value with exported methods
// (see Methods for the method forms and names). Spawn panics if actor has
// no method that can be invoked, like regexp.MustCompile: that is a
// mistake in the program, not in its input.
func (v *Vat) Spawn(actor any) Ref {
	b, kind, err := newBehavior(actor)
	if err != nil {
		panic(err)
	}
	return Ref{t: &actorCell{vat: v, b: b, kind: kind}}
}

// Spawn creates an actor in the vat of the current turn; see Vat.Spawn.
func Spawn(ctx context.Context, actor any) (Ref, error) {
	v := VatOf(ctx)
	if v == nil {
		return Ref{}, ErrNoVat
	}
	b, kind, err := newBehavior(actor)
	if err != nil {
		return Ref{}, err
	}
	return Ref{t: &actorCell{vat: v, b: b, kind: kind}}, nil
}

// On arranges for fulfilled or broken (either may be nil) to run in the vat,
// in a turn of its own, once p settles.
func (v *Vat) On(p *Promise, fulfilled func(Result), broken func(error)) {
	var w flow
	defer w.run()
	p.st.onSettle(func(w *flow) {
		v.enqueue(turn{fn: func(context.Context) {
			r, err := p.st.outcome()
			switch {
			case err != nil && broken != nil:
				broken(err)
			case err == nil && fulfilled != nil:
				fulfilled(Result{p: r})
			}
		}}, w)
	}, &w)
}

// Do runs f in the vat, in a turn of its own, and waits until it has run or
// ctx ends. It is the way into a vat from outside: f may use its context
// with On and Spawn.
func (v *Vat) Do(ctx context.Context, f func(ctx context.Context)) error {
	ran := make(chan struct{})
	if !v.enqueue(turn{fn: func(ctx context.Context) { defer close(ran); f(ctx) }}, nil) {
		return ErrVatClosed
	}
	select {
	case <-ran:
		return nil
	case <-v.done:
		select {
		case <-ran:
			return nil
		default:
			return ErrVatClosed
		}
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Close stops the vat after the turn in progress; queued messages break
// with ErrVatClosed and queued callbacks are dropped. Close does not wait;
// Done is closed when the vat's goroutine has ended.
func (v *Vat) Close() error {
	v.mu.Lock()
	v.closed = true
	v.mu.Unlock()
	v.cancel()
	v.signal()
	return nil
}

// Done returns a channel that is closed when the vat's goroutine has ended.
func (v *Vat) Done() <-chan struct{} { return v.done }

// enqueue adds a turn, or reports false if the vat is closed (a message's
// answer is then broken with ErrVatClosed, in w; w may be nil for a turn
// that is not a message).
func (v *Vat) enqueue(t turn, w *flow) bool {
	v.mu.Lock()
	if v.closed {
		v.mu.Unlock()
		if t.m != nil {
			t.m.leftQueue()
			t.m.fail(ErrVatClosed, w)
		}
		return false
	}
	v.queue = append(v.queue, t)
	v.mu.Unlock()
	v.signal()
	return true
}

func (v *Vat) signal() {
	select {
	case v.wake <- struct{}{}:
	default:
	}
}

// run is the vat's goroutine.
func (v *Vat) run() {
	defer close(v.done)
	for {
		v.mu.Lock()
		if v.closed {
			left := v.queue
			v.queue = nil
			v.mu.Unlock()
			var w flow
			for _, t := range left {
				if t.m != nil {
					t.m.leftQueue()
					t.m.fail(ErrVatClosed, &w)
				}
			}
			w.run()
			return
		}
		if len(v.queue) == 0 {
			v.mu.Unlock()
			<-v.wake
			continue
		}
		t := v.queue[0]
		v.queue[0] = turn{}
		v.queue = v.queue[1:]
		if len(v.queue) == 0 {
			v.queue = nil // let the backing array go
		}
		v.mu.Unlock()
		v.runTurn(t)
	}
}

// runTurn runs one turn; a panicking callback is logged, not fatal.
func (v *Vat) runTurn(t turn) {
	if t.cell != nil {
		t.cell.receive(v.ctx, t.m)
		return
	}
	defer func() {
		if p := recover(); p != nil {
			slog.Error("ocap: callback panicked", "vat", v.name, "panic", fmt.Sprint(p))
		}
	}()
	t.fn(v.ctx)
}
