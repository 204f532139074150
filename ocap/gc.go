package ocap

import (
	"runtime"
	"sync/atomic"
	"weak"
)

// importRef is a reference to the peer's export id. While any Ref holds it,
// the import is live; when the garbage collector finds it unreachable, or
// the program calls Release, the session sends op:release with the number
// of times the peer sent the reference.
type importRef struct {
	s        *Session
	id       uint64
	gen      uint64 // which importEntry generation this object is
	released atomic.Bool
}

// importEntry counts how many times the peer sent export id. Its importRef
// is held weakly: when the garbage collector frees it, a new one may be
// made for the same id (the count carries on, and the old object's cleanup
// sees a newer generation and does nothing).
type importEntry struct {
	ref   weak.Pointer[importRef]
	count uint64
	gen   uint64
}

type importToken struct {
	s   *Session
	id  uint64
	gen uint64
}

func (ir *importRef) deliver(m *message, w *flow) {
	if ir.released.Load() {
		m.fail(ErrReleased, w)
		return
	}
	ir.s.transmit(desc{kind: descYourExport, id: ir.id}, m, w)
}

// importLocked returns the live reference for the peer's export id,
// counting one more receipt of it. s.mu is held.
func (s *Session) importLocked(id uint64) *importRef {
	if id == 0 {
		return s.boot
	}
	e := s.imports[id]
	if e == nil {
		e = &importEntry{}
		s.imports[id] = e
	}
	e.count++
	if ir := e.ref.Value(); ir != nil && !ir.released.Load() {
		return ir
	}
	s.gen++
	ir := &importRef{s: s, id: id, gen: s.gen}
	e.ref, e.gen = weak.Make(ir), s.gen
	runtime.AddCleanup(ir, dropImport, importToken{s: s, id: id, gen: s.gen})
	return ir
}

// release is Ref.Release for an import.
func (ir *importRef) release() {
	if ir.id == 0 || !ir.released.CompareAndSwap(false, true) {
		return
	}
	dropImport(importToken{s: ir.s, id: ir.id, gen: ir.gen})
}

// dropImport releases an import whose object is gone or released.
func dropImport(tok importToken) {
	s := tok.s
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.imports[tok.id]
	if s.closed || e == nil || e.gen != tok.gen {
		return
	}
	delete(s.imports, tok.id)
	s.enqueueLocked(newOp(opRelease, 2).uint(tok.id).uint(e.count).bytes(), 0)
}
