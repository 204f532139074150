package bokbok

import (
	"errors"
	"fmt"
	"io"
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
	if [6]byte(p[:6]) != preambleMagic {
		return protocolErrorf("peer is not speaking bokbok (first bytes % x)", p)
	}
	if p[6] != protocolVersion {
		return fmt.Errorf("%w: peer speaks version %d, this side speaks version %d", ErrVersion, p[6], protocolVersion)
	}
	if p[7] != mode {
		return fmt.Errorf("%w: the peer wants %s connection, this side wants %s one", ErrMode, withArticle(modeName(p[7])), withArticle(modeName(mode)))
	}
	return nil
}

// readPreamble reads the peer's preamble and checks it against our mode.
func readPreamble(r io.Reader, mode byte) error {
	var pre [preambleSize]byte
	if _, err := io.ReadFull(r, pre[:]); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return &ProtocolError{Reason: "truncated preamble", Err: err}
		}
		if errors.Is(err, io.EOF) {
			return &ProtocolError{Reason: "the peer closed the connection before sending its preamble", Err: err}
		}
		return fmt.Errorf("bokbok: reading preamble: %w", err)
	}
	return checkPreamble(pre[:], mode)
}
