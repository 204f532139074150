package bokbok

import (
	"encoding/binary"
	"errors"
	"io"
)

// The receive side: one reader goroutine per connection reads frames and
// hands each on: answers to their waiting callers, the peer's requests and
// notifications to the inbound dispatcher, control frames to their
// handlers. It never waits for application code or for the writer, so the
// peer's answers always get through, whatever the handlers are doing.

// readLoop is the connection's only reader. When it stops, for whatever
// reason, it closes the connection and runs the closer.
func (c *Conn) readLoop() {
	defer func() {
		c.fr.release()
		c.loops.Done()
		c.closer()
	}()
	for {
		h, p, err := c.fr.next()
		if err != nil {
			c.fail(c.readError(err))
			return
		}
		c.touch()
		if err := c.handleFrame(h, p); err != nil {
			c.log.Warn("bokbok: protocol error", "remote", c.nc.RemoteAddr(), "err", err)
			c.fail(err)
			return
		}
	}
}

// readError names the reason a read failed.
func (c *Conn) readError(err error) error {
	if errors.Is(err, io.EOF) {
		c.mu.Lock()
		graceful := c.goAwayRecv
		c.mu.Unlock()
		if graceful {
			return ErrShutdown
		}
	}
	return err
}

// handleFrame routes one frame. p is valid only until it returns.
func (c *Conn) handleFrame(h frameHeader, p []byte) error {
	switch h.kind {
	case kindRequest, kindNotify:
		return c.in.frame(h, p)
	case kindResponse, kindError:
		return c.answerFrame(h, p)
	case kindCancel:
		c.in.cancel(h.id)
	case kindPing:
		c.sendq.pushCtrl(kindPong, h.id)
	case kindPong:
		c.onPong(h.id)
	case kindGoAway:
		c.onGoAway()
	case kindCredit:
		return c.onCredit(h.id)
	case kindSettings:
		return protocolErrorf("SETTINGS frame after the handshake")
	}
	return nil
}

// payloadDest is the frameReader's dest: a message frame that continues a
// message whose buffer has room is read straight into that buffer. It runs
// in the reader goroutine, which owns the assemblies.
func (c *Conn) payloadDest(h frameHeader) []byte {
	switch h.kind {
	case kindResponse, kindError:
		c.mu.Lock()
		cl := c.pending[h.id]
		c.mu.Unlock()
		if cl != nil && cl.asmKind == h.kind {
			return cl.asm.free(int(h.length))
		}
	case kindRequest, kindNotify:
		return c.in.free(h)
	}
	return nil
}

// answerFrame adds a RESPONSE or ERROR frame to the answer of one of our
// calls, and completes the call when the answer is whole.
func (c *Conn) answerFrame(h frameHeader, p []byte) error {
	c.mu.Lock()
	cl := c.pending[h.id]
	c.mu.Unlock()
	if cl == nil {
		return protocolErrorf("%s for id %d, which has no request waiting", h.kind, h.id)
	}
	if cl.asmKind == 0 {
		cl.asmKind = h.kind
	} else if cl.asmKind != h.kind {
		return protocolErrorf("%s frame continues a %s for id %d", h.kind, cl.asmKind, h.id)
	}
	done, err := cl.asm.addWithin(h.kind, p, c.cfg.MaxMessageSize, &c.reserve)
	if err != nil || !done {
		return err
	}
	body := cl.asm.buf
	cl.asm = assembly{}

	var callErr error
	if h.kind == kindError {
		rerr, err := parseErrorBody(body)
		if err != nil {
			return err
		}
		body, callErr = nil, rerr
	}
	c.mu.Lock()
	mine := c.pending[h.id] == cl // false if the connection failed meanwhile
	if mine {
		delete(c.pending, h.id)
	}
	wanted := mine && !cl.abandoned
	c.mu.Unlock()
	if wanted {
		cl.finish(body, callErr)
	}
	c.workDone()
	return nil
}

// onCredit returns n notification credits the peer granted.
func (c *Conn) onCredit(n uint32) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if n == 0 || uint64(c.notifyLimit)+uint64(n) > c.peer.NotifyWindow {
		return protocolErrorf("CREDIT of %d would exceed the notify window of %d", n, c.peer.NotifyWindow)
	}
	if c.err == nil {
		c.notifyLimit += int(n)
		close(c.creditWait)
		c.creditWait = make(chan struct{})
	}
	if c.drained != nil {
		select { // wake a Shutdown waiting for its notifications to be handled
		case c.drained <- struct{}{}:
		default:
		}
	}
	return nil
}

// assembly collects the frames of one message. The first frame starts with
// the body's 4-byte length, which is checked against the limit before
// anything is allocated. A message that arrives in one frame costs exactly
// one allocation of its size. A longer one gets its whole buffer at once
// while the connection's reservation budget (reserveBudget bytes announced
// but not yet arrived, across all messages) allows; beyond that its buffer
// holds at most twice the bytes that have arrived, so a peer that announces
// large messages and sends little pins little.
type assembly struct {
	buf      []byte // nil until the first frame
	total    int
	reserved int // bytes of the budget this message holds: allocated, not yet arrived
}

// reserveBudget is how many announced-but-not-yet-arrived bytes a
// connection allocates ahead for the messages it is receiving.
const reserveBudget = 8 << 20

// add appends a frame's payload without a reservation budget.
func (a *assembly) add(kind frameKind, p []byte, limit int) (bool, error) {
	return a.addWithin(kind, p, limit, nil)
}

// drop gives back the message's reservation (it will never complete).
func (a *assembly) drop(budget *int) {
	if budget != nil {
		*budget += a.reserved
	}
	a.reserved = 0
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
func (a *assembly) addWithin(kind frameKind, p []byte, limit int, budget *int) (bool, error) {
	if a.buf == nil {
		if len(p) < bodyLenSize {
			return false, protocolErrorf("first %s frame of %d bytes is too short for the length", kind, len(p))
		}
		total := binary.BigEndian.Uint32(p)
		switch {
		case total == 0:
			return false, protocolErrorf("%s with an empty body", kind)
		case uint64(total) > uint64(limit):
			return false, &ProtocolError{
				Reason: kind.String() + " longer than this side's limit",
				Err:    &MessageTooLargeError{Size: int(total), Limit: limit},
			}
		}
		a.total = int(total)
		p = p[bodyLenSize:]
		if ahead := a.total - len(p); budget != nil && ahead > 0 && ahead <= *budget {
			a.buf = make([]byte, 0, a.total)
			a.reserved = ahead
			*budget -= ahead
		} else {
			a.buf = make([]byte, 0, min(a.total, max(len(p), 1)))
		}
	} else if a.reserved > 0 {
		r := min(a.reserved, len(p))
		a.reserved -= r
		*budget += r
	}
	n := len(a.buf) + len(p)
	if n > a.total {
		return false, protocolErrorf("%s frames carry more than the %d bytes announced", kind, a.total)
	}
	if n > cap(a.buf) {
		grown := make([]byte, len(a.buf), min(a.total, max(2*cap(a.buf), n)))
		copy(grown, a.buf)
		a.buf = grown
	}
	if len(p) > 0 && cap(a.buf) > len(a.buf) && &a.buf[:len(a.buf)+1][len(a.buf)] == &p[0] {
		a.buf = a.buf[:n] // read in place
	} else {
		a.buf = append(a.buf, p...)
	}
	return len(a.buf) == a.total, nil
}
