package ocap

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bokbok-go/bokbok"
	"github.com/vmihailenco/msgpack/v5"
)

// Session is a Node's capability state for one bokbok connection: what it
// exported to the peer, what it imported, the questions it asked and the
// answers it owes. A session ends when its connection closes; then every
// promise waiting on the peer breaks (ErrDisconnected) and every import
// fails later sends.
//
// Each session owns one goroutine (sendLoop) that writes its queued
// capability messages, in order, as notifications; it ends when the
// session has ended and its queue is empty.
type Session struct {
	node *Node
	conn *bokbok.Conn
	lim  limits
	boot *importRef    // the peer's bootstrap object, import 0
	wake chan struct{} // capacity 1: out may have messages
	done chan struct{} // closed when the session has ended

	inVats atomic.Int64 // the peer's messages waiting in vat queues (MaxVatQueued)

	mu       sync.Mutex // guards everything below
	closed   bool
	err      error    // why the session ended
	abort    bool     // end the connection after sending out
	out      []outMsg // encoded messages waiting for sendLoop
	queued   int      // messages in out or being written by sendLoop
	qBytes   int      // their bytes
	overflow bool     // the queue outgrew its bounds: sendLoop ends the session
	draining bool     // the connection is shutting down: out is dropped
	exports  map[uint64]*exportEntry
	ids      map[target]uint64 // export id of each exported target
	nextExp  uint64
	imports  map[uint64]*importEntry
	gen      uint64 // import generations, see importEntry
	quests   map[uint64]*promiseState
	nextQ    uint64 // 0 once every question id has been used
	answers  map[uint64]*answerEntry
	lastQ    uint64 // the peer's greatest question id so far (0: none yet)
}

// outMsg is a capability message waiting to be written, and the question
// it asks (0 if none): a question that can no longer be sent breaks.
type outMsg struct {
	b []byte
	q uint64
}

// exportEntry is an object the peer may name: count is how many times it
// was sent and not yet released.
type exportEntry struct {
	t     target
	count uint64
}

// answerEntry is an answer this side owes. It lives until it has been
// returned and the peer has sent op:finish; meanwhile messages can be
// pipelined to it.
type answerEntry struct {
	p        *Promise
	returned bool
	finished bool
}

func newSession(n *Node, c *bokbok.Conn) *Session {
	s := &Session{
		node: n, conn: c,
		lim:     n.limits(),
		wake:    make(chan struct{}, 1),
		done:    make(chan struct{}),
		exports: map[uint64]*exportEntry{},
		ids:     map[target]uint64{},
		nextExp: 1,
		imports: map[uint64]*importEntry{},
		quests:  map[uint64]*promiseState{},
		nextQ:   1,
		answers: map[uint64]*answerEntry{},
	}
	s.boot = &importRef{s: s, id: 0}
	go s.sendLoop()
	return s
}

// Bootstrap returns the peer's bootstrap object, the one reference each
// side has from the start. Its method "fetch" takes a name and answers
// the reference the peer bound to it (Node.Bind).
func (s *Session) Bootstrap() Ref { return Ref{t: s.boot} }

// Fetch asks the peer's bootstrap object for the reference bound
// under name. Messages can be pipelined to the promise at once.
func (s *Session) Fetch(name string) *Promise { return s.Bootstrap().Send("fetch", name) }

// Conn returns the session's connection.
func (s *Session) Conn() *bokbok.Conn { return s.conn }

// Close closes the connection, which ends the session.
func (s *Session) Close() error {
	err := s.conn.Close()
	<-s.done
	return err
}

// Done returns a channel that is closed when the session has ended.
func (s *Session) Done() <-chan struct{} { return s.done }

// Err returns why the session ended (the connection's error, or a
// *ProtocolError), or nil while it is open.
func (s *Session) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// Stats counts a session's table entries.
type Stats struct {
	Exports   int // objects the peer may name (the bootstrap object is not counted)
	Imports   int // live references to the peer's objects
	Questions int // messages sent to the peer whose answer has not come back
	Answers   int // answers owed to the peer or not yet finished by it
	Queued    int // capability messages waiting to be written
}

// Stats returns the current sizes of the session's tables. After both
// sides have dropped every reference and promise and the garbage collector
// has run, all are zero.
func (s *Session) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	queued := s.queued
	if s.closed {
		queued = 0 // what is left is op:abort, or dropped
	}
	return Stats{len(s.exports), len(s.imports), len(s.quests), len(s.answers), queued}
}

// sendLoop writes queued messages in order until the session has ended.
// Each message must be taken within the node's SendTimeout (a second,
// once the session has ended). A connection that is shutting down
// gracefully takes no more: what is queued then, and later, is dropped
// (questions break), and the session lasts until the connection closes.
func (s *Session) sendLoop() {
	for {
		s.mu.Lock()
		batch, closed, abort, overflow := s.out, s.closed, s.abort, s.overflow
		s.out = nil
		s.mu.Unlock()
		if overflow && !closed {
			s.fail(protocolErrorf("the peer does not take capability messages: more than %d messages or %d bytes queued (Node.MaxQueuedMessages, Node.MaxQueuedBytes)",
				s.lim.queued, s.lim.queuedBytes))
			continue
		}
		for i, o := range batch {
			err := s.notify(o.b, closed)
			if err == nil {
				s.sent(o)
				batch[i] = outMsg{}
				continue
			}
			switch {
			case errors.Is(err, bokbok.ErrShutdown):
				s.mu.Lock()
				s.draining = true
				s.mu.Unlock()
				s.dropOut(batch[i:])
			case errors.Is(err, context.DeadlineExceeded):
				if !closed {
					s.node.warn("ocap: ending session: the peer took no capability message in time",
						"peer", s.conn.RemoteAddr().String(), "timeout", s.lim.sendTimeout)
				}
				s.shut(fmt.Errorf("ocap: the peer took no capability message for %v: %w", s.lim.sendTimeout, err))
			default:
				s.shut(err)
			}
			for _, o := range batch[i:] { // not sent
				s.sent(o)
			}
			break
		}
		if len(batch) > 0 {
			continue
		}
		if closed {
			// A session that has ended ends its connection: after op:abort
			// gracefully, so that the peer reads it.
			if abort {
				sctx, cancel := context.WithTimeout(context.Background(), time.Second)
				_ = s.conn.Shutdown(sctx)
				cancel()
			}
			s.conn.Close()
			s.node.forget(s)
			return
		}
		select {
		case <-s.wake:
		case <-s.conn.Done():
			s.shut(s.conn.Err())
		}
	}
}

// sent takes a message that was written, or never will be, off the
// queue's counts.
func (s *Session) sent(o outMsg) {
	s.mu.Lock()
	s.queued--
	s.qBytes -= len(o.b)
	s.mu.Unlock()
}

// notify writes one message, waiting at most the send timeout (a second
// once the session has ended), or drops it if the connection is draining.
func (s *Session) notify(b []byte, closed bool) error {
	s.mu.Lock()
	draining := s.draining
	s.mu.Unlock()
	if draining {
		return bokbok.ErrShutdown
	}
	d := s.lim.sendTimeout
	if closed {
		d = min(d, time.Second)
	}
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	return s.conn.Notify(ctx, msgpack.RawMessage(b))
}

// dropOut drops messages that can no longer be sent: the questions among
// them break.
func (s *Session) dropOut(msgs []outMsg) {
	var lost []*promiseState
	s.mu.Lock()
	for _, o := range msgs {
		if o.q == 0 {
			continue
		}
		if st := s.quests[o.q]; st != nil {
			delete(s.quests, o.q)
			lost = append(lost, st)
		}
	}
	s.mu.Unlock()
	var w flow
	err := &disconnected{cause: bokbok.ErrShutdown}
	for _, st := range lost {
		st.settle(payload{}, err, &w)
	}
	w.run()
}

// enqueueLocked queues an encoded message for sendLoop; q is the question
// it asks, or 0. A queue outgrowing the session's bounds makes sendLoop
// end the session; meanwhile further messages are dropped. s.mu is held.
func (s *Session) enqueueLocked(b []byte, q uint64) {
	if s.overflow {
		return
	}
	if s.queued >= s.lim.queued || s.qBytes+len(b) > s.lim.queuedBytes {
		s.overflow = true
	} else {
		s.out = append(s.out, outMsg{b: b, q: q})
		s.queued++
		s.qBytes += len(b)
	}
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// shut ends the session: every question breaks, every table empties.
func (s *Session) shut(cause error) {
	s.end(cause, false)
}

// fail ends the session because the peer broke the protocol or one of
// the session's bounds: it sends op:abort and closes the connection.
func (s *Session) fail(err *ProtocolError) {
	s.node.warn("ocap: protocol violation", "peer", s.conn.RemoteAddr().String(), "detail", err.Reason)
	s.end(err, true)
}

func (s *Session) end(cause error, abort bool) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.closed, s.err, s.abort = true, cause, abort
	if abort {
		if s.overflow { // the peer is not reading them
			for _, o := range s.out {
				s.queued--
				s.qBytes -= len(o.b)
			}
			s.out = nil
		}
		ab := newOp(opAbort, 1).str(cause.(*ProtocolError).Reason).bytes()
		s.out = append(s.out, outMsg{b: ab})
		s.queued++
		s.qBytes += len(ab)
	}
	quests := s.quests
	s.quests, s.answers = nil, nil
	s.exports, s.ids, s.imports = nil, nil, nil
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
	close(s.done)
	lost := &disconnected{cause: cause}
	var w flow
	for _, st := range quests {
		st.settle(payload{}, lost, &w)
	}
	w.run()
}

// transmit sends m to the peer's object named by to. If m has an answer,
// the answer's promise becomes the peer's answer to a new question, and
// messages already waiting on that promise follow m (handed on in w).
func (s *Session) transmit(to desc, m *message, w *flow) {
	if m.answer == nil {
		s.mu.Lock()
		if !s.closed {
			if b, err := s.deliverOpLocked(to, m, 0, false); err == nil {
				s.enqueueLocked(b, 0)
			}
		}
		s.mu.Unlock()
		return
	}
	// st.mu is held while the message is queued, so that no message sent
	// to its answer can leave first; nothing is called out meanwhile.
	st := m.answer
	st.mu.Lock()
	s.mu.Lock()
	var b []byte
	var err error
	q := s.nextQ
	switch {
	case s.closed:
		err = &disconnected{cause: s.err}
	case q == 0:
		err = errQuestionsUsedUp
	default:
		b, err = s.deliverOpLocked(to, m, q, true)
	}
	if err != nil {
		s.mu.Unlock()
		st.mu.Unlock()
		st.settle(payload{}, err, w)
		return
	}
	s.nextQ++
	s.quests[q] = st
	s.enqueueLocked(b, q)
	s.mu.Unlock()
	st.remote.Store(&remoteAnswer{s: s, q: q})
	drain := st.startDrainLocked()
	finish := !drain && st.finishLocked()
	st.mu.Unlock()
	if drain {
		w.push(flowItem{st: st}) // the drain sends op:finish, if due
	}
	if finish {
		s.finish(q)
	}
}

// deliverOpLocked encodes op:deliver, exporting the references in m's
// arguments. s.mu is held.
func (s *Session) deliverOpLocked(to desc, m *message, q uint64, hasQ bool) ([]byte, error) {
	ds, err := s.describeLocked(m.args.refs)
	if err != nil {
		return nil, err
	}
	w := newOp(opDeliver, 5).desc(to).str(m.method).raw(m.args.data).descs(ds)
	if hasQ {
		w.uint(q)
	} else {
		w.nil()
	}
	return w.bytes(), nil
}

// describeLocked names each reference for the peer, exporting what the
// peer does not already hold. s.mu is held.
func (s *Session) describeLocked(refs []Ref) ([]desc, error) {
	ds := make([]desc, len(refs))
	for i, r := range refs {
		d, err := s.describeOneLocked(r.t)
		if err != nil {
			s.unexportLocked(ds[:i]) // the message is not sent: undo its counts
			return nil, err
		}
		ds[i] = d
	}
	return ds, nil
}

// unexportLocked takes back the exports counted for descriptors that are
// not sent after all. s.mu is held.
func (s *Session) unexportLocked(ds []desc) {
	for _, d := range ds {
		if d.kind != descMyExport {
			continue
		}
		if e := s.exports[d.id]; e != nil {
			s.uncountLocked(d.id, e, 1)
		}
	}
}

// uncountLocked takes n sends off export id (entry e), forgetting the
// export when none is left. s.mu is held.
func (s *Session) uncountLocked(id uint64, e *exportEntry, n uint64) {
	e.count -= n
	if e.count == 0 {
		delete(s.exports, id)
		delete(s.ids, e.t)
	}
}

func (s *Session) describeOneLocked(t target) (desc, error) {
	switch t := t.(type) {
	case *importRef:
		if t.released.Load() {
			return desc{}, ErrReleased
		}
		if t.s == s {
			return desc{kind: descYourExport, id: t.id}, nil
		}
	case *Promise:
		if ra := t.st.remote.Load(); ra != nil && ra.s == s {
			return desc{kind: descYourAnswer, id: ra.q}, nil
		}
	}
	id, ok := s.ids[t]
	if !ok {
		id = s.nextExp
		s.nextExp++
		s.ids[t] = id
		s.exports[id] = &exportEntry{t: t}
	}
	s.exports[id].count++
	return desc{kind: descMyExport, id: id}, nil
}

// finish tells the peer that the answer to question q is no longer needed.
func (s *Session) finish(q uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.closed {
		s.enqueueLocked(newOp(opFinish, 1).uint(q).bytes(), 0)
	}
}

// sendReturn sends the settled answer to question q.
func (s *Session) sendReturn(q uint64, st *promiseState) {
	r, err := st.outcome()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	var b []byte
	if err == nil {
		ds, derr := s.describeLocked(r.refs)
		if derr == nil {
			b = newOp(opReturn, 3).uint(q).raw(r.data).descs(ds).bytes()
		}
		err = derr
	}
	if err != nil {
		code, msg := wireError(err)
		b = newOp(opBreak, 3).uint(q).str(code).str(msg).bytes()
	}
	s.enqueueLocked(b, 0)
	if e := s.answers[q]; e != nil {
		if e.finished {
			delete(s.answers, q)
		} else {
			e.returned = true
		}
	}
}

// Shutdown ends the session gracefully: it shuts the connection down (see
// bokbok.Conn.Shutdown: capability messages already queued are written,
// answers to this side's requests awaited) and waits until the session has
// ended or ctx ends, when it closes the connection.
func (s *Session) Shutdown(ctx context.Context) error {
	err := s.conn.Shutdown(ctx)
	if err != nil {
		s.conn.Close()
	}
	<-s.done
	return err
}
