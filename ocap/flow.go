package ocap

// flow is the work that one settlement or delivery sets off, done in order
// after the locks that found it are released: promises whose waiting
// messages must move on, and callbacks of promises that settled. Anything
// that chains (a settled promise settling the next, messages waiting on a
// promise moving on, a message's failure breaking its answer, which
// breaks the messages waiting on that answer) goes through one flow, so a
// chain as long as a peer likes costs queue entries, never stack frames.
//
// A flow belongs to one goroutine: each entry point (a Send, a
// settlement from a resolver or from the wire, a vat's turn) makes its
// own and runs it before returning.
type flow struct {
	items []flowItem
	head  int // items[:head] have run
}

// flowItem is one piece of work: drain st's waiting messages, or run fn.
type flowItem struct {
	st *promiseState
	fn func(w *flow)
}

func (w *flow) push(it flowItem) { w.items = append(w.items, it) }

// run does the work, including whatever the work adds, until none is left.
func (w *flow) run() {
	for w.head < len(w.items) {
		it := w.items[w.head]
		w.items[w.head] = flowItem{}
		w.head++
		if w.head == len(w.items) {
			w.items, w.head = w.items[:0], 0
		} else if w.head >= 1024 && w.head*2 >= len(w.items) {
			n := copy(w.items, w.items[w.head:])
			clear(w.items[n:])
			w.items, w.head = w.items[:n], 0
		}
		if it.st != nil {
			it.st.drain(w)
		} else {
			it.fn(w)
		}
	}
}

// settleNow settles st (see promiseState.settle) and runs what follows.
func settleNow(st *promiseState, r payload, err error) {
	var w flow
	st.settle(r, err, &w)
	w.run()
}

// deliverNow delivers m to t and runs what follows.
func deliverNow(t target, m *message) {
	var w flow
	t.deliver(m, &w)
	w.run()
}
