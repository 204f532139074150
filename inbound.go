package bokbok

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// inbound receives the peer's requests and notifications and runs them.
//
// Requests: at most MaxConcurrentHandlers run at once; more wait in a FIFO
// queue of up to MaxQueuedRequests; beyond that they are refused with
// CodeBusy. A nested request (flagNested: sent by a peer handler while it
// serves one of our requests) never waits in the queue: it runs at once,
// up to twice the limit, or is refused. Queued requests thus wait only for
// running handlers, and running handlers wait only on requests that run at
// once or fail at once, so handlers calling back and forth cannot deadlock.
//
// Notifications: kept in the order their first frames arrived and run one
// at a time by the notifier goroutine; credits go back to the peer as they
// are handled.
//
// Budgets (admission.go): requests are charged against MaxReceiveBytes
// from their first frame until their reply is written, notifications
// against NotifyBytes until handled, and at most maxArriving requests may
// be arriving at once.
type inbound struct {
	c *Conn

	mu        sync.Mutex        // guards the fields below
	asm       map[uint32]*inMsg // messages whose frames are still arriving
	live      map[uint32]*inMsg // requests queued or running, by id
	queue     []*inMsg          // requests waiting for a handler slot
	running   int               // request handlers running
	waiting   []chan *inMsg     // inboxes of handler goroutines waiting for work
	notes     []*inMsg          // notifications in arrival order, some still arriving
	notifying bool              // the notifier goroutine is running
	noteBusy  bool              // the notifier is running a notification's handler
	refusing  int               // refusals being queued (see unlockAndRefuse)
	unacked   int               // notifications received and not yet credited back
	handled   int               // notifications handled since the last CREDIT
	noteCtx   context.Context   // c.ctx marked as a handler's: notification handlers get it; request contexts derive from it
	held      int64             // MaxReceiveBytes charges of requests arriving, queued or running
	arriving  int               // requests whose frames are still arriving
	noteBytes int64             // NotifyBytes charges of notifications arriving, waiting or running

	replies atomic.Int64 // MaxReceiveBytes charges of replies waiting to be written; the writer releases them
}

// inMsg is one inbound request or notification.
type inMsg struct {
	id       uint32
	kind     frameKind
	nested   bool
	header   bool // the first frame had flagHeader
	complete bool
	asm      assembly
	buf      []byte // the whole message's buffer, once whole; given back by releaseBody

	ctx     context.Context // requests: set when queued or started
	cancel  context.CancelFunc
	hctx    handlerCtx // the context the handler gets: ctx (or, for a notification, the connection's), holding req
	req     Request
	start   time.Time // when the message was whole; only with Config.Stats
	size    int       // the body's length, header included; only with Config.Stats
	hdrCost int64     // estimated memory of the parsed header, charged with the message's

	charge int64        // what the message holds of its budget (guarded by in.mu)
	refuse *RemoteError // a request refused when its first frame arrived: answered so once whole
	skip   error        // a notification that will not be handled: why

	replied atomic.Bool // a request: its answer has been taken by the send queue

	// guarded by in.mu
	done  bool // a request: its turn as a running request has ended (doneLocked)
	freed bool // and its handler slot was given back then
}

func (in *inbound) init(c *Conn) {
	in.c = c
	in.asm = make(map[uint32]*inMsg)
	in.live = make(map[uint32]*inMsg)
	in.noteCtx = context.WithValue(c.ctx, handlerKey{}, c)
}

// free returns where a frame continuing a message may be read in place
// (see assembly.free), or nil.
func (in *inbound) free(h frameHeader) []byte {
	in.mu.Lock()
	defer in.mu.Unlock()
	if m := in.asm[h.id]; m != nil && m.kind == h.kind {
		return m.asm.free(int(h.length))
	}
	return nil
}

// frame adds a REQUEST or NOTIFY frame; a whole message is dispatched.
func (in *inbound) frame(h frameHeader, p []byte) error {
	c := in.c
	in.mu.Lock()
	m := in.asm[h.id]
	if m == nil {
		var err error
		if m, err = in.startLocked(h, p); err != nil {
			in.mu.Unlock()
			return err
		}
	} else if m.kind != h.kind {
		in.mu.Unlock()
		return protocolErrorf("%s frame continues a %s with id %d", h.kind, m.kind, h.id)
	}
	done, err := m.asm.addWithin(h.kind, p, c.cfg.MaxMessageSize, &c.reserve)
	if err != nil || !done {
		in.mu.Unlock()
		return err
	}
	delete(in.asm, h.id)
	body := m.asm.buf
	m.asm = assembly{}
	m.buf = body
	m.req = Request{conn: c, raw: body, notify: h.kind == kindNotify}
	if c.cfg.Stats != nil {
		m.start, m.size = time.Now(), len(body)
	}
	var hdrErr error
	if m.header {
		var hdr header
		hdr, body, hdrErr = parseHeader(body, c.methods.intern)
		if hdrErr == nil && len(body) == 0 {
			hdrErr = headerErrorf("nothing follows the header")
		}
		m.req.method, m.req.md, m.req.raw = hdr.method, hdr.md, body
		m.hdrCost = hdr.cost
	}
	if m.kind == kindNotify {
		if m.skip = hdrErr; m.skip == nil {
			m.skip = in.checkNote(body)
		}
		m.complete = true
		start := !in.notifying && in.notes[0].complete
		if start {
			in.notifying = true
			c.work.Add(1)
		}
		in.mu.Unlock()
		if start {
			go in.notifier()
		}
		return nil
	}
	in.arriving--
	if m.refuse != nil {
		in.unlockAndRefuse(m, m.refuse)
		return nil
	}
	if hdrErr != nil {
		in.releaseLocked(m)
		in.unlockAndRefuse(m, &RemoteError{Code: CodeBadRequest, Message: hdrErr.Error()})
		return nil
	}
	t, msg, err := parseRequestBody(body)
	if err != nil {
		in.mu.Unlock()
		return err
	}
	m.req.raw = msg
	if rerr := in.admitLocked(m); rerr != nil {
		in.unlockAndRefuse(m, rerr)
		return nil
	}
	return in.dispatchLocked(m, time.Duration(min(t, uint64(1<<63-1)/1000))*time.Microsecond)
}

// dispatchLocked runs, queues or refuses a whole request, whose handler
// gets timeout (0 = none) to answer. in.mu must be held; it is released.
func (in *inbound) dispatchLocked(m *inMsg, timeout time.Duration) error {
	c := in.c
	limit := c.cfg.MaxConcurrentHandlers
	switch {
	case in.running < limit || (m.nested && in.running < 2*limit):
		in.running++
		in.prepare(m, timeout)
		if n := len(in.waiting); n > 0 { // a handler goroutine waiting for work
			w := in.waiting[n-1]
			in.waiting[n-1] = nil
			in.waiting = in.waiting[:n-1]
			in.mu.Unlock()
			w <- m // never blocks: capacity 1, and nobody else sends to w
			return nil
		}
		c.work.Add(1)
		in.mu.Unlock()
		go in.run(m)
	case !m.nested && len(in.queue) < c.cfg.MaxQueuedRequests:
		in.prepare(m, timeout)
		in.queue = append(in.queue, m)
		in.mu.Unlock()
	default:
		in.releaseLocked(m)
		in.unlockAndRefuse(m, &RemoteError{Code: CodeBusy, Message: "too many requests in progress; try again later"})
	}
	return nil
}

// prepare gives a request its context, whose deadline counts from
// arrival, and registers it for CANCEL. in.mu must be held.
func (in *inbound) prepare(m *inMsg, timeout time.Duration) {
	ctx := in.noteCtx // the connection's context, marked as a handler's
	if timeout > 0 {  // 0 = none
		m.ctx, m.cancel = context.WithTimeout(ctx, timeout)
	} else {
		m.ctx, m.cancel = context.WithCancel(ctx)
	}
	m.hctx = handlerCtx{Context: m.ctx, req: &m.req}
	in.live[m.id] = m
}

// run serves m, then queued requests while there are any. It owns one
// handler slot while it serves. With nothing left to do it lingers for
// workerLinger, ready to be handed the next request (a warm goroutine with
// a grown stack costs less than a new one), then ends; it ends at once when
// the connection closes.
func (in *inbound) run(m *inMsg) {
	c := in.c
	defer c.work.Done()
	var (
		inbox chan *inMsg // where dispatchLocked hands this goroutine work
		timer *time.Timer
	)
	for {
		if c.waitReady() {
			reply, err := c.invoke(&m.hctx, &m.req)
			out := c.answer(m.id, reply, err, m.req.replyMD)
			m.releaseBody() // the reply is encoded: nothing refers to the body now
			out.queued = &m.replied
			out.answers = m                             // its slot is given back once the reply is queued (answerQueued)
			in.chargeReply(out)                         // the request's charge goes below, once the reply is queued
			replyBytes := len(out.data) - bodyLenSize   // read before the writer may give the buffer back
			_ = c.sendq.push(context.Background(), out) // an answer waits only for room, and fails only once closed
			if c.cfg.Stats != nil {
				c.servedStats(m, replyBytes, out.kind == kindError, err)
			}
		}
		m.cancel()
		in.mu.Lock()
		in.doneLocked(m)        // if the send queue has not already
		if in.live[m.id] == m { // else the peer has reused the answered id already
			delete(in.live, m.id) // only now: until its answer is queued, m is work in progress (Shutdown waits for it)
		}
		held := !m.freed // this goroutine still holds m's handler slot
		if in.takesQueuedLocked(held) {
			if !held {
				in.running++
			}
			m = in.queue[0]
			in.queue[0] = nil
			in.queue = in.queue[1:]
			in.mu.Unlock()
			c.workDone()
			continue
		}
		if held {
			in.running--
		}
		if inbox == nil {
			inbox = make(chan *inMsg, 1)
			timer = time.NewTimer(workerLinger)
		} else {
			timer.Reset(workerLinger)
		}
		in.waiting = append(in.waiting, inbox)
		in.mu.Unlock()
		c.workDone()
		select {
		case m = <-inbox:
			timer.Stop()
			continue
		case <-timer.C:
		case <-c.ctx.Done():
			timer.Stop()
		}
		if m = in.unpark(inbox); m == nil {
			return
		}
	}
}

// takesQueuedLocked reports whether a goroutine done with a request
// serves the next queued one: if there is one and a slot for it, the
// goroutine's own if it still holds it (held), else a free one. A slot
// held beyond the limit (a nested request's overdraft) is given back
// instead. in.mu must be held.
func (in *inbound) takesQueuedLocked(held bool) bool {
	limit := in.c.cfg.MaxConcurrentHandlers
	if len(in.queue) == 0 {
		return false
	}
	if held {
		return in.running <= limit
	}
	return in.running < limit
}

// answerQueued is called by the send queue once the reply to m has its
// room there and before the reply can be written: m's handler has
// returned, so m's turn ends now (doneLocked). A peer that has the reply
// may send its next request at once and must find the slot free, even
// with no queue (MaxQueuedRequests < 0).
func (in *inbound) answerQueued(m *inMsg) {
	m.cancel()
	in.mu.Lock()
	in.doneLocked(m)
	in.mu.Unlock()
}

// doneLocked ends m's turn as a running request, once: it lets go of m's
// charge and gives back its handler slot unless requests wait in the queue
// (the goroutine serving m serves the next of them in that slot). m stays
// registered (for CANCEL, and as work in progress) until its goroutine is
// done with it. in.mu must be held.
func (in *inbound) doneLocked(m *inMsg) {
	if m.done {
		return
	}
	m.done = true
	in.releaseLocked(m)
	if len(in.queue) == 0 {
		in.running--
		m.freed = true
	}
}

// workerLinger is how long a handler goroutine with nothing to do waits
// for more work before it ends.
const workerLinger = 20 * time.Millisecond

// unpark takes an idle handler goroutine's inbox off the idle list. If a
// request was handed to it meanwhile, unpark returns that request.
func (in *inbound) unpark(inbox chan *inMsg) *inMsg {
	in.mu.Lock()
	for i, w := range in.waiting {
		if w == inbox {
			in.waiting = slices.Delete(in.waiting, i, i+1) // clears the freed slot: an ended goroutine's inbox is not kept
			in.mu.Unlock()
			return nil
		}
	}
	in.mu.Unlock()
	return <-inbox // dispatchLocked took it off the list: a request is on its way
}

// waitReady waits until handlers may run (the server's OnOpen accepted the
// connection) and reports true, or reports false if the connection closed
// first. A request that arrived whole before the connection closed runs.
func (c *Conn) waitReady() bool {
	select {
	case <-c.ready:
		return true
	default:
	}
	select {
	case <-c.ready:
		return true
	case <-c.ctx.Done():
		return false
	}
}

// cancel handles the peer's CANCEL for a request id: a running handler
// sees its context cancelled; a request still queued or still arriving is
// dropped and answered with CodeCanceled (every request gets an answer).
// A CANCEL for an id that was already answered is ignored.
func (in *inbound) cancel(id uint32) {
	in.mu.Lock()
	m := in.live[id]
	if m != nil && m.replied.Load() {
		m = nil // answered: the CANCEL is for a newer request reusing the id, if any
	}
	if m == nil {
		if a := in.asm[id]; a != nil && a.kind == kindRequest {
			delete(in.asm, id)
			a.asm.drop(&in.c.reserve)
			in.arriving--
			in.releaseLocked(a)
			in.unlockAndRefuse(a, errCanceledBeforeRun)
			return
		}
		in.mu.Unlock()
		return
	}
	for i, q := range in.queue {
		if q == m {
			in.queue = append(in.queue[:i], in.queue[i+1:]...)
			delete(in.live, id)
			in.releaseLocked(m)
			m.cancel()
			in.unlockAndRefuse(m, errCanceledBeforeRun)
			return
		}
	}
	in.mu.Unlock()
	m.cancel()
}

// errCanceledBeforeRun answers a request cancelled before its handler ran.
var errCanceledBeforeRun = &RemoteError{Code: CodeCanceled, Message: "canceled before it ran"}

// unlockAndRefuse answers request m with rerr, never running it. in.mu
// must be held; it is released. Until the answer is queued the refusal
// counts as work in progress, so a graceful shutdown waits for it.
func (in *inbound) unlockAndRefuse(m *inMsg, rerr *RemoteError) {
	in.refusing++
	in.mu.Unlock()
	in.c.sendq.pushSmall(errorMsg(m.id, rerr))
	in.mu.Lock()
	in.refusing--
	in.mu.Unlock()
	if in.c.cfg.Stats != nil {
		in.c.refusedStats(m, rerr)
	}
	in.c.workDone()
}

// notifier runs whole notifications from the front of notes, in order,
// and returns credits to the peer: a quarter of the window at a time while
// the next is ready, and all it has handled whenever none is. It ends when
// none is ready.
func (in *inbound) notifier() {
	c := in.c
	defer c.work.Done()
	if !c.waitReady() {
		in.mu.Lock()
		in.notifying = false
		in.mu.Unlock()
		return
	}
	step := max(1, c.cfg.NotifyWindow/4)
	for {
		in.mu.Lock()
		if len(in.notes) == 0 || !in.notes[0].complete || c.ctx.Err() != nil {
			in.notifying = false
			in.mu.Unlock()
			c.workDone() // idle only now
			return
		}
		m := in.notes[0]
		in.notes[0] = nil
		in.notes = in.notes[1:]
		in.noteBusy = true
		in.mu.Unlock()

		var err error
		if m.skip != nil {
			err = m.skip
			c.log.Warn("bokbok: notification dropped", "remote", c.nc.RemoteAddr(), "err", m.skip)
		} else {
			m.hctx = handlerCtx{Context: in.noteCtx, req: &m.req}
			if _, err = c.invoke(&m.hctx, &m.req); err != nil {
				c.log.Debug("bokbok: notification handler failed", "remote", c.nc.RemoteAddr(), "err", err)
			}
		}
		if c.cfg.Stats != nil {
			c.servedStats(m, 0, err != nil, err)
		}
		m.releaseBody()

		in.mu.Lock()
		in.noteBusy = false
		in.noteBytes -= m.charge
		m.charge = 0
		in.handled++
		// Credit may wait for a batch only while the next notification is
		// whole and about to be handled; with none ready (none left, or
		// the next still arriving), everything handled is credited now, so
		// a sender, or a graceful shutdown, never waits for it.
		var credit int
		if next := len(in.notes) > 0 && in.notes[0].complete; in.handled >= step || !next {
			credit = in.handled
			in.handled = 0
			in.unacked -= credit
		}
		in.mu.Unlock()
		if credit > 0 {
			c.sendq.pushCtrl(kindCredit, uint32(credit))
		}
		c.workDone()
	}
}

// unfinished counts the peer's requests and notifications not finished:
// arriving, queued, or running without their answer taken by the send
// queue. Called once the send queue has closed, so no answer is taken
// after the count.
func (in *inbound) unfinished() int {
	in.mu.Lock()
	defer in.mu.Unlock()
	n := len(in.notes) + in.refusing // notifications arriving or waiting; refusals not yet queued
	if in.noteBusy {
		n++
	}
	for _, m := range in.asm {
		if m.kind == kindRequest {
			n++
		}
	}
	for _, m := range in.live {
		if !m.replied.Load() {
			n++
		}
	}
	return n
}

// idle reports whether no inbound work is left: nothing arriving, queued
// or running.
func (in *inbound) idle() bool {
	in.mu.Lock()
	defer in.mu.Unlock()
	return len(in.asm) == 0 && len(in.live) == 0 && len(in.notes) == 0 && !in.notifying && in.refusing == 0
}

// releaseBody drops the message's body once its handler has returned and
// any reply is encoded, giving its buffer back to the pool unless the
// handler took Request.Raw (see msgbuf.go).
func (m *inMsg) releaseBody() {
	if !m.req.rawTaken.Load() {
		putMsgBuf(m.buf)
	}
	m.buf, m.req.raw = nil, nil
}
