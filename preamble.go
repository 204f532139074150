package bokbok

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"
)

// The preamble is the first 8 bytes each side sends (PROTOCOL.md,
// "Preamble"): the magic "bokbok", the protocol version, and the security
// mode the sender insists on. Both sides send theirs at once and check the
// peer's, so a mismatch is reported on both sides with the same words.
const (
	preambleSize    = 8
	protocolVersion = 1
	modeInsecure    = 0
	modeSecure      = 1
)

// mismatchGrace is how long a side that rejected the peer's opening still
// tries to send its own preamble.
const mismatchGrace = time.Second

var preambleMagic = [6]byte{'b', 'o', 'k', 'b', 'o', 'k'}

func appendPreamble(b []byte, mode byte) []byte {
	b = append(b, preambleMagic[:]...)
	return append(b, protocolVersion, mode)
}

func modeName(m byte) string {
	switch m {
	case modeInsecure:
		return "insecure"
	case modeSecure:
		return "secure"
	}
	return fmt.Sprintf("unknown mode %d", m)
}

// checkPreamble validates the peer's preamble against our mode.
func checkPreamble(p []byte, mode byte) error {
	if [6]byte(p[:6]) != preambleMagic {
		return protocolErrorf("peer is not speaking bokbok (first bytes % x)", p)
	}
	if p[6] != protocolVersion {
		return fmt.Errorf("%w: peer speaks version %d, this side speaks version %d", ErrVersion, p[6], protocolVersion)
	}
	if p[7] != mode {
		return fmt.Errorf("%w: peer wants a %s connection, this side wants a %s one", ErrMode, modeName(p[7]), modeName(mode))
	}
	return nil
}

// handshake sends our preamble and SETTINGS and reads the peer's, within
// the handshake timeout and ctx. Writing happens on a short-lived goroutine
// so that two peers writing at once over an unbuffered pipe cannot block
// each other; handshake waits for it before returning.
func (c *Conn) handshake(ctx context.Context) (err error) {
	nc := c.nc
	deadline := time.Now().Add(c.cfg.HandshakeTimeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	if err := nc.SetDeadline(deadline); err != nil {
		return err
	}
	stop := context.AfterFunc(ctx, func() { nc.SetDeadline(time.Unix(1, 0)) })
	defer func() {
		if !stop() || ctx.Err() != nil {
			err = ctx.Err() // cancellation, not the deadline we forced, is the reason
		} else if errors.Is(err, os.ErrDeadlineExceeded) {
			err = fmt.Errorf("%w after %v", ErrHandshakeTimeout, c.cfg.HandshakeTimeout)
		}
		if err == nil {
			err = nc.SetDeadline(time.Time{})
		}
		var perr *ProtocolError
		if err != nil && !errors.As(err, &perr) && !errors.Is(err, ErrVersion) && !errors.Is(err, ErrMode) &&
			!errors.Is(err, ErrHandshakeTimeout) && err != ctx.Err() {
			err = fmt.Errorf("bokbok: handshake: %w", err) // a network error: say where it happened
		}
	}()

	mine := settings{
		MaxMessageSize:        uint64(c.cfg.MaxMessageSize),
		NotifyWindow:          uint64(c.cfg.NotifyWindow),
		MaxConcurrentHandlers: uint64(c.cfg.MaxConcurrentHandlers),
	}
	p := mine.encode()
	out := appendPreamble(nil, modeInsecure)
	out = appendFrameHeader(out, kindSettings, 0, len(p), 0)
	out = append(out, p...)
	wrote := make(chan error, 1)
	go func() {
		_, err := nc.Write(out)
		wrote <- err
	}()
	rerr := c.readOpening()
	if rerr != nil {
		// Give our preamble a moment to go out, so the peer can report the
		// mismatch too, but no longer than the handshake had left.
		if grace := time.Now().Add(mismatchGrace); grace.Before(deadline) {
			nc.SetWriteDeadline(grace)
		}
	}
	werr := <-wrote
	if rerr != nil {
		return rerr
	}
	return werr
}

// readOpening reads and checks the peer's preamble and SETTINGS.
func (c *Conn) readOpening() error {
	var pre [preambleSize]byte
	if _, err := io.ReadFull(c.br, pre[:]); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return &ProtocolError{Reason: "truncated preamble", Err: err}
		}
		return fmt.Errorf("bokbok: reading preamble: %w", err)
	}
	if err := checkPreamble(pre[:], modeInsecure); err != nil {
		return err
	}
	h, p, err := c.fr.next()
	if err != nil {
		return err
	}
	if h.kind != kindSettings {
		return protocolErrorf("first frame is %s, want SETTINGS", h.kind)
	}
	c.peer, err = parseSettings(p)
	return err
}
