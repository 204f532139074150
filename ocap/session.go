package ocap

import (
	"context"
	"sync"
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
	boot *importRef    // the peer's bootstrap object, import 0
	wake chan struct{} // capacity 1: out may have messages
	done chan struct{} // closed when the session has ended

	mu      sync.Mutex // guards everything below
	closed  bool
	err     error    // why the session ended
	abort   bool     // end the connection after sending out
	out     [][]byte // encoded messages waiting for sendLoop
	exports map[uint64]*exportEntry
	ids     map[target]uint64 // export id of each exported target
	nextExp uint64
	imports map[uint64]*importEntry
	gen     uint64 // import generations, see importEntry
	quests  map[uint64]*promiseState
	nextQ   uint64
	answers map[uint64]*answerEntry
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
	return Stats{len(s.exports), len(s.imports), len(s.quests), len(s.answers), len(s.out)}
}

// sendLoop writes queued messages in order until the session has ended.
func (s *Session) sendLoop() {
	ctx := context.Background()
	for {
		s.mu.Lock()
		batch, closed, abort := s.out, s.closed, s.abort
		s.out = nil
		s.mu.Unlock()
		for _, b := range batch {
			if err := s.conn.Notify(ctx, msgpack.RawMessage(b)); err != nil {
				s.shut(err)
				break
			}
		}
		if len(batch) > 0 {
			continue
		}
		if closed {
			// A session that has ended ends its connection: after op:abort
			// gracefully, so that the peer reads it.
			if abort {
				sctx, cancel := context.WithTimeout(ctx, time.Second)
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

// enqueueLocked queues an encoded message for sendLoop. s.mu is held.
func (s *Session) enqueueLocked(b []byte) {
	s.out = append(s.out, b)
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// shut ends the session: every question breaks, every table empties.
func (s *Session) shut(cause error) {
	s.end(cause, false)
}

// fail ends the session because the peer broke the protocol: it sends
// op:abort and closes the connection.
func (s *Session) fail(err *ProtocolError) {
	s.node.logf("ocap: ending session with %s: %v", s.conn.RemoteAddr(), err)
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
		s.out = append(s.out, newOp(opAbort, 1).str(cause.(*ProtocolError).Reason).bytes())
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
	for _, st := range quests {
		st.settle(payload{}, lost)
	}
}

// transmit sends m to the peer's object named by to. If m has an answer,
// the answer's promise becomes the peer's answer to a new question, and
// messages already waiting on that promise follow m.
func (s *Session) transmit(to desc, m *message) {
	if m.answer == nil {
		s.mu.Lock()
		if !s.closed {
			if b, err := s.deliverOpLocked(to, m, 0, false); err == nil {
				s.enqueueLocked(b)
			}
		}
		s.mu.Unlock()
		return
	}
	st := m.answer
	st.mu.Lock()
	s.mu.Lock()
	if s.closed {
		err := &disconnected{cause: s.err}
		s.mu.Unlock()
		st.mu.Unlock()
		st.settle(payload{}, err)
		return
	}
	q := s.nextQ
	b, err := s.deliverOpLocked(to, m, q, true)
	if err != nil {
		s.mu.Unlock()
		st.mu.Unlock()
		st.settle(payload{}, err)
		return
	}
	s.nextQ++
	s.quests[q] = st
	s.enqueueLocked(b)
	s.mu.Unlock()
	st.remote.Store(&remoteAnswer{s: s, q: q})
	for _, pm := range st.pending {
		s.transmit(desc{kind: descYourAnswer, id: q}, pm)
	}
	st.pending = nil
	dropped := st.dropped
	st.mu.Unlock()
	if dropped {
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
		s.enqueueLocked(newOp(opFinish, 1).uint(q).bytes())
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
	s.enqueueLocked(b)
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
