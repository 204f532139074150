package bokbok

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"
)

// The opening of a connection (PROTOCOL.md, "Preamble", "Settings" and
// "Secure handshake"): both sides send their preamble at once; in insecure
// mode each then sends SETTINGS; in secure mode the client sends Noise
// message 1, the server answers with message 2 (or a refusal, or a bare
// close if message 1 is malformed), and from then on every byte travels in
// records, starting with each side's SETTINGS, alone in its first record.
// The client's first record is the key confirmation: the server counts the
// client as authenticated only once it has opened it and found exactly
// SETTINGS in it.
//
// A server waits for the peer's preamble and first message (SETTINGS, or
// Noise message 1) in its read buffer before it does anything that costs
// more than that buffer, and only then takes one of its handshake slots
// (Server.MaxHandshakes) for the costly work, so a silent or slow peer
// holds no slot. What it writes, and when, does not change.

// ErrAuth reports a failed authentication in secure mode: an unknown user
// or a wrong key (the two look the same from outside, by design), or a
// server that could not prove it knows the key.
var ErrAuth = errors.New("bokbok: authentication failed")

// opening says how a connection opens.
type opening struct {
	server    bool
	userKeys  func(user string) []Key // server: the keys of users; nil = insecure
	secret    *Key                    // server, secure: keys the dummy keys of unknown users
	ephemeral *[32]byte               // tests: a fixed ephemeral private key

	// slots, if set (a server), bounds the handshakes doing their costly
	// work (the key lookup and Noise, or parsing SETTINGS) at once: a
	// handshake holds a token in it for that work only, never while it
	// waits for the peer.
	slots chan struct{}
	quit  <-chan struct{} // with slots: closed when the server stops; ends a wait for a slot

	afterHandshake func() // if set, called when the handshake has ended, however it ended
}

func (c *Conn) secure(op opening) bool {
	if op.server {
		return op.userKeys != nil
	}
	return c.cfg.Key != nil
}

// Handshake messages are a 2-byte length and a body; a length of 0 is the
// server's refusal. Bodies stay well under this bound.
const maxHandshakeMsg = 512

// handshakePayload is the plaintext of both Noise payloads: one flags byte,
// no flags defined yet.
var handshakePayload = []byte{0}

// handshake runs the opening within the handshake timeout and ctx.
// Writes go through a short-lived goroutine (asyncWriter), so two peers
// that write at once over an unbuffered pipe cannot block each other;
// handshake waits for it before returning.
func (c *Conn) handshake(ctx context.Context, op opening) (err error) {
	nc := c.nc
	deadline := c.epoch.Add(c.cfg.HandshakeTimeout) // from accept, including any wait for a handshake slot
	ctxDeadline := false
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline, ctxDeadline = d, true
	}
	if err := nc.SetDeadline(deadline); err != nil {
		return fmt.Errorf("bokbok: handshake: %w", err)
	}
	stop := context.AfterFunc(ctx, func() { nc.SetDeadline(time.Unix(1, 0)) })
	defer func() {
		if !stop() || ctx.Err() != nil {
			err = ctx.Err() // cancellation, not the deadline we forced, is the reason
		} else if errors.Is(err, os.ErrDeadlineExceeded) && ctxDeadline {
			err = context.DeadlineExceeded // ctx's deadline, reached before its own timer fired
		} else if np := (*noPreambleError)(nil); errors.As(err, &np) {
			err = fmt.Errorf("%w after %v: %s", ErrHandshakeTimeout, c.cfg.HandshakeTimeout, np.hint())
		} else if errors.Is(err, os.ErrDeadlineExceeded) {
			err = fmt.Errorf("%w after %v", ErrHandshakeTimeout, c.cfg.HandshakeTimeout)
		}
		if err == nil {
			err = nc.SetDeadline(time.Time{})
		}
		if err != nil && !isBokbokError(err) && err != ctx.Err() && err != context.DeadlineExceeded {
			err = fmt.Errorf("bokbok: handshake: %w", err) // a network error: say where it happened
		}
	}()

	var g *slotGate
	if op.slots != nil {
		g = &slotGate{slots: op.slots, quit: op.quit, ctx: ctx, deadline: deadline, ctxDeadline: ctxDeadline, timeout: c.cfg.HandshakeTimeout}
	}
	aw := startAsyncWriter(nc)
	if c.secure(op) {
		if op.server {
			err = c.openSecureServer(aw, op, g)
		} else {
			err = c.openSecureClient(aw, op)
		}
	} else {
		err = c.openInsecure(aw, g)
	}
	if err != nil {
		// Give what we wrote (our preamble, a refusal) a moment to go out,
		// so the peer can report the failure too, but no longer than the
		// handshake had left.
		if grace := time.Now().Add(mismatchGrace); grace.Before(deadline) {
			nc.SetWriteDeadline(grace)
		}
	}
	if werr := aw.finish(); err == nil {
		err = werr
	}
	if err == nil && c.rw != nil {
		c.rw.w = nc // from now on the writer goroutine writes records directly
	}
	return err
}

// isBokbokError reports whether err already says what went wrong in
// bokbok's words.
func isBokbokError(err error) bool {
	var perr *ProtocolError
	return errors.As(err, &perr) || errors.Is(err, ErrVersion) || errors.Is(err, ErrMode) ||
		errors.Is(err, ErrHandshakeTimeout) || errors.Is(err, ErrAuth) || errors.Is(err, ErrTruncated)
}

// settingsFrame encodes our SETTINGS frame.
func (c *Conn) settingsFrame() []byte {
	p := settings{
		MaxMessageSize:        uint64(c.cfg.MaxMessageSize),
		NotifyWindow:          uint64(c.cfg.NotifyWindow),
		MaxConcurrentHandlers: uint64(c.cfg.MaxConcurrentHandlers),
		NotifyBytes:           uint64(c.cfg.NotifyBytes),
		Headers:               headersVersion,
	}.encode()
	return append(appendFrameHeader(nil, kindSettings, 0, len(p), 0), p...)
}

// readSettings reads the peer's first frame, which must be SETTINGS.
func (c *Conn) readSettings() error {
	p, err := c.readSettingsFrame()
	if err != nil {
		return err
	}
	c.peer, err = parseSettings(p)
	return err
}

// readSettingsFrame reads the peer's first frame, which must be SETTINGS,
// and returns its payload (valid until the next frame is read).
func (c *Conn) readSettingsFrame() ([]byte, error) {
	h, p, err := c.fr.next()
	if err != nil {
		if errors.Is(err, io.EOF) {
			return nil, &ProtocolError{Reason: "stream ended before SETTINGS", Err: io.ErrUnexpectedEOF}
		}
		return nil, err
	}
	if h.kind != kindSettings {
		return nil, protocolErrorf("first frame is %s, want SETTINGS", h.kind)
	}
	return p, nil
}

// openInsecure opens an insecure connection. g, if not nil (a server),
// is the gate to the costly work: the peer's preamble and SETTINGS frame
// are waited for first, then parsing them takes a slot.
func (c *Conn) openInsecure(aw *asyncWriter, g *slotGate) error {
	aw.Write(append(appendPreamble(nil, modeInsecure), c.settingsFrame()...))
	if err := readPreamble(c.br, modeInsecure); err != nil {
		return err
	}
	if g == nil {
		return c.readSettings()
	}
	if err := c.awaitFirstFrame(); err != nil {
		return err
	}
	p, err := c.readSettingsFrame()
	if err != nil {
		return err
	}
	release, err := g.take()
	if err != nil {
		return err
	}
	defer release()
	c.peer, err = parseSettings(p)
	return err
}

// securePrologue binds the preamble, the realm and the user name into the
// handshake: both sides must agree on all of them.
func securePrologue(realm, user string) []byte {
	p := appendPreamble(nil, modeSecure)
	p = append(p, byte(len(realm)))
	p = append(p, realm...)
	p = append(p, byte(len(user)))
	return append(p, user...)
}

// startRecords switches the connection's frame stream to records.
func (c *Conn) startRecords(w io.Writer, send, recv Key, sendDir, recvDir byte) {
	c.rw = newRecordWriter(w, send, sendDir)
	c.rr = newRecordReader(c.br, recv, recvDir)
	c.fr.r = c.rr
}

func (c *Conn) openSecureClient(aw *asyncWriter, op opening) error {
	user, realm := c.cfg.User, c.cfg.Realm
	ns, err := newNoiseState(securePrologue(realm, user), op.ephemeral)
	if err != nil {
		return err
	}
	defer ns.wipe()
	m1 := ns.writeMessage1(c.cfg.Key, handshakePayload)
	out := appendPreamble(nil, modeSecure)
	out = appendHandshakeMsg(out, append(append([]byte{byte(len(user))}, user...), m1...))
	aw.Write(out)

	if err := readPreamble(c.br, modeSecure); err != nil {
		return err
	}
	m2, err := readHandshakeMsg(c.br, "message 2")
	if err != nil {
		return err
	}
	if len(m2) == 0 {
		return fmt.Errorf("%w: the server refused user %q in realm %q (unknown user or wrong key)", ErrAuth, user, realm)
	}
	if p, err := ns.readMessage2(m2); err != nil {
		return fmt.Errorf("%w: the server did not prove it knows the key of user %q (%v)", ErrAuth, user, err)
	} else if len(p) != len(handshakePayload) {
		return protocolErrorf("handshake message 2 payload of %d bytes, want %d", len(p), len(handshakePayload))
	}
	toServer, toClient := ns.split()
	c.startRecords(aw, toServer, toClient, dirClientToServer, dirServerToClient)
	wipeKeys(&toServer, &toClient)
	c.user = user
	// Our first record, carrying SETTINGS, is the key confirmation.
	if err := c.writeFirstRecord(); err != nil {
		return err
	}
	return c.readFirstRecord()
}

// openSecureServer opens a secure connection as the server. g, if not
// nil, is the gate to the costly work: the peer's preamble and message 1
// are waited for first, then the key lookup and Noise take a slot, which
// is given back before the wait for the client's key confirmation.
func (c *Conn) openSecureServer(aw *asyncWriter, op opening, g *slotGate) error {
	aw.Write(appendPreamble(nil, modeSecure))
	if err := readPreamble(c.br, modeSecure); err != nil {
		return err
	}
	c.awaitHandshakeMsg()
	body, err := readHandshakeMsg(c.br, "message 1")
	if err != nil {
		return err
	}
	user, m1, err := splitMessage1(body)
	if err != nil {
		return err // malformed: closed without an answer, before any user is looked up
	}
	release, err := g.take()
	if err != nil {
		return err
	}
	defer release()
	// Every user, known or not, has exactly MaxUserKeys candidate keys
	// tried, all of them, so an unknown user, a wrong key and a right one
	// in either slot cost the same work (PROTOCOL.md, "Candidate keys").
	keys, own := candidateKeys(op.secret, user, op.userKeys(user))
	ns, err := newNoiseState(securePrologue(c.cfg.Realm, user), op.ephemeral)
	if err != nil {
		return err
	}
	defer ns.wipe()
	p, err := ns.readMessage1Candidates(&keys, own, m1)
	clear(keys[:])
	if err == nil && len(p) != len(handshakePayload) {
		err = errors.New("message 1 payload of the wrong size")
	}
	var m2 []byte
	if err == nil {
		m2, err = ns.writeMessage2(handshakePayload)
	}
	if err != nil {
		// Every well-formed message 1 that does not lead to message 2 gets
		// the same refusal, whatever the reason.
		aw.Write(appendHandshakeMsg(nil, nil))
		return fmt.Errorf("%w: user %q in realm %q (unknown user or wrong key)", ErrAuth, user, c.cfg.Realm)
	}
	toServer, toClient := ns.split()
	aw.Write(appendHandshakeMsg(nil, m2))
	c.startRecords(aw, toClient, toServer, dirServerToClient, dirClientToServer)
	wipeKeys(&toServer, &toClient)
	if err := c.writeFirstRecord(); err != nil {
		return err
	}
	release() // the costly work is done; waiting for the client is not
	// The client's first record proves it completed the handshake: until
	// it opens, message 1 may have been a replay.
	if err := c.readFirstRecord(); err != nil {
		return fmt.Errorf("%w: user %q did not confirm the key: %w", ErrAuth, user, err)
	}
	c.user = user
	return nil
}

// Each side's first record holds exactly its SETTINGS frame, nothing more
// and nothing less: it is sealed alone, and on receipt the first record is
// checked on its own, before any other record is read.

// writeFirstRecord seals our SETTINGS frame, alone, as our first record and
// sends it.
func (c *Conn) writeFirstRecord() error {
	if _, err := c.rw.Write(c.settingsFrame()); err != nil {
		return err
	}
	return c.rw.Flush()
}

// readFirstRecord opens the peer's first record, checks that its content
// is one whole SETTINGS frame and nothing else, and parses the settings.
// It never reads a second record.
func (c *Conn) readFirstRecord() error {
	content, err := c.rr.nextRecord()
	if err == io.EOF {
		return &ProtocolError{Reason: "first record is CLOSE, want SETTINGS", Err: io.ErrUnexpectedEOF}
	}
	if err != nil {
		return err
	}
	if len(content) < frameHeaderSize {
		return protocolErrorf("first record holds %d bytes, less than a frame header (SETTINGS must come whole in the first record)", len(content))
	}
	h, err := parseFrameHeader(content)
	if err != nil {
		return err
	}
	if h.kind != kindSettings {
		return protocolErrorf("first frame is %s, want SETTINGS", h.kind)
	}
	if n := frameHeaderSize + int(h.length); len(content) != n {
		return protocolErrorf("first record holds %d bytes, want exactly its %d-byte SETTINGS frame", len(content), n)
	}
	c.peer, err = parseSettings(content[frameHeaderSize:])
	return err
}

func appendHandshakeMsg(out, body []byte) []byte {
	out = append(out, byte(len(body)>>8), byte(len(body)))
	return append(out, body...)
}

// readHandshakeMsg reads a length-prefixed handshake message; the length is
// checked before anything is allocated.
func readHandshakeMsg(r io.Reader, what string) ([]byte, error) {
	var hdr [2]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, handshakeReadError(what, err)
	}
	n := int(hdr[0])<<8 | int(hdr[1])
	if n > maxHandshakeMsg {
		return nil, protocolErrorf("handshake %s of %d bytes, more than %d", what, n, maxHandshakeMsg)
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(r, body); err != nil {
		return nil, handshakeReadError(what, err)
	}
	return body, nil
}

func handshakeReadError(what string, err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return &ProtocolError{Reason: "stream ended in handshake " + what, Err: io.ErrUnexpectedEOF}
	}
	return err
}

// splitMessage1 parses message 1's body: user name length, user name,
// Noise message. A body is malformed if it is empty, names a user of 0
// bytes, or is too short to hold the user name, an ephemeral key and a
// tag; the server closes without an answer then. What the Noise message
// holds (its payload's length included) is checked by decrypting it.
func splitMessage1(body []byte) (user string, noiseMsg []byte, err error) {
	switch {
	case len(body) == 0:
		return "", nil, protocolErrorf("handshake message 1 of 0 bytes is malformed")
	case body[0] == 0:
		return "", nil, protocolErrorf("handshake message 1 of %d bytes is malformed: user name of 0 bytes", len(body))
	case len(body) < 1+int(body[0])+noiseDHLen+noiseTagLen:
		return "", nil, protocolErrorf("handshake message 1 of %d bytes is malformed: less than the %d of a %d-byte user name, an ephemeral key and a tag",
			len(body), 1+int(body[0])+noiseDHLen+noiseTagLen, body[0])
	}
	n := int(body[0])
	return string(body[1 : 1+n]), body[1+n:], nil
}
