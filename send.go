package bokbok

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// The send side: every goroutine that sends (callers, handlers replying, the
// reader answering pings) puts its frames on the connection's sendQueue; one
// writer goroutine (writeLoop) takes them off and writes them. The writer
// runs only while there is something to write: the push that finds it
// stopped starts it, and it stops when the queue is empty and flushed, so
// an idle connection has no writer goroutine and no write buffer. Control
// frames go first. Messages are cut into frames of at most 64 KiB taken
// round-robin, one frame per message per turn, so a small message never
// waits behind more than one frame of each large message ahead of it.
// Frames taken together are written together and flushed once: concurrent
// small calls share system calls.
//
// A small message queued while no writer is at work is written at once by
// the goroutine that queues it, without blocking (directwrite.go): a lone
// call or reply then costs no hand-over to the writer goroutine. What the
// socket does not take at once is left to the writer, ahead of anything
// queued after it.

// outMsg is one message waiting to be written.
type outMsg struct {
	kind  frameKind
	flags uint8
	id    uint32
	data  []byte   // 4-byte length + body; never changed once queued
	owner *encoder // if set, data is its buffer: given back once written
	small bool     // queued by pushSmall, outside the budget

	charge  int64         // a reply: what it holds of the receive budget until wholly taken
	budget  *atomic.Int64 // where charge is given back
	queued  *atomic.Bool  // a reply: set, under the queue's lock, once the queue has taken it
	answers *inMsg        // a handler's reply: the request it answers (see sendQueue.answered)

	// guarded by sendQueue.mu
	off    int  // bytes of data already taken for frames
	credit int  // bytes of the queue's budget this message still holds
	lane   bool // the credit is from the small-message lane
	whole  bool // every frame has been taken; data may be gone
}

// sendQueue is the queue between senders and the writer.
type sendQueue struct {
	limit    int                          // SendQueueBytes; read-only
	writer   func()                       // the writer goroutine's body; read-only
	loops    *sync.WaitGroup              // counts the writer goroutine; read-only
	overflow func(error)                  // ends the connection; called without q.mu (unbudgeted bytes pile up, a direct write fails); read-only
	direct   atomic.Pointer[directWriter] // writes small messages from the pusher's goroutine; nil if it cannot
	busy     func() bool                  // reports whether several messages are under way (then the writer batches them); read-only
	answered func(*inMsg)                 // called without q.mu once a handler's reply has its room, before it can be written; read-only

	mu      sync.Mutex    // guards the fields below
	err     error         // set once the connection closes; queue refuses work
	ctrl    []byte        // encoded control frames, written before any data
	msgs    []*outMsg     // messages with frames left, in round-robin order
	rr      int           // index in msgs of the message whose turn is next
	queued  int           // budget held by msgs (sum of their credit), main lane
	smallQ  int           // budget held in the small-message lane
	extra   int           // bytes queued outside the budget: control frames and pushSmall
	space   chan struct{} // closed when budget is released or the queue closes; made by the first waiter (nil while nobody waits)
	waiters int           // goroutines waiting on space
	goAway  bool          // GOAWAY is queued: new requests and notifications are refused
	running bool          // a writer goroutine is running (or lingering)
	inline  bool          // a pusher is writing its message directly: the writer must not take or write meanwhile
	tail    []byte        // bytes a direct write left unwritten (insecure): written before anything else
	owed    bool          // a direct write left sealed records unwritten (secure): the writer must flush
	partial int           // direct writes the socket took only part of (or none of)
	linger  bool          // the writer is lingering: waiting on wake for work
	wake    chan struct{} // capacity 1: a token tells a lingering writer to go on; sent under mu; made at the first linger
	writing bool          // the writer holds frames it has not flushed yet
	written []*outMsg     // owned messages wholly taken; the writer gives their buffers back after flushing
	spareW  []*outMsg     // an empty slice for written, kept between flushes (giveBack)
	flushed chan struct{} // non-nil while waitIdle waits; closed when all is written
	dropped int           // answers (RESPONSE, ERROR) the queue held unwritten when it closed
}

func newSendQueue(limit int, writer func(), loops *sync.WaitGroup) *sendQueue {
	return &sendQueue{limit: limit, writer: writer, loops: loops}
}

// unlockAndKick releases q.mu, starting the writer goroutine first if there
// is work and none runs. The writer is counted in q.loops while q.mu is
// held, so a closing connection, which closes the queue under q.mu before
// it waits on loops, always waits for it.
func (q *sendQueue) unlockAndKick() {
	work := q.err == nil && !q.inline && q.workLocked()
	start := work && !q.running
	if start {
		q.running = true
		q.loops.Add(1)
	}
	if work && q.linger {
		q.wakeLocked()
	}
	q.mu.Unlock()
	if start {
		go q.writer()
	}
}

// workLocked reports whether anything waits to be written. q.mu must be
// held.
func (q *sendQueue) workLocked() bool {
	return len(q.ctrl) > 0 || len(q.msgs) > 0 || len(q.tail) > 0 || q.owed
}

// maxExtra bounds the bytes of control frames and small replies queued
// outside the budget. They are queued by the reader in answer to the peer
// (PONG, refusals), so only a peer that sends but does not read can fill
// this much: the connection then fails rather than grow without bound.
const maxExtra = 1 << 20

// pushCtrl queues a control frame (no payload). It never blocks, so the
// reader can answer pings and refuse requests without waiting on writes.
func (q *sendQueue) pushCtrl(kind frameKind, id uint32) {
	q.mu.Lock()
	if q.err == nil {
		q.ctrl = appendFrameHeader(q.ctrl, kind, 0, 0, id)
		q.extra += frameHeaderSize
	}
	q.unlockAndWake()
}

// pushSmall queues a message that must not wait for budget (the reader's
// own short replies, such as ERROR for a refused request).
func (q *sendQueue) pushSmall(m *outMsg) {
	q.mu.Lock()
	if q.err == nil {
		m.small = true
		q.msgs = append(q.msgs, m)
		q.extra += len(m.data)
	}
	q.unlockAndWake()
}

// unlockAndWake releases q.mu, starts the writer if needed, and reports
// an overflow of unbudgeted bytes.
func (q *sendQueue) unlockAndWake() {
	over := q.err == nil && q.extra > maxExtra
	n := q.extra
	q.unlockAndKick()
	if over && q.overflow != nil {
		q.overflow(fmt.Errorf("bokbok: peer is not reading: %d bytes of control frames and refusals are waiting to be written", n))
	}
}

// push queues m once the queue has room for it (a message larger than the
// whole budget waits for an empty queue). It returns early with the queue's
// error if the connection closes, or with ctx's error.
// Once GOAWAY is queued, new requests and notifications are refused with
// ErrShutdown: deciding that here, under the queue's lock, puts every
// request and notification either before GOAWAY on the wire or nowhere.
func (q *sendQueue) push(ctx context.Context, m *outMsg) error {
	need := min(len(m.data), q.limit)
	direct := q.mayWriteDirect(m) // before q.mu: it takes the connection's locks
	q.mu.Lock()
	for q.err == nil && !q.refusesLocked(m) && q.queued+need > q.limit && !q.smallFitsLocked(need) {
		if q.space == nil {
			q.space = make(chan struct{})
		}
		ch := q.space
		q.waiters++
		q.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			q.mu.Lock()
			q.waiters--
			q.mu.Unlock()
			return ctx.Err()
		}
		q.mu.Lock()
		q.waiters--
	}
	if q.err != nil {
		err := q.err
		q.mu.Unlock()
		return err
	}
	if q.refusesLocked(m) {
		q.mu.Unlock()
		return ErrShutdown
	}
	m.credit = need
	if q.queued+need <= q.limit {
		q.queued += need
	} else {
		m.lane = true
		q.smallQ += need
	}
	if m.answers != nil && q.answered != nil {
		// The reply has its room. Its request's handler slot is given back
		// before the reply can be written: the peer may send its next
		// request as soon as it has the reply.
		q.mu.Unlock()
		q.answered(m.answers)
		q.mu.Lock()
		if q.err != nil {
			q.release(m, m.credit)
			err := q.err
			q.mu.Unlock()
			return err
		}
	}
	q.msgs = append(q.msgs, m)
	if m.queued != nil {
		m.queued.Store(true)
	}
	if direct && q.canWriteDirectLocked() {
		q.writeDirect() // releases q.mu
		return nil
	}
	q.unlockAndKick()
	return nil
}

// smallFitsLocked reports whether a message of need bytes fits the
// small-message lane: messages of one frame may use a quarter of the
// budget again, so that a short call or reply never waits for budget held
// by large messages ahead of it. q.mu must be held.
func (q *sendQueue) smallFitsLocked(need int) bool {
	return need <= maxFramePayload && q.smallQ+need <= q.limit/4
}

func (q *sendQueue) refusesLocked(m *outMsg) bool {
	return q.goAway && (m.kind == kindRequest || m.kind == kindNotify)
}

// pushGoAway queues GOAWAY behind the messages already queued (so their
// first frames precede it) and refuses new requests and notifications
// from then on. It reports false if GOAWAY was already queued.
func (q *sendQueue) pushGoAway() bool {
	q.mu.Lock()
	first := !q.goAway && q.err == nil
	if first {
		q.goAway = true
		q.msgs = append(q.msgs, &outMsg{kind: kindGoAway})
	}
	q.unlockAndKick()
	return first
}

// release returns n bytes of budget. q.mu must be held.
func (q *sendQueue) release(m *outMsg, n int) {
	n = min(n, m.credit)
	if n == 0 {
		return
	}
	m.credit -= n
	if m.lane {
		q.smallQ -= n
	} else {
		q.queued -= n
	}
	if q.space != nil {
		close(q.space) // wakes every waiter; the next to wait makes a new one
		q.space = nil
	}
}

// withdraw takes m off the queue if it is still there (the caller gave up)
// and reports whether any of its frames were already taken for writing, in
// which case the peer has seen the message start, and whether all were.
// A message withdrawn after it started lets go of its data: the frames
// the writer holds keep what they need, and the pooled buffer goes to the
// garbage collector instead of back to the pool.
func (q *sendQueue) withdraw(m *outMsg) (started, whole bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for i, x := range q.msgs {
		if x == m {
			q.removeAt(i)
			break
		}
	}
	started, whole = m.off > 0, m.whole
	if started && !whole {
		m.data, m.owner = nil, nil
	}
	return started, whole
}

// started reports whether any frame of m was taken for writing. Once the
// queue is closed, a message not started never will be.
func (q *sendQueue) started(m *outMsg) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return m.off > 0
}

// removeAt drops msgs[i], releasing its budget. q.mu must be held.
func (q *sendQueue) removeAt(i int) {
	q.release(q.msgs[i], q.msgs[i].credit)
	copy(q.msgs[i:], q.msgs[i+1:])
	q.msgs[len(q.msgs)-1] = nil // let the message's data go
	q.msgs = q.msgs[:len(q.msgs)-1]
	if i < q.rr {
		q.rr--
	}
	if q.rr >= len(q.msgs) {
		q.rr = 0
	}
}

// dataFrame is one frame taken for writing: a header and a payload that
// points into an outMsg's immutable data. An outMsg without data (GOAWAY)
// gives one frame with no payload, written in its turn.
type dataFrame struct {
	hdr     [frameHeaderSize]byte
	payload []byte
}

// batchBytes bounds how much one take hands to the writer, so control
// frames queued meanwhile wait for at most this much data.
const batchBytes = 64 << 10

// take hands the writer the queued control frames (swapping in spare as the
// new control buffer) and up to batchBytes of data frames, appended to
// frames. It reports whether it took anything.
func (q *sendQueue) take(spare []byte, frames []dataFrame) (ctrl []byte, _ []dataFrame, ok bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.inline { // woken by close while a pusher writes: its message is its own
		return spare[:0], frames, false
	}
	ctrl, q.ctrl = q.ctrl, spare[:0]
	q.extra -= len(ctrl)
	if len(q.tail) > 0 { // the rest of a direct write goes first
		ctrl = append(q.tail, ctrl...)
		q.tail = nil
	}
	frames = q.takeFramesLocked(frames)
	ok = len(ctrl) > 0 || len(frames) > 0 || q.owed
	q.owed = false
	if ok {
		q.writing = true
	}
	return ctrl, frames, ok
}

// takeFramesLocked appends up to batchBytes of data frames to frames,
// round-robin, and settles the budget of what it takes. q.mu must be held.
func (q *sendQueue) takeFramesLocked(frames []dataFrame) []dataFrame {
	total := 0
	for len(q.msgs) > 0 && total < batchBytes {
		if q.rr >= len(q.msgs) {
			q.rr = 0
		}
		m := q.msgs[q.rr]
		n := min(len(m.data)-m.off, maxFramePayload)
		f := dataFrame{payload: m.data[m.off : m.off+n]}
		frameHeader{kind: m.kind, flags: m.flags, length: uint16(n), id: m.id}.put(f.hdr[:])
		frames = append(frames, f)
		m.off += n
		total += n
		q.release(m, n)
		if m.off == len(m.data) {
			m.whole = true
			if m.small {
				q.extra -= len(m.data)
			}
			if m.charge > 0 {
				m.budget.Add(-m.charge)
				m.charge = 0
			}
			if m.owner != nil {
				q.written = append(q.written, m)
			} else {
				m.data = nil // the frames taken hold what the writer needs
			}
			q.removeAt(q.rr)
		} else {
			q.rr++
		}
	}
	return frames
}

// giveBack returns the buffers of owned messages the writer has taken
// wholly; the writer calls it after a flush, when nothing refers to them.
func (q *sendQueue) giveBack() {
	q.mu.Lock()
	done := q.written
	if len(done) == 0 {
		q.mu.Unlock()
		return
	}
	q.written, q.spareW = q.spareW, nil
	for _, m := range done {
		m.data = nil // the buffer goes back to the pool below
	}
	q.mu.Unlock()
	for i, m := range done {
		m.owner.done()
		m.owner = nil
		done[i] = nil
	}
	if cap(done) <= maxSpareWritten { // else let a burst's long slice go
		q.mu.Lock()
		q.spareW = done[:0]
		q.mu.Unlock()
	}
}

// maxSpareWritten bounds the spare slice giveBack keeps.
const maxSpareWritten = 64

// What the writer does when park returns.
const (
	parkGoOn   = iota // work arrived meanwhile
	parkLinger        // wait a while for work (see writeLoop)
	parkExit          // the queue is closed: end
)

// park is called by the writer when it has written and flushed everything
// it took. Unless work arrived meanwhile, it tells waitIdle that all is
// written; then, unless the queue is closed, the writer lingers: it stays
// the queue's writer, and unlockAndKick wakes it instead of starting one.
func (q *sendQueue) park() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.err == nil && q.workLocked() {
		return parkGoOn
	}
	q.writing = false
	q.signalIdleLocked()
	if q.err != nil {
		q.running = false
		return parkExit
	}
	q.linger = true
	if q.wake == nil {
		q.wake = make(chan struct{}, 1)
	}
	return parkLinger
}

// wakeLocked ends the writer's lingering. q.mu must be held.
func (q *sendQueue) wakeLocked() {
	q.linger = false
	q.wake <- struct{}{} // never blocks: one token per lingering, taken before the next
}

// lingerFor waits up to d for a lingering writer to be woken and reports
// whether it was; if not, the writer has stopped being the queue's writer
// and must end.
func (q *sendQueue) lingerFor(t *time.Timer, d time.Duration) bool {
	t.Reset(d)
	select {
	case <-q.wake:
		t.Stop()
		return true
	case <-t.C:
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.linger { // nobody woke it: stop being the writer
		q.linger, q.running = false, false
		return false
	}
	<-q.wake // woken just as the time ran out: the token is there (sent under q.mu)
	return true
}

// waitIdle waits until everything queued so far has been written and
// flushed, or done or ctx ends.
func (q *sendQueue) waitIdle(ctx context.Context, done <-chan struct{}) error {
	q.mu.Lock()
	if q.idleLocked() {
		q.mu.Unlock()
		return nil
	}
	if q.flushed == nil {
		q.flushed = make(chan struct{})
	}
	ch := q.flushed
	q.mu.Unlock()
	select {
	case <-ch:
		return nil
	case <-done:
		return ErrClosed
	case <-ctx.Done():
		return ctx.Err()
	}
}

// idleLocked reports whether everything queued has been written and
// flushed. q.mu must be held.
func (q *sendQueue) idleLocked() bool {
	return !q.writing && !q.inline && !q.workLocked()
}

// signalIdleLocked tells waitIdle that all is written, if it is. q.mu
// must be held.
func (q *sendQueue) signalIdleLocked() {
	if q.flushed != nil && q.idleLocked() {
		close(q.flushed)
		q.flushed = nil
	}
}

// close makes the queue refuse new work, drops what it holds, and wakes
// every waiting sender.
func (q *sendQueue) close(err error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.err != nil {
		return
	}
	q.err = err
	if q.linger {
		q.wakeLocked() // it finds the queue closed and ends
	}
	for _, m := range q.msgs {
		if m.kind == kindResponse || m.kind == kindError {
			q.dropped++
		}
	}
	q.msgs, q.ctrl, q.tail, q.owed = nil, nil, nil, false
	if q.space != nil {
		close(q.space)
		q.space = nil
	}
}

// droppedAnswers returns how many answers close dropped unwritten.
func (q *sendQueue) droppedAnswers() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.dropped
}

// writeLoop is the connection's only writer, started by unlockAndKick. It
// writes until the queue is empty and flushes; then it lingers for
// writerLinger, to be woken by the next message, and ends if none comes.
// It ends at once when the connection closes or a write fails (which
// closes the connection). It borrows its write buffer for its lifetime.
//
// Lingering spares a busy connection a new goroutine for each burst of
// writes, and with it the growth of a new goroutine's stack (a secure
// connection's sealing needs more stack than a goroutine starts with); an
// idle connection has no writer once writerLinger has passed.
func (c *Conn) writeLoop() {
	defer c.loops.Done()
	sink, vw := c.borrowSink()
	defer c.returnSink(vw)
	var linger *time.Timer // made at the first linger
	var (
		spare   []byte
		frames  = c.frames[:0] // the writer's own, kept across its runs
		dirty   bool           // written and not yet flushed
		yielded bool           // gave others a turn since the queue last ran dry
		written int            // message frames written since the last flush
		size    int            // bytes of message frames written since the last flush
	)
	for {
		var ctrl []byte
		var ok bool
		ctrl, frames, ok = c.sendq.take(spare, frames[:0])
		spare = ctrl // the queue gets it back at the next take, after it is written
		if ok {
			if err := writeFrames(sink, ctrl, frames); err != nil {
				c.fail(err)
				return
			}
			written += len(frames)
			for i := range frames {
				size += len(frames[i].payload)
			}
			clear(frames) // drop references to message data
			dirty = true
			continue
		}
		if dirty && !yielded && written > 0 && size < yieldBelow && c.manyInFlight() {
			// Before the system call, when small messages are flowing
			// and several calls or handlers are under way (so more
			// messages are about to be queued), let their goroutines run,
			// so that their frames share the system call. Not otherwise: a
			// goroutine that yields waits in the runtime's global queue,
			// which under load can take milliseconds, and the frames it
			// holds would wait that long for nothing (a lone call's
			// answer, a small answer next to a large message).
			yielded = true
			runtime.Gosched()
			continue
		}
		yielded = false
		if dirty {
			if err := sink.Flush(); err != nil {
				c.fail(err)
				return
			}
			dirty, written, size = false, 0, 0
			c.sendq.giveBack()
		}
		c.frames = frames[:0] // before park: once it lingers, a new writer may start after it
		switch c.sendq.park() {
		case parkExit:
			return
		case parkLinger:
			if linger == nil {
				linger = time.NewTimer(writerLinger)
			}
			if !c.sendq.lingerFor(linger, writerLinger) {
				return
			}
			frames = c.frames[:0]
		}
	}
}

// writerLinger is how long the writer waits for more to write before it
// ends.
const writerLinger = 20 * time.Millisecond

// yieldBelow is the most data a flush may carry for the writer to yield
// before it (see writeLoop).
const yieldBelow = 16 << 10

// manyInFlight reports whether more than two of our calls and the peer's
// requests are under way: then the writer's yield lets their messages
// share a write (see writeLoop).
func (c *Conn) manyInFlight() bool {
	c.mu.Lock()
	n := len(c.pending)
	c.mu.Unlock()
	if n > 2 {
		return true
	}
	c.in.mu.Lock()
	n += c.in.running + len(c.in.queue)
	c.in.mu.Unlock()
	return n > 2
}

// borrowSink returns what the writer writes frames to: the record writer
// of a secure connection, or a vecWriter on the network connection
// borrowed from a pool (also returned, for returnSink).
func (c *Conn) borrowSink() (frameSink, *vecWriter) {
	if c.rw != nil {
		return c.rw, nil
	}
	v := vecWriterPool.Get().(*vecWriter)
	v.reset(c.nc)
	return v, v
}

// returnSink gives back what borrowSink lent.
func (c *Conn) returnSink(v *vecWriter) {
	if v == nil {
		c.rw.shrink()
		return
	}
	v.reset(nil)
	vecWriterPool.Put(v)
}

func writeFrames(w frameSink, ctrl []byte, frames []dataFrame) error {
	if len(ctrl) > 0 {
		if _, err := w.Write(ctrl); err != nil {
			return err
		}
	}
	for i := range frames {
		if _, err := w.Write(frames[i].hdr[:]); err != nil {
			return err
		}
		if _, err := w.Write(frames[i].payload); err != nil {
			return err
		}
	}
	return nil
}
