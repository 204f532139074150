package bokbok

import (
	"context"
	"fmt"
	"io"
	"time"
)

// The opening's waiting, kept cheap for a server facing many peers (see
// handshake.go): a peer's bytes are awaited in the read buffer without
// reading or allocating, a handshake slot is taken only for the costly
// work, and writes go through their own goroutine so that two peers
// writing at once over an unbuffered pipe cannot block each other.

// awaitFirstFrame waits, within the read deadline, until the peer's first
// frame is in the read buffer, or as much of it as the buffer holds,
// without reading it or allocating anything: a peer that sends nothing,
// or only part of its frame, costs no more than the buffer it already
// has. A valid header of another kind than SETTINGS is refused here,
// before its payload is waited for; other errors (a bad header, the
// stream's end, the deadline) are left to the read that follows, which
// meets them again and reports them in its words.
func (c *Conn) awaitFirstFrame() error {
	hdr, err := c.br.Peek(frameHeaderSize)
	if err != nil {
		return nil
	}
	h, err := parseFrameHeader(hdr)
	if err != nil {
		return nil
	}
	if h.kind != kindSettings {
		return protocolErrorf("first frame is %s, want SETTINGS", h.kind)
	}
	c.br.Peek(min(frameHeaderSize+int(h.length), c.br.Size()))
	return nil
}

// awaitHandshakeMsg waits, within the read deadline, until a whole
// length-prefixed handshake message is in the read buffer, without
// reading it or allocating anything. A length above maxHandshakeMsg stops
// the wait at once; errors are left to the read that follows.
func (c *Conn) awaitHandshakeMsg() {
	hdr, err := c.br.Peek(2)
	if err != nil {
		return
	}
	n := int(hdr[0])<<8 | int(hdr[1])
	if n > maxHandshakeMsg {
		return
	}
	c.br.Peek(2 + n) // maxHandshakeMsg+2 fits the read buffer
}

// slotGate lets a server's handshake wait for one of its handshake slots
// before the costly work, within the handshake's deadline and context.
type slotGate struct {
	slots       chan struct{}
	quit        <-chan struct{}
	ctx         context.Context
	deadline    time.Time
	ctxDeadline bool          // the deadline is ctx's, not the handshake timeout's
	timeout     time.Duration // the handshake timeout, for the error
}

// take waits for a slot and returns the function that gives it back,
// which may be called more than once. A nil gate has slots enough for all.
func (g *slotGate) take() (release func(), err error) {
	if g == nil {
		return func() {}, nil
	}
	held := true
	release = func() {
		if held {
			held = false
			<-g.slots
		}
	}
	select {
	case g.slots <- struct{}{}:
		return release, nil
	default:
	}
	t := time.NewTimer(time.Until(g.deadline))
	defer t.Stop()
	select {
	case g.slots <- struct{}{}:
		return release, nil
	case <-t.C:
		if g.ctxDeadline {
			return nil, context.DeadlineExceeded
		}
		return nil, fmt.Errorf("%w: no handshake slot free within %v of accept (Server.MaxHandshakes)", ErrHandshakeTimeout, g.timeout)
	case <-g.ctx.Done():
		return nil, g.ctx.Err()
	case <-g.quit:
		return nil, ErrServerClosed
	}
}

// asyncWriter performs a handshake's writes, in order, on its own
// goroutine. finish waits for them.
type asyncWriter struct {
	ch   chan []byte
	done chan error
}

func startAsyncWriter(w io.Writer) *asyncWriter {
	aw := &asyncWriter{ch: make(chan []byte, 8), done: make(chan error, 1)}
	go func() {
		var err error
		for b := range aw.ch {
			if err == nil {
				_, err = w.Write(b)
			}
		}
		aw.done <- err
	}()
	return aw
}

// Write queues a copy of b. Errors surface in finish.
func (aw *asyncWriter) Write(b []byte) (int, error) {
	aw.ch <- append([]byte(nil), b...)
	return len(b), nil
}

func (aw *asyncWriter) finish() error {
	close(aw.ch)
	return <-aw.done
}
