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
	to, method, args, ds := r.desc(), r.str(), r.raw(), r.descs(s.lim.descs)
	q, hasQ := r.optUint()
	if r.err != nil {
		return nil
	}
	if to.kind == descMyExport {
		return protocolErrorf("op:deliver to an object of the sender's own")
	}
	// Every reference in the arguments is checked now, whatever the method
	// will decode: a bad one is the message's error (PROTOCOL.md §19.3),
	// unless its target or a descriptor names nothing (§19.4).
	var argErr error
	if err := checkRefs(args, len(ds)); err != nil {
		argErr = badArgs(method, "%v", err)
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	if hasQ {
		// Question ids increase strictly: 0 and any id not above the
		// peer's last one (reused, or going back) break the protocol.
		if q <= s.lastQ {
			s.mu.Unlock()
			if q == 0 {
				return protocolErrorf("question id 0 (question ids start at 1)")
			}
			return protocolErrorf("question id %d is not greater than %d, the peer's previous question id", q, s.lastQ)
		}
		if len(s.answers) >= s.lim.answers {
			s.mu.Unlock()
			return limitErrorf("MaxAnswers", "more than %d open answers: the peer asks questions and does not finish them", s.lim.answers)
		}
		s.lastQ = q
	}
	// Names are looked up before the new answer exists: a message cannot
	// be sent to, or carry, the answer it is the question of. A message
	// that is not delivered (its target or a descriptor names nothing, or
	// a reference in it is bad) imports nothing: the references it
	// carried are released.
	tgt, terr := s.targetLocked(to)
	if terr == nil {
		terr = s.checkDescsLocked(ds)
	}
	if terr == nil {
		terr = argErr
	}
	var refs []Ref
	var rerr error
	if terr == nil {
		var perr *ProtocolError
		refs, rerr, perr = s.importAllLocked(ds)
		if perr != nil {
			s.mu.Unlock()
			return perr
		}
	} else {
		s.releaseDescsLocked(ds)
	}
	var ans *Promise
	if hasQ {
		// The answer entry is the answer's only holder: once it is gone (and
		// with it every message the peer could still pipeline to it), the
		// garbage collector finishes the question the answer may have been
		// forwarded as, to another peer.
		ans = newPromise()
		ans.st.limit = s.lim.pending
		s.answers[q] = &answerEntry{p: ans}
	}
	s.mu.Unlock()

	var w flow
	defer w.run()
	m := &message{method: method, args: payload{data: args, refs: refs}}
	if ans != nil {
		st := ans.st // not ans: a listener must not keep the handle alive
		m.answer = st
		st.onSettle(func(*flow) { s.sendReturn(q, st) }, &w)
	}
	switch {
	case terr != nil:
		m.fail(terr, &w)
	case rerr != nil:
		m.fail(rerr, &w)
	default:
		if _, toActor := tgt.(*actorCell); toActor {
			if s.inVats.Add(1) > int64(s.lim.vatQueued) {
				s.inVats.Add(-1)
				return limitErrorf("MaxVatQueued", "more than %d of the peer's messages wait in vats: the peer sends faster than its actors run", s.lim.vatQueued)
			}
			m.session = s
		}
		tgt.deliver(m, &w)
	}
	return nil
}

func (s *Session) recvReturn(r *opReader) *ProtocolError {
	r.want(3)
	q, value, ds := r.uint(), r.raw(), r.descs(s.lim.descs)
	if r.err != nil {
		return nil
	}
	if err := checkRefs(value, len(ds)); err != nil {
		return protocolErrorf("op:return for question %d: %v", q, err)
	}
	return s.answered(r.op, q, func() (payload, error, *ProtocolError) {
		refs, err, perr := s.importAllLocked(ds)
		return payload{data: value, refs: refs}, err, perr
	})
}

func (s *Session) recvBreak(r *opReader) *ProtocolError {
	r.want(3)
	q, code, msg := r.uint(), r.str(), r.str()
	if r.err != nil {
		return nil
	}
	return s.answered(r.op, q, func() (payload, error, *ProtocolError) {
		return payload{}, &bokbok.RemoteError{Code: code, Message: msg}, nil
	})
}

// answered settles the promise of question q, which the peer answered with
// op (op:return or op:break), with what outcome returns; outcome runs with
// s.mu held.
func (s *Session) answered(op string, q uint64, outcome func() (payload, error, *ProtocolError)) *ProtocolError {
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
	pl, err, perr := outcome()
	if perr != nil {
		s.mu.Unlock()
		return perr // the session ends, and breaks st
	}
	delete(s.quests, q)
	s.mu.Unlock()
	settleNow(st, pl, err)
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

// importAllLocked turns the descriptors of a message into references,
// importing the peer's objects. If a descriptor names nothing, it imports
// nothing: it releases the imports the message carried and returns the
// error of the message. A message that would make the session hold more
// imports than its bound is a *ProtocolError. s.mu is held.
func (s *Session) importAllLocked(ds []desc) ([]Ref, error, *ProtocolError) {
	if len(ds) == 0 {
		return nil, nil, nil
	}
	if err := s.checkDescsLocked(ds); err != nil {
		s.releaseDescsLocked(ds)
		return nil, err, nil
	}
	fresh := 0 // an upper bound on the imports the message adds
	for _, d := range ds {
		if d.kind == descMyExport {
			fresh++
		}
	}
	if len(s.imports)+fresh > s.lim.imports {
		added := map[uint64]bool{}
		for _, d := range ds {
			if d.kind == descMyExport && d.id != 0 && s.imports[d.id] == nil {
				added[d.id] = true
			}
		}
		if len(s.imports)+len(added) > s.lim.imports {
			return nil, nil, limitErrorf("MaxImports", "more than %d imports", s.lim.imports)
		}
	}
	refs := make([]Ref, len(ds))
	for i, d := range ds {
		if d.kind == descMyExport {
			refs[i] = Ref{t: s.importLocked(d.id)}
			continue
		}
		t, _ := s.targetLocked(d)
		refs[i] = Ref{t: t}
	}
	return refs, nil, nil
}

// checkDescsLocked returns the error of the first descriptor of kind 2
// or 3 that names nothing, or nil. s.mu is held.
func (s *Session) checkDescsLocked(ds []desc) error {
	for _, d := range ds {
		if d.kind == descMyExport {
			continue
		}
		if _, err := s.targetLocked(d); err != nil {
			return err
		}
	}
	return nil
}

// releaseDescsLocked gives back, with op:release, the receipts of the
// peer's objects in the descriptors of a message that is not delivered,
// without importing them. s.mu is held.
func (s *Session) releaseDescsLocked(ds []desc) {
	counts := map[uint64]uint64{}
	var order []uint64
	for _, d := range ds {
		if d.kind != descMyExport || d.id == 0 {
			continue
		}
		if counts[d.id] == 0 {
			order = append(order, d.id)
		}
		counts[d.id]++
	}
	for _, id := range order {
		s.enqueueLocked(newOp(opRelease, 2).uint(id).uint(counts[id]).bytes(), 0)
	}
}
