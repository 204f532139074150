package bokbok

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
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

func withArticle(s string) string {
	if s != "" && strings.ContainsRune("aeiou", rune(s[0])) {
		return "an " + s
	}
	return "a " + s
}

// checkPreamble validates the peer's preamble against our mode.
func checkPreamble(p []byte, mode byte) error {
	if err := checkMagic(p); err != nil {
		return err
	}
	if p[6] != protocolVersion {
		return fmt.Errorf("%w: peer speaks version %d, this side speaks version %d", ErrVersion, p[6], protocolVersion)
	}
	if p[7] != mode {
		return fmt.Errorf("%w: the peer wants %s connection, this side wants %s one", ErrMode, withArticle(modeName(p[7])), withArticle(modeName(mode)))
	}
	return nil
}

// checkMagic fails if p, the first bytes the peer sent, cannot be the
// start of a preamble.
func checkMagic(p []byte) error {
	m := preambleMagic[:min(len(p), len(preambleMagic))]
	if string(p[:len(m)]) != string(m) {
		return protocolErrorf("peer is not speaking bokbok (first bytes % x)", p)
	}
	return nil
}

// readPreamble reads the peer's preamble and checks it against our mode.
// It checks the bytes as they arrive, so a peer that is not speaking
// bokbok is found out by its first wrong byte rather than by the handshake
// timeout, and it never reads past the preamble.
func readPreamble(r io.Reader, mode byte) error {
	var pre [preambleSize]byte
	n := 0
	for n < preambleSize {
		m, err := r.Read(pre[n:])
		n += m
		if perr := checkMagic(pre[:n]); perr != nil {
			return perr
		}
		if err == nil {
			continue
		}
		switch {
		case errors.Is(err, io.EOF) && n > 0:
			return &ProtocolError{Reason: "truncated preamble", Err: io.ErrUnexpectedEOF}
		case errors.Is(err, io.EOF):
			return &ProtocolError{Reason: "the peer closed the connection before sending its preamble", Err: err}
		case errors.Is(err, os.ErrDeadlineExceeded):
			return &noPreambleError{got: n, err: err}
		}
		return fmt.Errorf("bokbok: reading preamble: %w", err)
	}
	return checkPreamble(pre[:], mode)
}

// noPreambleError is a handshake that timed out before the peer's whole
// preamble came; the handshake reports it as ErrHandshakeTimeout, saying
// how much came.
type noPreambleError struct {
	got int // bytes of the preamble received
	err error
}

func (e *noPreambleError) Error() string { return e.hint() + ": " + e.err.Error() }
func (e *noPreambleError) Unwrap() error { return e.err }

func (e *noPreambleError) hint() string {
	if e.got == 0 {
		return "the peer sent nothing (is it a bokbok server or client?)"
	}
	return fmt.Sprintf("the peer sent %d of the %d bytes of its preamble", e.got, preambleSize)
}
