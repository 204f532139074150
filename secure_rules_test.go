package bokbok

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/crypto/curve25519"
	"golang.org/x/crypto/poly1305" // deprecated for new designs, but the record layout is Poly1305 itself
	"golang.org/x/crypto/salsa20"
)

// The precise secure-mode rules of PROTOCOL.md, each tested against peers
// that write the bytes by hand:
//
//   - §15 "Answering message 1": which message 1 gets a bare close, which
//     the refusal 00 00, which message 2 (TestSecureRulesMessage1Answers,
//     TestSecureRulesMessage1Reflected, TestSecureRulesClientSeesAnswers);
//   - §16 "Record layout": length, then the Poly1305 tag, then the
//     XSalsa20 ciphertext of type and content (TestSecureRulesRecordLayout,
//     TestSecureRulesRecordLayoutOnTheWire);
//   - §16 "The first record": exactly the SETTINGS frame, sent so by Go
//     and required of the peer (TestSecureRulesFirstRecordSent,
//     TestSecureRulesFirstRecordToServer, TestSecureRulesFirstRecordToClient,
//     FuzzAtkFirstRecord);
//   - §18: the vectors of those rules (TestSecureRulesVectors, and the
//     dumps checked by TestProtocolDocExamples).
//
// Helpers are prefixed "rules".

// --- sealing by hand, from the primitives -------------------------------------

// rulesNonce is a record's nonce as §16 spells it out.
func rulesNonce(n uint64, dir byte) [24]byte {
	var nonce [24]byte
	binary.BigEndian.PutUint64(nonce[:8], n)
	nonce[8] = dir
	return nonce
}

// rulesKeystream returns the first size bytes of XSalsa20's keystream for
// record n of direction dir.
func rulesKeystream(key Key, n uint64, dir byte, size int) []byte {
	nonce := rulesNonce(n, dir)
	ks := make([]byte, size)
	salsa20.XORKeyStream(ks, ks, nonce[:], (*[32]byte)(&key))
	return ks
}

// rulesSeal builds record n of direction dir holding plain (type and
// content) byte by byte as §16 lays it out: the length, the Poly1305 tag
// keyed with the first 32 keystream bytes, then plain XORed with the
// keystream from byte 32 on. tagLast puts the tag after the ciphertext
// instead, as IETF AEADs do: a plausible wrong guess.
func rulesSeal(key Key, n uint64, dir byte, plain []byte, tagLast bool) []byte {
	ks := rulesKeystream(key, n, dir, 32+len(plain))
	ct := make([]byte, len(plain))
	for i := range plain {
		ct[i] = plain[i] ^ ks[32+i]
	}
	var tag [16]byte
	poly1305.Sum(&tag, ct, (*[32]byte)(ks[:32]))
	rec := binary.BigEndian.AppendUint32(nil, uint32(len(tag)+len(ct)))
	if tagLast {
		return append(append(rec, ct...), tag[:]...)
	}
	return append(append(rec, tag[:]...), ct...)
}

// rulesOpen opens one record (length included) by hand, as §16 lays it
// out, and returns its plaintext (type and content).
func rulesOpen(t testing.TB, key Key, n uint64, dir byte, rec []byte) []byte {
	t.Helper()
	require.GreaterOrEqual(t, len(rec), 4+17)
	require.EqualValues(t, len(rec)-4, binary.BigEndian.Uint32(rec), "the length counts tag and ciphertext")
	tag, ct := rec[4:20], rec[20:]
	ks := rulesKeystream(key, n, dir, 32+len(ct))
	require.True(t, poly1305.Verify((*[16]byte)(tag), ct, (*[32]byte)(ks[:32])), "record %d: the tag at bytes 4..19 does not verify", n)
	plain := make([]byte, len(ct))
	for i := range ct {
		plain[i] = ct[i] ^ ks[32+i]
	}
	return plain
}

// rulesReadRecord reads one whole record (length included) from br.
func rulesReadRecord(t testing.TB, br *bufio.Reader) []byte {
	t.Helper()
	hdr := make([]byte, 4)
	_, err := io.ReadFull(br, hdr)
	require.NoError(t, err, "a record's length")
	n := binary.BigEndian.Uint32(hdr)
	require.LessOrEqual(t, n, uint32(maxSealedRecord))
	rec := append(hdr, make([]byte, n)...)
	_, err = io.ReadFull(br, rec[4:])
	require.NoError(t, err, "a record's body")
	return rec
}

// rulesDataRecord is DATA holding content, as plaintext.
func rulesDataRecord(content ...[]byte) []byte {
	return append([]byte{recordData}, bytes.Join(content, nil)...)
}

// --- raw peers -----------------------------------------------------------------

// rulesConnect opens a TCP connection to srv, which serves it with
// ServeConn, and returns the client's end and ServeConn's result.
func rulesConnect(t *testing.T, srv *Server) (*net.TCPConn, <-chan atkServed) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		nc, _ := ln.Accept()
		accepted <- nc
	}()
	nc, err := net.Dial("tcp", ln.Addr().String())
	require.NoError(t, err)
	t.Cleanup(func() { nc.Close() })
	s := atkRecv(t, accepted, "Accept")
	require.NotNil(t, s)
	return nc.(*net.TCPConn), atkServeConn(srv, s)
}

// rulesClient is a client speaking secure mode by hand, up to the keys.
type rulesClient struct {
	nc                 net.Conn
	br                 *bufio.Reader
	toServer, toClient Key
}

// rulesHandshake runs the handshake by hand over nc (see
// atkRawHandshake); no record is read or sent.
func rulesHandshake(t testing.TB, nc net.Conn, key Key, user string) *rulesClient {
	t.Helper()
	c := &rulesClient{nc: nc}
	c.br, c.toServer, c.toClient = atkRawHandshake(t, nc, key, user)
	return c
}

// --- §15: answering message 1 ----------------------------------------------------

// rulesAnswer reads the server's answer to message 1 from br, after its
// preamble: "bare close" (the stream ends at once), "refusal" (00 00,
// then the stream ends) or "message 2" (a 49-byte message 2).
func rulesAnswer(t testing.TB, br *bufio.Reader) string {
	t.Helper()
	pre := make([]byte, preambleSize)
	_, err := io.ReadFull(br, pre)
	require.NoError(t, err, "the server's preamble")
	require.Equal(t, appendPreamble(nil, modeSecure), pre)
	var hdr [2]byte
	_, err = io.ReadFull(br, hdr[:])
	if errors.Is(err, io.EOF) {
		return "bare close"
	}
	require.NoError(t, err, "a partial answer")
	n := binary.BigEndian.Uint16(hdr[:])
	if n == 0 {
		_, err := br.ReadByte()
		require.ErrorIs(t, err, io.EOF, "the stream goes on after the refusal")
		return "refusal"
	}
	require.EqualValues(t, noiseDHLen+1+noiseTagLen, n, "message 2's length")
	_, err = io.ReadFull(br, make([]byte, n))
	require.NoError(t, err)
	return "message 2"
}

// TestSecureRulesMessage1Answers feeds a real server every kind of
// message 1 that PROTOCOL.md §15 "Answering message 1" enumerates, over
// TCP, and checks it answers each exactly as told: a malformed message 1
// gets a bare close (a protocol error, no user looked up, no wait), a
// well-formed one that does not authenticate gets the refusal (ErrAuth,
// after exactly one lookup), and only a good one gets message 2.
func TestSecureRulesMessage1Answers(t *testing.T) {
	alice := mustKey(t)
	srv, n := atkServer(map[string]Key{"alice": alice}, Config{HandshakeTimeout: 20 * time.Second})
	var lookups atomic.Int32
	lookup := srv.UserKey
	srv.UserKey = func(user string) (Key, bool) { lookups.Add(1); return lookup(user) }
	defer atkStopServer(srv)

	pre := appendPreamble(nil, modeSecure)
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	// msg1 is message 1 (length field and body) for user, made with key in
	// realm, carrying payload, with ePub (if set) sent as the ephemeral key.
	msg1 := func(key Key, user, realm string, payload []byte, ePub *[32]byte) []byte {
		ns, err := newNoiseState(securePrologue(realm, user), nil)
		require.NoError(t, err)
		if ePub != nil {
			ns.ePub = *ePub
		}
		body := append([]byte{byte(len(user))}, user...)
		return appendHandshakeMsg(nil, append(body, ns.writeMessage1(&key, payload)...))
	}
	flip := func(m []byte, off int) []byte {
		m = append([]byte(nil), m...)
		m[off] ^= 0x01
		return m
	}
	good := msg1(alice, "alice", atkRealm, handshakePayload, nil)
	eOff, ctOff := 2+1+len("alice"), 2+1+len("alice")+noiseDHLen // offsets in good
	var zero [32]byte
	low := atkLowOrderPoints(t)

	cases := []struct {
		name   string
		input  []byte
		eof    bool   // the client half-closes after its input
		answer string // what the server answers
		msg    string // in the server's protocol error, for a bare close
	}{
		// Bare close: the stream ends, or the framing is wrong.
		{"stream ends before the length", nil, true, "bare close", "stream ended in handshake message 1"},
		{"stream ends in the length", []byte{0}, true, "bare close", "stream ended in handshake message 1"},
		{"stream ends in the body", good[:len(good)-1], true, "bare close", "stream ended in handshake message 1"},
		{"length 513", []byte{0x02, 0x01}, false, "bare close", "more than 512"},
		{"length 0xffff", []byte{0xff, 0xff}, false, "bare close", "more than 512"},
		{"empty body", []byte{0, 0}, false, "bare close", "malformed"},
		{"user name of 0 bytes", cat([]byte{0, 50, 0}, make([]byte, 49)), false, "bare close", "user name of 0 bytes"},
		{"one byte short of user name, e and tag", cat(atkU16(1+5+noiseDHLen+noiseTagLen-1), good[2:2+1+5+noiseDHLen+noiseTagLen-1]), false, "bare close", "malformed: less than the 54"},
		{"user name longer than the body", cat(atkU16(len(good)-2), []byte{255}, good[3:]), false, "bare close", "malformed"},

		// The refusal: well formed, but no message 2.
		{"unknown user", msg1(alice, "mallory", atkRealm, handshakePayload, nil), false, "refusal", ""},
		{"wrong key", msg1(mustKey(t), "alice", atkRealm, handshakePayload, nil), false, "refusal", ""},
		{"wrong realm", msg1(alice, "alice", "elsewhere", handshakePayload, nil), false, "refusal", ""},
		{"a byte of e altered", flip(good, eOff+7), false, "refusal", ""},
		{"the flags byte altered in transit", flip(good, ctOff), false, "refusal", ""},
		{"a byte of the tag altered", flip(good, len(good)-1), false, "refusal", ""},
		{"just a tag, as short as well-formed goes", cat(atkU16(1+5+noiseDHLen+noiseTagLen), good[2:2+1+5+noiseDHLen], make([]byte, noiseTagLen)), false, "refusal", ""},
		{"empty payload, authentic", msg1(alice, "alice", atkRealm, nil, nil), false, "refusal", ""},
		{"2-byte payload, authentic", msg1(alice, "alice", atkRealm, []byte{0, 0}, nil), false, "refusal", ""},
		{"payload up to 512, authentic", msg1(alice, "alice", atkRealm, make([]byte, maxHandshakeMsg-1-5-noiseDHLen-noiseTagLen), nil), false, "refusal", ""},
		{"low-order e: zero", msg1(alice, "alice", atkRealm, handshakePayload, &zero), false, "refusal", ""},
		{"low-order e: another", msg1(alice, "alice", atkRealm, handshakePayload, &low[3]), false, "refusal", ""},

		// Message 2.
		{"good", good, false, "message 2", ""},
		{"flags byte 0xff, ignored", msg1(alice, "alice", atkRealm, []byte{0xff}, nil), false, "message 2", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := lookups.Load()
			nc, served := rulesConnect(t, srv)
			nc.SetDeadline(time.Now().Add(10 * time.Second))
			start := time.Now()
			_, err := nc.Write(cat(pre, tc.input))
			require.NoError(t, err)
			if tc.eof {
				require.NoError(t, nc.CloseWrite())
			}
			got := rulesAnswer(t, bufio.NewReader(nc))
			require.Equal(t, tc.answer, got)
			nc.Close() // a message 2 is never confirmed
			s := atkRecv(t, served, "ServeConn")
			require.Error(t, s.err)
			require.NotErrorIs(t, s.err, ErrHandshakeTimeout)
			require.Less(t, time.Since(start), 5*time.Second, "the server waited")
			switch tc.answer {
			case "bare close":
				require.ErrorIs(t, s.err, ErrProtocol)
				require.NotErrorIs(t, s.err, ErrAuth)
				require.ErrorContains(t, s.err, tc.msg)
				require.Equal(t, before, lookups.Load(), "a malformed message 1 looked a user up")
			case "refusal":
				require.ErrorIs(t, s.err, ErrAuth)
				require.NotErrorIs(t, s.err, ErrProtocol)
				require.Equal(t, before+1, lookups.Load(), "lookups")
			case "message 2":
				require.ErrorIs(t, s.err, ErrAuth, "the client never confirmed the key")
				require.Equal(t, before+1, lookups.Load(), "lookups")
			}
		})
	}
	require.Zero(t, n.opens.Load())
	require.Zero(t, n.handled.Load())
}

// TestSecureRulesMessage1Reflected sends a server its own ephemeral key in
// message 1 (possible only if the server's key is known: here it is
// fixed): refused like any other failure.
func TestSecureRulesMessage1Reflected(t *testing.T) {
	key := mustKey(t)
	var serverPub [32]byte
	pub, err := curve25519.X25519(vecRespEphemeral[:], curve25519.Basepoint)
	require.NoError(t, err)
	copy(serverPub[:], pub)
	a, b := net.Pipe()
	defer a.Close()
	done := rulesVectorServer(t, b, key, &vecRespEphemeral)
	_, hello := atkHello(t, key, vecUser, vecRealm, &serverPub)
	go a.Write(hello)
	require.Equal(t, "refusal", rulesAnswer(t, bufio.NewReader(a)))
	require.ErrorIs(t, atkRecv(t, done, "the server"), ErrAuth)
}

// rulesVectorServer runs the server side of the §18 vectors (realm
// example.org, every user's key is key, the given ephemeral key) over nc.
func rulesVectorServer(t testing.TB, nc net.Conn, key Key, ephemeral *[32]byte) <-chan error {
	defaults, err := (*Config)(nil).withDefaults()
	require.NoError(t, err)
	cfg := *defaults
	cfg.Realm, cfg.KeepaliveInterval = vecRealm, -1
	cfg.HandshakeTimeout = 10 * time.Second
	server := newConn(nc, &cfg, "")
	done := make(chan error, 1)
	go func() {
		err := server.open(context.Background(), opening{server: true, ephemeral: ephemeral, secret: &Key{},
			userKeys: func(string) []Key { return []Key{key} }}, nil)
		if err == nil {
			server.Close()
		}
		done <- err
	}()
	return done
}

// TestSecureRulesClientSeesAnswers: a client told 00 00 reports an
// authentication failure; a client whose server closes after its preamble
// reports a protocol error, never an authentication failure.
func TestSecureRulesClientSeesAnswers(t *testing.T) {
	alice := mustKey(t)
	for _, tc := range []struct {
		name   string
		answer []byte
		is     error
		isNot  error
	}{
		{"refusal", []byte{0, 0}, ErrAuth, ErrProtocol},
		{"bare close", nil, ErrProtocol, ErrAuth},
		{"bare close in message 2", []byte{0, 49, 1, 2, 3}, ErrProtocol, ErrAuth},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, b := net.Pipe()
			opened := atkNewConn(a, atkClientConfig(alice, "alice", nil))
			br := bufio.NewReader(b)
			_, err := io.ReadFull(br, make([]byte, preambleSize))
			require.NoError(t, err)
			_, err = readHandshakeMsg(br, "message 1")
			require.NoError(t, err)
			_, err = b.Write(append(appendPreamble(nil, modeSecure), tc.answer...))
			require.NoError(t, err)
			b.Close()
			r := atkRecv(t, opened, "NewConn")
			require.ErrorIs(t, r.err, tc.is)
			require.NotErrorIs(t, r.err, tc.isNot)
		})
	}
}

// --- §16: the record layout ---------------------------------------------------------

// TestSecureRulesRecordLayout builds records byte by byte from XSalsa20
// and Poly1305 as §16 lays them out (length, tag, ciphertext of type and
// content) and checks that the record writer produces exactly those bytes
// and the record reader opens them, in both directions and at counters
// that exercise every byte of the nonce; a record with the tag after the
// ciphertext does not open.
func TestSecureRulesRecordLayout(t *testing.T) {
	key := mustKey(t)
	contents := map[string][]byte{
		"CLOSE":          nil,
		"SETTINGS":       atkSettingsFrame(),
		"a full record":  bytes.Repeat([]byte{0xa5}, maxRecordContent),
		"one byte":       {7},
		"unaligned size": bytes.Repeat([]byte("0123456789"), 33),
	}
	for _, dir := range []byte{dirClientToServer, dirServerToClient} {
		for _, n := range []uint64{0, 1, 0x0102030405060708, maxRecordCounter - 1} {
			for name, content := range contents {
				var wire bytes.Buffer
				rw := newRecordWriter(&wire, key, dir)
				rw.n = n
				plain := []byte{recordClose}
				if content != nil {
					plain = rulesDataRecord(content)
					_, err := rw.Write(content)
					require.NoError(t, err)
					require.NoError(t, rw.Flush())
				} else {
					require.NoError(t, rw.close(time.Time{}))
				}
				byHand := rulesSeal(key, n, dir, plain, false)
				require.Equal(t, byHand, wire.Bytes(), "%s, dir %d, counter %d", name, dir, n)
				require.Equal(t, plain, rulesOpen(t, key, n, dir, wire.Bytes()))

				rr := newRecordReader(bytes.NewReader(byHand), key, dir)
				rr.n = n
				got, err := io.ReadAll(rr)
				if content == nil {
					require.NoError(t, err, "CLOSE is a clean end")
				} else {
					require.ErrorIs(t, err, ErrTruncated)
				}
				require.Equal(t, string(content), string(got))

				rr = newRecordReader(bytes.NewReader(rulesSeal(key, n, dir, plain, true)), key, dir)
				rr.n = n
				_, err = rr.Read(make([]byte, 1))
				require.ErrorIs(t, err, ErrProtocol, "tag last")
				require.ErrorContains(t, err, "failed authentication")
			}
		}
	}
}

// TestSecureRulesRecordLayoutOnTheWire: a client that seals and opens its
// records by hand, from the primitives and §16's layout alone, opens a
// connection with a real server and makes a call; the same client with
// the tag after the ciphertext is refused at its first record.
func TestSecureRulesRecordLayoutOnTheWire(t *testing.T) {
	alice := mustKey(t)
	t.Run("tag first", func(t *testing.T) {
		srv, n := atkServer(map[string]Key{"alice": alice}, Config{})
		defer atkStopServer(srv)
		nc, served := rulesConnect(t, srv)
		c := rulesHandshake(t, nc, alice, "alice")
		first := rulesOpen(t, c.toClient, 0, dirServerToClient, rulesReadRecord(t, c.br))
		require.Equal(t, byte(recordData), first[0])
		require.Equal(t, kindSettings, frameKind(first[1]))
		body, err := encodeRequestBody(0, []byte("by hand"))
		require.NoError(t, err)
		_, err = nc.Write(rulesCat(
			rulesSeal(c.toServer, 0, dirClientToServer, rulesDataRecord(atkSettingsFrame()), false),
			rulesSeal(c.toServer, 1, dirClientToServer, rulesDataRecord(frameBytes(kindRequest, 0, 1, body)), false)))
		require.NoError(t, err)
		s := atkRecv(t, served, "ServeConn")
		require.NoError(t, s.err)
		defer s.c.Close()
		reply := rulesOpen(t, c.toClient, 1, dirServerToClient, rulesReadRecord(t, c.br))
		require.Equal(t, byte(recordData), reply[0])
		h, err := parseFrameHeader(reply[1:])
		require.NoError(t, err)
		require.Equal(t, kindResponse, h.kind)
		require.EqualValues(t, 1, h.id)
		var echoed []byte
		payload := reply[1+frameHeaderSize:] // body length, then the body
		require.EqualValues(t, len(payload)-4, binary.BigEndian.Uint32(payload))
		require.NoError(t, decodeValue(payload[4:], &echoed, 0))
		require.Equal(t, "by hand", string(echoed))
		require.EqualValues(t, 1, n.opens.Load())
		_, err = nc.Write(rulesSeal(c.toServer, 2, dirClientToServer, []byte{recordClose}, false))
		require.NoError(t, err)
		require.ErrorIs(t, atkDone(t, s.c, "the server's connection"), io.EOF)
	})
	t.Run("tag last", func(t *testing.T) {
		srv, n := atkServer(map[string]Key{"alice": alice}, Config{})
		defer atkStopServer(srv)
		nc, served := rulesConnect(t, srv)
		c := rulesHandshake(t, nc, alice, "alice")
		rulesReadRecord(t, c.br)
		_, err := nc.Write(rulesSeal(c.toServer, 0, dirClientToServer, rulesDataRecord(atkSettingsFrame()), true))
		require.NoError(t, err)
		s := atkRecv(t, served, "ServeConn")
		require.ErrorIs(t, s.err, ErrAuth)
		require.ErrorIs(t, s.err, ErrProtocol)
		require.ErrorContains(t, s.err, "record 0 failed authentication")
		require.Zero(t, n.opens.Load())
	})
}

func rulesCat(a, b []byte) []byte { return append(append([]byte(nil), a...), b...) }

// --- §16: the first record ------------------------------------------------------------

// rulesFirstRecordCases are first records (as plaintexts, each sealed
// alone, in order) that break §16's first-record rule, and the words of
// the receiver's protocol error. None is followed by anything: the
// receiver must decide on the first record alone, without waiting.
func rulesFirstRecordCases() []struct {
	name    string
	records [][]byte
	msg     string
} {
	settings := atkSettingsFrame()
	ping := appendFrameHeader(nil, kindPing, 0, 0, 9)
	return []struct {
		name    string
		records [][]byte
		msg     string
	}{
		// Go's SETTINGS frame is 73 bytes (PROTOCOL.md §14), headers: 1 included.
		{"SETTINGS then PING", [][]byte{rulesDataRecord(settings, ping)}, fmt.Sprintf("first record holds %d bytes, want exactly its %d-byte SETTINGS frame", len(settings)+len(ping), len(settings))},
		{"SETTINGS then one byte", [][]byte{rulesDataRecord(settings, []byte{0})}, fmt.Sprintf("first record holds %d bytes, want exactly its %d-byte", len(settings)+1, len(settings))},
		{"SETTINGS split over two records", [][]byte{rulesDataRecord(settings[:10]), rulesDataRecord(settings[10:])}, fmt.Sprintf("first record holds 10 bytes, want exactly its %d-byte", len(settings))},
		{"SETTINGS header alone", [][]byte{rulesDataRecord(settings[:frameHeaderSize])}, fmt.Sprintf("first record holds 8 bytes, want exactly its %d-byte", len(settings))},
		{"less than a frame header", [][]byte{rulesDataRecord(settings[:5])}, "first record holds 5 bytes, less than a frame header"},
		{"PING first", [][]byte{rulesDataRecord(ping, settings)}, "first frame is PING, want SETTINGS"},
		{"CLOSE first", [][]byte{{recordClose}}, "first record is CLOSE, want SETTINGS"},
		{"unknown frame kind", [][]byte{rulesDataRecord([]byte{0x7f, 0, 0, 0, 0, 0, 0, 0})}, "unknown frame kind 0x7f"},
	}
}

// TestSecureRulesFirstRecordSent: Go's first record is exactly its
// SETTINGS frame, on either side, as hand-written peers read it.
func TestSecureRulesFirstRecordSent(t *testing.T) {
	alice := mustKey(t)
	exactlySettings := func(t *testing.T, plain []byte) {
		t.Helper()
		require.Equal(t, byte(recordData), plain[0])
		content := plain[1:]
		require.GreaterOrEqual(t, len(content), frameHeaderSize)
		h, err := parseFrameHeader(content)
		require.NoError(t, err)
		require.Equal(t, kindSettings, h.kind)
		require.Len(t, content, frameHeaderSize+int(h.length), "the first record holds exactly SETTINGS")
		_, err = parseSettings(content[frameHeaderSize:])
		require.NoError(t, err)
	}
	t.Run("server", func(t *testing.T) {
		// A busy server: keepalive at once, and OnOpen that notifies.
		srv, _ := atkServer(map[string]Key{"alice": alice}, Config{KeepaliveInterval: time.Millisecond})
		srv.OnOpen = func(c *Conn) error { return c.Notify(context.Background(), []byte("hello")) }
		defer atkStopServer(srv)
		nc, served := rulesConnect(t, srv)
		c := rulesHandshake(t, nc, alice, "alice")
		exactlySettings(t, rulesOpen(t, c.toClient, 0, dirServerToClient, rulesReadRecord(t, c.br)))
		_, err := nc.Write(rulesSeal(c.toServer, 0, dirClientToServer, rulesDataRecord(atkSettingsFrame()), false))
		require.NoError(t, err)
		s := atkRecv(t, served, "ServeConn")
		require.NoError(t, s.err)
		s.c.Close()
	})
	t.Run("client", func(t *testing.T) {
		a, b := net.Pipe()
		defer b.Close()
		cfg := atkClientConfig(alice, "alice", nil)
		cfg.KeepaliveInterval = time.Millisecond
		opened := atkNewConn(a, cfg)
		br, toServer, toClient := atkFakeServerHandshake(t, b, alice, nil)
		go b.Write(rulesSeal(toClient, 0, dirServerToClient, rulesDataRecord(atkSettingsFrame()), false))
		exactlySettings(t, rulesOpen(t, toServer, 0, dirClientToServer, rulesReadRecord(t, br)))
		r := atkRecv(t, opened, "NewConn")
		require.NoError(t, r.err)
		r.c.Close()
	})
}

// TestSecureRulesFirstRecordToServer: a real server refuses a client whose
// first record is anything but exactly its SETTINGS frame, at once, with
// a protocol error that is also an authentication failure (the key was
// not confirmed), runs no OnOpen, and sends nothing more.
func TestSecureRulesFirstRecordToServer(t *testing.T) {
	alice := mustKey(t)
	srv, n := atkServer(map[string]Key{"alice": alice}, Config{HandshakeTimeout: 20 * time.Second})
	defer atkStopServer(srv)
	for _, tc := range rulesFirstRecordCases() {
		t.Run(tc.name, func(t *testing.T) {
			nc, served := rulesConnect(t, srv)
			nc.SetDeadline(time.Now().Add(10 * time.Second))
			c := rulesHandshake(t, nc, alice, "alice")
			rulesReadRecord(t, c.br)
			start := time.Now()
			// Only the first record: the server must not wait for a second.
			_, err := nc.Write(rulesSeal(c.toServer, 0, dirClientToServer, tc.records[0], false))
			require.NoError(t, err)
			s := atkRecv(t, served, "ServeConn")
			require.Less(t, time.Since(start), 5*time.Second, "the server waited")
			require.ErrorIs(t, s.err, ErrProtocol)
			require.ErrorIs(t, s.err, ErrAuth)
			require.ErrorContains(t, s.err, tc.msg)
			_, err = c.br.ReadByte()
			require.ErrorIs(t, err, io.EOF, "the server sent more")
		})
	}
	require.Zero(t, n.opens.Load())
	require.Zero(t, n.handled.Load())

	t.Run("control", func(t *testing.T) {
		nc, served := rulesConnect(t, srv)
		c := rulesHandshake(t, nc, alice, "alice")
		rulesReadRecord(t, c.br)
		_, err := nc.Write(rulesSeal(c.toServer, 0, dirClientToServer, rulesDataRecord(atkSettingsFrame()), false))
		require.NoError(t, err)
		s := atkRecv(t, served, "ServeConn")
		require.NoError(t, s.err)
		s.c.Close()
	})
}

// TestSecureRulesFirstRecordToClient: a real client refuses a server whose
// first record is anything but exactly its SETTINGS frame, with a protocol
// error, at once.
func TestSecureRulesFirstRecordToClient(t *testing.T) {
	alice := mustKey(t)
	cases := append(rulesFirstRecordCases(), struct {
		name    string
		records [][]byte
		msg     string
	}{"control", [][]byte{rulesDataRecord(atkSettingsFrame())}, ""})
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			a, b := net.Pipe()
			defer b.Close()
			cfg := atkClientConfig(alice, "alice", nil)
			cfg.HandshakeTimeout = 20 * time.Second
			opened := atkNewConn(a, cfg)
			br, toServer, toClient := atkFakeServerHandshake(t, b, alice, nil)
			start := time.Now()
			go b.Write(rulesSeal(toClient, 0, dirServerToClient, tc.records[0], false))
			rulesOpen(t, toServer, 0, dirClientToServer, rulesReadRecord(t, br))
			r := atkRecv(t, opened, "NewConn")
			require.Less(t, time.Since(start), 5*time.Second, "the client waited")
			if tc.msg == "" {
				require.NoError(t, r.err)
				r.c.Close()
				return
			}
			require.ErrorIs(t, r.err, ErrProtocol)
			require.ErrorContains(t, r.err, tc.msg)
		})
	}
}

// FuzzAtkFirstRecord seals arbitrary plaintexts as a first record, followed
// by an authentic second record, and reads them as a side's opening does:
// accepted exactly when the plaintext is DATA holding one valid SETTINGS
// frame and nothing else; never reading the second record; every failure
// a protocol error.
func FuzzAtkFirstRecord(f *testing.F) {
	for _, tc := range rulesFirstRecordCases() {
		f.Add(tc.records[0])
	}
	f.Add(rulesDataRecord(atkSettingsFrame()))
	f.Add([]byte{})
	f.Add([]byte{recordData})
	f.Add(rulesDataRecord(atkSettingsFrame()[:frameHeaderSize], []byte{0x80}))
	key := atkFixedKey(7)
	second := rulesSeal(key, 1, dirClientToServer, rulesDataRecord(appendFrameHeader(nil, kindPing, 0, 0, 1)), false)
	f.Fuzz(func(t *testing.T, plain []byte) {
		if len(plain) > 1+maxRecordContent {
			return
		}
		stream := append(rulesSeal(key, 0, dirClientToServer, plain, false), second...)
		c := &Conn{}
		c.rr = newRecordReader(bytes.NewReader(stream), key, dirClientToServer)
		err := c.readFirstRecord()
		valid := len(plain) >= 1+frameHeaderSize && plain[0] == recordData && plain[1] == byte(kindSettings) &&
			binary.BigEndian.Uint32(plain[5:9]) == 0 && len(plain) == 1+frameHeaderSize+int(binary.BigEndian.Uint16(plain[3:5]))
		if valid {
			_, perr := parseSettings(plain[1+frameHeaderSize:])
			valid = perr == nil
		}
		if valid != (err == nil) {
			t.Fatalf("plaintext % x: valid %v, read error %v", plain, valid, err)
		}
		if err != nil && !errors.Is(err, ErrProtocol) {
			t.Fatalf("untyped error %v", err)
		}
		if c.rr.n > 1 {
			t.Fatalf("read %d records", c.rr.n)
		}
		c.rr.wipe()
	})
}

// --- §18: the vectors of these rules ---------------------------------------------------

// rulesVectors are the bytes of §18's vectors for the rules above, made
// with the keys of the main vector.
type rulesVectors struct {
	msg1Payload2, msg1LowOrder []byte // refused message 1 (length field and body)
	firstRecordWithPing        []byte // the client's record 0 holding SETTINGS and a PING
	nonceClient1, nonceServer0 []byte // nonces of the client's record 1 and the server's record 0
	closePolyKey, closeTag     []byte // of the client's CLOSE record (counter 1)
}

func makeRulesVectors(t *testing.T) rulesVectors {
	var r rulesVectors
	v := makeSecureVector(t)
	msg1 := func(payload []byte, ePub *[32]byte) []byte {
		ns, err := newNoiseState(securePrologue(vecRealm, vecUser), &vecInitEphemeral)
		require.NoError(t, err)
		if ePub != nil {
			ns.ePub = *ePub
		}
		body := append([]byte{byte(len(vecUser))}, vecUser...)
		return appendHandshakeMsg(nil, append(body, ns.writeMessage1(&vecPSK, payload)...))
	}
	var zero [32]byte
	r.msg1Payload2 = msg1([]byte{0, 0}, nil)
	r.msg1LowOrder = msg1(handshakePayload, &zero)
	var wire bytes.Buffer
	rw := newRecordWriter(&wire, v.toServer, dirClientToServer)
	_, err := rw.Write(append(atkSettingsFrame(), appendFrameHeader(nil, kindPing, 0, 0, 0)...))
	require.NoError(t, err)
	require.NoError(t, rw.Flush())
	r.firstRecordWithPing = wire.Bytes()
	r.nonceClient1 = recordNonce(1, dirClientToServer)[:]
	r.nonceServer0 = recordNonce(0, dirServerToClient)[:]
	r.closePolyKey = rulesKeystream(v.toServer, 1, dirClientToServer, 32)
	r.closeTag = v.closeRecord[recordLenSize : recordLenSize+recordOverhead]
	return r
}

func init() {
	vec := func(pick func(rulesVectors) []byte) func(t *testing.T) []byte {
		return func(t *testing.T) []byte { return pick(makeRulesVectors(t)) }
	}
	protocolExamples = append(protocolExamples,
		protocolExample{"secure vector: message 1 with a 2-byte payload", vec(func(r rulesVectors) []byte { return r.msg1Payload2 })},
		protocolExample{"secure vector: message 1 with a low-order e", vec(func(r rulesVectors) []byte { return r.msg1LowOrder })},
		protocolExample{"secure vector: nonce of the client's record 1", vec(func(r rulesVectors) []byte { return r.nonceClient1 })},
		protocolExample{"secure vector: nonce of the server's record 0", vec(func(r rulesVectors) []byte { return r.nonceServer0 })},
		protocolExample{"secure vector: Poly1305 key of the client's CLOSE record", vec(func(r rulesVectors) []byte { return r.closePolyKey })},
		protocolExample{"secure vector: tag of the client's CLOSE record", vec(func(r rulesVectors) []byte { return r.closeTag })},
		protocolExample{"secure vector: a first record holding SETTINGS and a PING", vec(func(r rulesVectors) []byte { return r.firstRecordWithPing })},
	)
}

// TestSecureRulesVectors checks what §18 says of the vectors of these
// rules: the two message 1 vectors are refused with 00 00 by a real server
// of the main vector, and the four malformed ones closed bare; the CLOSE
// record is its length, its tag, and the
// type byte XORed with keystream byte 32; and the first record holding a
// PING ends the connection, after the server's message 2 and first record
// of the main vector.
func TestSecureRulesVectors(t *testing.T) {
	v, r := makeSecureVector(t), makeRulesVectors(t)
	pre := appendPreamble(nil, modeSecure)
	for name, m1 := range map[string][]byte{"2-byte payload": r.msg1Payload2, "low-order e": r.msg1LowOrder} {
		t.Run(name, func(t *testing.T) {
			a, b := net.Pipe()
			defer a.Close()
			done := rulesVectorServer(t, b, vecPSK, &vecRespEphemeral)
			go a.Write(append(append([]byte(nil), pre...), m1...))
			out, err := io.ReadAll(a)
			require.NoError(t, err)
			require.Equal(t, hexDump(append(append([]byte(nil), pre...), 0, 0)), hexDump(out))
			require.ErrorIs(t, atkRecv(t, done, "the server"), ErrAuth)
		})
	}
	for name, m1 := range map[string][]byte{
		"empty body":            {0, 0},
		"length 513":            {0x02, 0x01},
		"user name of 0 bytes":  append([]byte{0x00, 0x32, 0x00}, make([]byte, 49)...),
		"one short of 54 bytes": append([]byte{0x00, 0x35, 0x05, 'a', 'l', 'i', 'c', 'e'}, make([]byte, 47)...),
	} {
		t.Run("bare close: "+name, func(t *testing.T) {
			a, b := net.Pipe()
			defer a.Close()
			done := rulesVectorServer(t, b, vecPSK, &vecRespEphemeral)
			go a.Write(append(append([]byte(nil), pre...), m1...))
			out, err := io.ReadAll(a)
			require.NoError(t, err)
			require.Equal(t, hexDump(pre), hexDump(out))
			err = atkRecv(t, done, "the server")
			require.ErrorIs(t, err, ErrProtocol)
			require.NotErrorIs(t, err, ErrAuth)
		})
	}
	t.Run("CLOSE record, field by field", func(t *testing.T) {
		ks := rulesKeystream(v.toServer, 1, dirClientToServer, 33)
		require.Equal(t, r.closePolyKey, ks[:32])
		want := append(append([]byte{0, 0, 0, 17}, r.closeTag...), recordClose^ks[32])
		require.Equal(t, hexDump(want), hexDump(v.closeRecord))
		require.Equal(t, []byte{recordClose}, rulesOpen(t, v.toServer, 1, dirClientToServer, v.closeRecord))
		n := rulesNonce(1, dirClientToServer)
		require.Equal(t, r.nonceClient1, n[:])
	})
	t.Run("first record holding a PING", func(t *testing.T) {
		a, b := net.Pipe()
		defer a.Close()
		done := rulesVectorServer(t, b, vecPSK, &vecRespEphemeral)
		go a.Write(bytes.Join([][]byte{pre, v.msg1, r.firstRecordWithPing}, nil))
		out, err := io.ReadAll(a)
		require.NoError(t, err)
		require.Equal(t, hexDump(bytes.Join([][]byte{pre, v.msg2, v.serverRecord}, nil)), hexDump(out))
		err = atkRecv(t, done, "the server")
		require.ErrorIs(t, err, ErrAuth)
		require.ErrorIs(t, err, ErrProtocol)
		require.ErrorContains(t, err, "first record holds 81 bytes") // §18: SETTINGS (73 bytes) and a PING
	})
}
