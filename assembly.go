package bokbok

import (
	"encoding/binary"
	"sync/atomic"
)

// assembly collects the frames of one message. The first frame starts with
// the body's 4-byte length, which is checked against the limit before
// anything is allocated. A message that arrives in one frame costs exactly
// one allocation of its size. A longer one gets its whole buffer at once
// while the reservation budgets allow (announced-but-not-yet-arrived
// bytes, per connection and across the process); beyond them its buffer
// holds at most twice the bytes that have arrived, so a peer that
// announces large messages and sends little pins little.
//
// A discarding assembly (a message refused when its first frame arrived)
// counts its bytes and stores none of them.
type assembly struct {
	buf      []byte // nil until the first frame
	total    int
	got      int  // bytes arrived, for a discarding assembly
	discard  bool // count the bytes, keep none
	reserved int  // bytes of the budgets this message holds: allocated, not yet arrived
}

// Reservation budgets: how many announced-but-not-yet-arrived bytes may be
// allocated ahead, per connection and across the process. A buffer of a
// message over 64 KiB comes from a pool of size classes (msgbuf.go) and is
// at most 1/8 larger than the message; the budgets count the message's
// bytes.
const (
	reserveBudget       = 8 << 20
	globalReserveBudget = 64 << 20
)

// globalReserve is what is left of globalReserveBudget.
var globalReserve atomic.Int64

func init() { globalReserve.Store(globalReserveBudget) }

// reservation is a connection's reservation budget. Only the reader
// goroutine touches it.
type reservation struct{ left int }

// take reserves n bytes from the connection's and the process's budgets,
// or reports false.
func (r *reservation) take(n int) bool {
	if n > r.left {
		return false
	}
	if globalReserve.Add(-int64(n)) < 0 {
		globalReserve.Add(int64(n))
		return false
	}
	r.left -= n
	return true
}

// give returns n reserved bytes.
func (r *reservation) give(n int) {
	r.left += n
	globalReserve.Add(int64(n))
}

// close returns whatever the connection's messages still hold to the
// process's budget, when the connection stops reading.
func (r *reservation) close() {
	globalReserve.Add(int64(reserveBudget - r.left))
	r.left = reserveBudget
}

// announced returns the body length a message's first frame announces, or
// false if the frame is too short to hold it.
func announced(p []byte) (int, bool) {
	if len(p) < bodyLenSize {
		return 0, false
	}
	return int(binary.BigEndian.Uint32(p)), true
}

// add appends a frame's payload without a reservation budget.
func (a *assembly) add(kind frameKind, p []byte, limit int) (bool, error) {
	return a.addWithin(kind, p, limit, nil)
}

// drop gives back the message's reservation and its buffer (it will
// never complete).
func (a *assembly) drop(budget *reservation) {
	if budget != nil && a.reserved > 0 {
		budget.give(a.reserved)
	}
	a.reserved = 0
	putMsgBuf(a.buf)
	a.buf = nil
}

// free returns the next n bytes of the buffer's spare room, for the next
// frame to be read into, or nil if the message has not started or the room
// is too small.
func (a *assembly) free(n int) []byte {
	if a.buf == nil || cap(a.buf)-len(a.buf) < n {
		return nil
	}
	return a.buf[len(a.buf) : len(a.buf)+n]
}

// addWithin appends a frame's payload, allocating ahead from budget (which
// may be nil). It reports whether the message is whole. A payload read in
// place (see free) is not copied.
func (a *assembly) addWithin(kind frameKind, p []byte, limit int, budget *reservation) (bool, error) {
	first := a.total == 0
	if first {
		total, ok := announced(p)
		switch {
		case !ok:
			return false, protocolErrorf("first %s frame of %d bytes is too short for the length", kind, len(p))
		case total == 0:
			return false, protocolErrorf("%s with an empty body", kind)
		case uint64(total) > uint64(limit):
			return false, &ProtocolError{
				Reason: kind.String() + " longer than this side's limit",
				Err:    &MessageTooLargeError{Size: total, Limit: limit},
			}
		}
		a.total = total
		p = p[bodyLenSize:]
	}
	if a.discard {
		if a.got += len(p); a.got > a.total {
			return false, protocolErrorf("%s frames carry more than the %d bytes announced", kind, a.total)
		}
		return a.got == a.total, nil
	}
	if first {
		if ahead := a.total - len(p); budget != nil && ahead > 0 && budget.take(ahead) {
			a.buf = getMsgBuf(a.total)
			a.reserved = ahead
		} else {
			a.buf = make([]byte, 0, min(a.total, max(len(p), 1)))
		}
	} else if a.reserved > 0 {
		r := min(a.reserved, len(p))
		a.reserved -= r
		budget.give(r)
	}
	n := len(a.buf) + len(p)
	if n > a.total {
		return false, protocolErrorf("%s frames carry more than the %d bytes announced", kind, a.total)
	}
	if n > cap(a.buf) {
		grown := append(getMsgBuf(min(a.total, max(2*cap(a.buf), n))), a.buf...)
		putMsgBuf(a.buf) // read into only here, so referred to by nothing else
		a.buf = grown
	}
	if len(p) > 0 && cap(a.buf) > len(a.buf) && &a.buf[:len(a.buf)+1][len(a.buf)] == &p[0] {
		a.buf = a.buf[:n] // read in place
	} else {
		a.buf = append(a.buf, p...)
	}
	return len(a.buf) == a.total, nil
}
