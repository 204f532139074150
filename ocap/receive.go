package ocap

import (
	"github.com/bokbok-go/bokbok"
)

// receive handles one capability message from the peer. It runs in the
// connection's notification goroutine, one message at a time, in the order
// the peer sent them, and never blocks: deliveries go to vat queues, to
// promises, or to another session's queue. A message that breaks the
// protocol ends the session.
func (s *Session) receive(raw []byte) {
	r := newOpReader(raw)
	var perr *ProtocolError
	switch r.op {
	case opDeliver:
		perr = s.recvDeliver(r)
	case opReturn:
		perr = s.recvReturn(r)
	case opBreak:
		perr = s.recvBreak(r)
	case opFinish:
		perr = s.recvFinish(r)
	case opRelease:
		perr = s.recvRelease(r)
	case opAbort:
		perr = s.recvAbort(r)
	default:
		if r.err == nil {
			perr = protocolErrorf("unknown operation %q", r.op)
		}
	}
	if r.err != nil {
		perr = protocolErrorf("malformed %s: %v", r.op, r.err)
	}
	if perr != nil {
		s.fail(perr)
	}
}

func (s *Session) recvDeliver(r *opReader) *ProtocolError {
	r.want(5)
	to, method, args, ds := r.desc(), r.str(), r.raw(), r.descs()
	q, hasQ := r.optUint()
	if r.err != nil {
		return nil
	}
	if to.kind == descMyExport {
		return protocolErrorf("op:deliver to an object of the sender's own")
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	if _, dup := s.answers[q]; hasQ && dup {
		s.mu.Unlock()
		return protocolErrorf("question %d is already in use", q)
	}
	// Names are looked up before the new answer exists: a message cannot
	// be sent to, or carry, the answer it is the question of.
	refs, rerr := s.resolveLocked(ds)
	tgt, terr := s.targetLocked(to)
	var ans *Promise
	if hasQ {
		// The answer entry is the answer's only holder: once it is gone (and
		// with it every message the peer could still pipeline to it), the
		// garbage collector finishes the question the answer may have been
		// forwarded as, to another peer.
		ans = newPromise()
		s.answers[q] = &answerEntry{p: ans}
	}
	s.mu.Unlock()

	m := &message{method: method, args: payload{data: args, refs: refs}}
	if ans != nil {
		st := ans.st // not ans: a listener must not keep the handle alive
		m.answer = st
		st.onSettle(func() { s.sendReturn(q, st) })
	}
	switch {
	case terr != nil:
		m.fail(terr)
	case rerr != nil:
		m.fail(rerr)
	default:
		tgt.deliver(m)
	}
	return nil
}

func (s *Session) recvReturn(r *opReader) *ProtocolError {
	r.want(3)
	q, value, ds := r.uint(), r.raw(), r.descs()
	if r.err != nil {
		return nil
	}
	return s.answered(r.op, q, func() (payload, error) {
		refs, err := s.resolveLocked(ds)
		return payload{data: value, refs: refs}, err
	})
}

func (s *Session) recvBreak(r *opReader) *ProtocolError {
	r.want(3)
	q, code, msg := r.uint(), r.str(), r.str()
	if r.err != nil {
		return nil
	}
	return s.answered(r.op, q, func() (payload, error) {
		return payload{}, &bokbok.RemoteError{Code: code, Message: msg}
	})
}

// answered settles the promise of question q, which the peer answered with
// op (op:return or op:break), with what outcome returns; outcome runs with
// s.mu held.
func (s *Session) answered(op string, q uint64, outcome func() (payload, error)) *ProtocolError {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	st := s.quests[q]
	if st == nil {
		s.mu.Unlock()
		return protocolErrorf("%s for question %d, which is not waiting", op, q)
	}
	delete(s.quests, q)
	pl, err := outcome()
	s.mu.Unlock()
	st.settle(pl, err)
	return nil
}

func (s *Session) recvFinish(r *opReader) *ProtocolError {
	r.want(1)
	q := r.uint()
	if r.err != nil {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	e := s.answers[q]
	switch {
	case e == nil || e.finished:
		return protocolErrorf("op:finish for answer %d, which is not open", q)
	case e.returned:
		delete(s.answers, q)
	default:
		e.finished = true
	}
	return nil
}

func (s *Session) recvRelease(r *opReader) *ProtocolError {
	r.want(2)
	id, count := r.uint(), r.uint()
	if r.err != nil {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	e := s.exports[id]
	switch {
	case e == nil:
		return protocolErrorf("op:release of export %d, which is not exported", id)
	case count == 0 || count > e.count:
		return protocolErrorf("op:release of %d references to export %d, which was sent %d times", count, id, e.count)
	}
	s.uncountLocked(id, e, count)
	return nil
}

func (s *Session) recvAbort(r *opReader) *ProtocolError {
	r.want(1)
	reason := r.str()
	if r.err != nil {
		return nil
	}
	s.end(&ProtocolError{Reason: reason, Remote: true}, false)
	return nil
}

// targetLocked finds the local object a message is addressed to. A name
// that was never handed out fails: nothing else is reachable. s.mu is held.
func (s *Session) targetLocked(d desc) (target, error) {
	switch d.kind {
	case descYourExport:
		if d.id == 0 {
			return s.node.bootstrap(s), nil
		}
		if e := s.exports[d.id]; e != nil {
			return e.t, nil
		}
		return nil, remoteErrorf(CodeNoObject, "no export %d on this connection", d.id)
	case descYourAnswer:
		if e := s.answers[d.id]; e != nil && !e.finished {
			return e.p, nil
		}
		return nil, remoteErrorf(CodeNoObject, "no open answer %d on this connection", d.id)
	}
	return nil, remoteErrorf(CodeNoObject, "descriptor kind %d cannot be a target", d.kind)
}

// resolveLocked turns the descriptors of a message into references,
// importing the peer's objects. s.mu is held.
func (s *Session) resolveLocked(ds []desc) ([]Ref, error) {
	if len(ds) == 0 {
		return nil, nil
	}
	refs := make([]Ref, len(ds))
	var firstErr error
	for i, d := range ds {
		if d.kind == descMyExport {
			refs[i] = Ref{t: s.importLocked(d.id)}
			continue
		}
		t, err := s.targetLocked(d)
		if err != nil {
			if firstErr == nil {
				firstErr = err
			}
			continue
		}
		refs[i] = Ref{t: t}
	}
	return refs, firstErr
}
