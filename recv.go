package bokbok

import (
	"errors"
	"io"
	"slices"

	"github.com/bokbok-go/bokbok/internal/msgpackcheck"
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
		c.reserve.close()
		c.fr.release()
		if c.cr != nil {
			c.cr.release()
		}
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
	abandoned := cl != nil && cl.abandoned
	c.mu.Unlock()
	if cl == nil {
		return protocolErrorf("%s for id %d, which has no request waiting", h.kind, h.id)
	}
	if cl.asmKind == 0 {
		cl.asmKind = h.kind
		cl.asmHeader = h.flags&flagHeader != 0
		cl.asm.discard = abandoned // nobody will read it: count it, keep nothing
	} else if cl.asmKind != h.kind {
		return protocolErrorf("%s frame continues a %s for id %d", h.kind, cl.asmKind, h.id)
	}
	done, err := cl.asm.addWithin(h.kind, p, c.cfg.MaxMessageSize, &c.reserve)
	if err != nil || !done {
		return err
	}
	body, discarded := cl.asm.buf, cl.asm.discard
	buf := body // the whole buffer, header and all
	cl.asm = assembly{}

	var (
		callErr error
		md      Metadata
		details []byte
	)
	if cl.asmHeader && !discarded {
		hdr, rest, err := parseHeaderOf(body, nil, h.kind == kindError) // key 2, details, is an ERROR's only
		switch {
		case err != nil && h.kind == kindError:
			return &ProtocolError{Reason: "ERROR with a bad header", Err: err} // the protocol's own message
		case err != nil:
			body, callErr = nil, &ProtocolError{Reason: "RESPONSE with a bad header", Err: err}
		case len(rest) == 0:
			if h.kind == kindError {
				return protocolErrorf("ERROR with a header and no body")
			}
			body, callErr = nil, protocolErrorf("RESPONSE with a header and no reply")
		default:
			body, md, details = rest, hdr.md, hdr.details
		}
	}
	switch {
	case discarded || callErr != nil:
		body = nil
	case h.kind == kindError:
		rerr, err := parseErrorBody(body)
		if err != nil {
			return err
		}
		if md != nil {
			errMD := md // its own variable, so only errors with metadata allocate one
			rerr.md = &errMD
		}
		if details != nil {
			d := slices.Clone(details) // not the whole body's buffer
			rerr.details = &d
		}
		body, callErr = nil, rerr
	default:
		if _, err := msgpackcheck.Check(body); err != nil {
			body, callErr = nil, &ProtocolError{Reason: "RESPONSE body is not well-formed msgpack", Err: err}
		}
	}
	c.mu.Lock()
	mine := c.pending[h.id] == cl // false if the connection failed meanwhile
	if mine {
		delete(c.pending, h.id)
		if cl.abandoned {
			c.abandoned--
		}
	}
	wanted := mine && !cl.abandoned
	c.mu.Unlock()
	if wanted {
		if body == nil {
			buf = nil
		}
		cl.finish(body, buf, md, callErr)
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
		k := min(int(n), len(c.notifySizes))
		for _, size := range c.notifySizes[:k] {
			c.notifyOut -= size
		}
		c.notifySizes = c.notifySizes[k:]
		if c.creditWait != nil {
			close(c.creditWait)
			c.creditWait = nil
		}
	}
	if c.drained != nil {
		select { // wake a Shutdown waiting for its notifications to be handled
		case c.drained <- struct{}{}:
		default:
		}
	}
	return nil
}
