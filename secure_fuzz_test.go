package bokbok

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

// Fuzz targets for secure mode: the handshake message parsers, a real
// server fed arbitrary message 1 bytes, a real client fed arbitrary
// message 2 bytes, and the record reader fed arbitrary streams. Run one
// with, for example:
//
//	go test -run XXX -fuzz '^FuzzAtkServerMessage1$' -fuzztime 15s .
//
// Helpers are prefixed "atk".

// atkScriptConn is a net.Conn that reads a fixed input (in pieces of at
// most chunk bytes, if chunk > 0) and then io.EOF, and records what is
// written. It never blocks, so a handshake over it always ends.
type atkScriptConn struct {
	mu     sync.Mutex
	in     []byte
	chunk  int
	out    bytes.Buffer
	closed bool
}

type atkAddr struct{}

func (atkAddr) Network() string { return "script" }
func (atkAddr) String() string  { return "script" }

func (sc *atkScriptConn) Read(p []byte) (int, error) {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	if sc.closed {
		return 0, net.ErrClosed
	}
	if len(sc.in) == 0 {
		return 0, io.EOF
	}
	if sc.chunk > 0 && len(p) > sc.chunk {
		p = p[:sc.chunk]
	}
	n := copy(p, sc.in)
	sc.in = sc.in[n:]
	return n, nil
}

func (sc *atkScriptConn) Write(p []byte) (int, error) {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	if sc.closed {
		return 0, net.ErrClosed
	}
	return sc.out.Write(p)
}

func (sc *atkScriptConn) Close() error {
	sc.mu.Lock()
	sc.closed = true
	sc.mu.Unlock()
	return nil
}

func (sc *atkScriptConn) written() []byte {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	return append([]byte(nil), sc.out.Bytes()...)
}

func (sc *atkScriptConn) LocalAddr() net.Addr              { return atkAddr{} }
func (sc *atkScriptConn) RemoteAddr() net.Addr             { return atkAddr{} }
func (sc *atkScriptConn) SetDeadline(time.Time) error      { return nil }
func (sc *atkScriptConn) SetReadDeadline(time.Time) error  { return nil }
func (sc *atkScriptConn) SetWriteDeadline(time.Time) error { return nil }

// atkFixedKey is a key made of the bytes b, b+1, ...
func atkFixedKey(b byte) Key {
	var k Key
	for i := range k {
		k[i] = b + byte(i)
	}
	return k
}

// atkFixedHello is message 1 (length field and body) for user and key
// with a fixed ephemeral key e; if ePub is set it is sent instead of e's
// public key.
func atkFixedHello(key Key, user, realm string, e [32]byte, ePub *[32]byte) (*noiseState, []byte) {
	ns, err := newNoiseState(securePrologue(realm, user), &e)
	if err != nil {
		panic(err)
	}
	if ePub != nil {
		ns.ePub = *ePub
	}
	m1 := ns.writeMessage1(&key, handshakePayload)
	body := append([]byte{byte(len(user))}, user...)
	return ns, appendHandshakeMsg(nil, append(body, m1...))
}

func atkU16(n int) []byte { return []byte{byte(n >> 8), byte(n)} }

// --- the parsers ------------------------------------------------------------

func FuzzAtkReadHandshakeMsg(f *testing.F) {
	_, hello := atkFixedHello(atkFixedKey(1), "alice", atkRealm, [32]byte(atkFixedKey(50)), nil)
	for _, s := range [][]byte{nil, {0}, {0, 0}, hello, hello[:20], atkU16(maxHandshakeMsg), atkU16(maxHandshakeMsg + 1), {0xff, 0xff, 1, 2},
		append(atkU16(maxHandshakeMsg), make([]byte, maxHandshakeMsg+3)...)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		r := bytes.NewReader(in)
		body, err := readHandshakeMsg(r, "message x")
		if len(in) < 2 {
			if !errors.Is(err, ErrProtocol) || !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Fatalf("%d bytes: %v", len(in), err)
			}
			return
		}
		n := int(binary.BigEndian.Uint16(in))
		switch {
		case n > maxHandshakeMsg:
			if !errors.Is(err, ErrProtocol) {
				t.Fatalf("length %d accepted: %v", n, err)
			}
			if r.Len() != len(in)-2 {
				t.Fatalf("length %d: read %d bytes past the length field before refusing it", n, len(in)-2-r.Len())
			}
		case len(in) < 2+n:
			if !errors.Is(err, ErrProtocol) || !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Fatalf("length %d with %d bytes: %v", n, len(in)-2, err)
			}
		default:
			if err != nil {
				t.Fatalf("length %d: %v", n, err)
			}
			if !bytes.Equal(body, in[2:2+n]) {
				t.Fatalf("body % x, want % x", body, in[2:2+n])
			}
			if r.Len() != len(in)-2-n {
				t.Fatalf("read %d bytes, want %d", len(in)-r.Len(), 2+n)
			}
		}
	})
}

func FuzzAtkSplitMessage1(f *testing.F) {
	_, hello := atkFixedHello(atkFixedKey(1), "alice", atkRealm, [32]byte(atkFixedKey(50)), nil)
	body := hello[2:]
	for _, s := range [][]byte{nil, {0}, {1}, body, body[:len(body)-1], append([]byte{0}, body[1:]...),
		append([]byte{255}, body[1:]...), append([]byte{1, 'a'}, make([]byte, noiseDHLen+noiseTagLen)...)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		user, msg, err := splitMessage1(body)
		// PROTOCOL.md: u8 user length (1 to 255) | user | 32-byte e | at
		// least the 16-byte tag.
		valid := len(body) >= 1 && body[0] >= 1 && len(body) >= 1+int(body[0])+noiseDHLen+noiseTagLen
		if !valid {
			if !errors.Is(err, ErrProtocol) {
				t.Fatalf("malformed body % x accepted: user %q, %v", body, user, err)
			}
			return
		}
		if err != nil {
			t.Fatalf("valid body refused: %v", err)
		}
		n := int(body[0])
		if user != string(body[1:1+n]) || !bytes.Equal(msg, body[1+n:]) {
			t.Fatalf("split % x into %q and % x", body, user, msg)
		}
	})
}

// --- a real server, arbitrary message 1 -------------------------------------

// atkServerFuzzSeeds returns message 1 variants (what follows the
// preamble) and the valid ones among them: the only message 1 bytes a
// server may answer with message 2.
func atkServerFuzzSeeds() (seeds, valid [][]byte) {
	alice, other := atkFixedKey(1), atkFixedKey(100)
	e := [32]byte(atkFixedKey(50))
	_, good := atkFixedHello(alice, "alice", atkRealm, e, nil)
	valid = [][]byte{good}
	_, wrongKey := atkFixedHello(other, "alice", atkRealm, e, nil)
	_, unknown := atkFixedHello(alice, "mallory", atkRealm, e, nil)
	_, wrongRealm := atkFixedHello(alice, "alice", "elsewhere", e, nil)
	var zero [32]byte
	_, lowOrder := atkFixedHello(alice, "alice", atkRealm, e, &zero)
	// A key-confirmation record that cannot open: it was sealed for
	// another handshake.
	var rec bytes.Buffer
	forged := newRecordWriter(&rec, other, dirClientToServer)
	forged.Write(atkSettingsFrame())
	forged.Flush()
	seeds = [][]byte{
		good, append(append([]byte(nil), good...), rec.Bytes()...), wrongKey, unknown, wrongRealm, lowOrder,
		good[:len(good)-1], good[:3], nil, {0}, atkU16(0), atkU16(1), atkU16(maxHandshakeMsg + 1), {0xff, 0xff},
		append(atkU16(49), append([]byte{1, 'a'}, make([]byte, 47)...)...),
		append(atkU16(50), append([]byte{1, 'a'}, make([]byte, 48)...)...),
		append(atkU16(len(good)-2), append([]byte{0}, good[3:]...)...),
	}
	return seeds, valid
}

func FuzzAtkServerMessage1(f *testing.F) {
	seeds, valid := atkServerFuzzSeeds()
	for _, s := range seeds {
		f.Add(s, uint8(0))
		f.Add(s, uint8(7))
	}
	srv, counts := atkServer(map[string]Key{"alice": atkFixedKey(1), "bob": atkFixedKey(2)}, Config{})
	f.Cleanup(func() { atkStopServer(srv) })
	pre := appendPreamble(nil, modeSecure)
	// The valid seed does reach message 2 (so the fuzzer starts from there).
	sc := &atkScriptConn{in: append(append([]byte(nil), pre...), valid[0]...)}
	if _, err := srv.ServeConn(context.Background(), sc); !errors.Is(err, ErrAuth) || len(sc.written()) <= len(pre)+2 {
		f.Fatalf("the valid message 1 got %v and % x", err, sc.written())
	}
	f.Fuzz(func(t *testing.T, input []byte, chunk uint8) {
		sc := &atkScriptConn{in: append(append([]byte(nil), pre...), input...), chunk: int(chunk)}
		c, err := srv.ServeConn(context.Background(), sc)
		if err == nil {
			c.Close()
			t.Fatalf("the server opened a connection for % x", input)
		}
		if counts.opens.Load() != 0 || counts.handled.Load() != 0 {
			t.Fatal("OnOpen or a handler ran")
		}
		if !errors.Is(err, ErrAuth) && !errors.Is(err, ErrProtocol) {
			t.Fatalf("untyped error %v", err)
		}
		out := sc.written()
		if !bytes.HasPrefix(out, pre) {
			t.Fatalf("the server's output does not start with its preamble: % x", out)
		}
		rest := out[len(pre):]
		switch {
		case len(rest) == 0: // a malformed message 1: no answer
			if errors.Is(err, ErrAuth) {
				t.Fatalf("authentication failure without a refusal: %v", err)
			}
		case bytes.Equal(rest, []byte{0, 0}):
			if !errors.Is(err, ErrAuth) {
				t.Fatalf("a refusal with %v", err)
			}
		default: // message 2 and the server's first record
			ok := false
			for _, v := range valid {
				ok = ok || bytes.HasPrefix(input, v)
			}
			if !ok {
				t.Fatalf("the server accepted message 1 % x", input)
			}
			if len(rest) < 2+noiseDHLen+1+noiseTagLen || binary.BigEndian.Uint16(rest) != noiseDHLen+1+noiseTagLen {
				t.Fatalf("message 2 malformed: % x", rest)
			}
			if !errors.Is(err, ErrAuth) {
				t.Fatalf("no key confirmation, yet %v", err)
			}
		}
	})
}

// --- a real client, arbitrary message 2 -------------------------------------

// atkClientFuzz is a client's fixed view of a handshake: its ephemeral
// key, and an authentic answer from the server.
type atkClientFuzz struct {
	key    Key
	e      [32]byte
	hello  []byte // what the client sends first: preamble and message 1
	m2     []byte // message 2 with its length
	record []byte // the server's first record
	seeds  [][]byte
	cfg    *Config
}

func atkNewClientFuzz() *atkClientFuzz {
	cf := &atkClientFuzz{key: atkFixedKey(1), e: [32]byte(atkFixedKey(50))}
	es := [32]byte(atkFixedKey(80))
	_, m1 := atkFixedHello(cf.key, "alice", atkRealm, cf.e, nil)
	cf.hello = append(appendPreamble(nil, modeSecure), m1...)
	server, err := newNoiseState(securePrologue(atkRealm, "alice"), &es)
	if err != nil {
		panic(err)
	}
	if _, err := server.readMessage1(&cf.key, m1[2+1+len("alice"):]); err != nil {
		panic(err)
	}
	m2, err := server.writeMessage2(handshakePayload)
	if err != nil {
		panic(err)
	}
	cf.m2 = appendHandshakeMsg(nil, m2)
	_, toClient := server.split()
	var rec bytes.Buffer
	rw := newRecordWriter(&rec, toClient, dirServerToClient)
	rw.Write(atkSettingsFrame())
	rw.Flush()
	cf.record = append([]byte(nil), rec.Bytes()...)
	// Later traffic: a PING, then CLOSE.
	rw.Write(appendFrameHeader(nil, kindPing, 0, 0, 5))
	rw.Flush()
	rw.close(time.Time{})
	later := rec.Bytes()[len(cf.record):]

	// A message 2 with a low-order key, and message 1 reflected.
	lo, _ := newNoiseState(securePrologue(atkRealm, "alice"), &es)
	lo.readMessage1(&cf.key, m1[2+1+len("alice"):])
	var zero [32]byte
	lo.ePub = zero
	low, _ := lo.writeMessage2(handshakePayload)

	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	cf.seeds = [][]byte{
		cat(cf.m2, cf.record), cat(cf.m2, cf.record, later), cf.m2, {0, 0}, nil, cf.m2[:10],
		cat(cf.m2, cf.record[:20]), appendHandshakeMsg(nil, low), appendHandshakeMsg(nil, m1[2+1+len("alice"):]),
		atkU16(maxHandshakeMsg + 1), atkU16(1), cat(cf.m2, []byte{0, 0, 0, 0}), cat(cf.m2, []byte{0xff, 0xff, 0xff, 0xff}),
	}
	full, err := (&Config{Key: &cf.key, User: "alice", Realm: atkRealm, KeepaliveInterval: -1}).withDefaults()
	if err != nil {
		panic(err)
	}
	cf.cfg = full
	return cf
}

func FuzzAtkClientMessage2(f *testing.F) {
	cf := atkNewClientFuzz()
	for _, s := range cf.seeds {
		f.Add(s, uint8(0))
		f.Add(s, uint8(5))
	}
	pre := appendPreamble(nil, modeSecure)
	authentic := append(append([]byte(nil), cf.m2...), cf.record...)
	f.Fuzz(func(t *testing.T, input []byte, chunk uint8) {
		sc := &atkScriptConn{in: append(append([]byte(nil), pre...), input...), chunk: int(chunk)}
		c := newConn(sc, cf.cfg, "")
		e := cf.e
		err := c.open(context.Background(), opening{ephemeral: &e}, nil)
		out := sc.written()
		if !bytes.HasPrefix(out, cf.hello) {
			t.Fatalf("the client's opening is % x, want % x", out[:min(len(out), len(cf.hello))], cf.hello)
		}
		if bytes.HasPrefix(input, authentic) {
			if err != nil {
				t.Fatalf("the authentic answer was refused: %v", err)
			}
		} else if err == nil {
			t.Fatalf("the client accepted % x", input)
		}
		if err == nil {
			c.Close()
			reason := c.Err()
			if !errors.Is(reason, ErrClosed) {
				t.Fatalf("closed with %v", reason)
			}
			return
		}
		if !errors.Is(err, ErrAuth) && !errors.Is(err, ErrProtocol) && !errors.Is(err, ErrTruncated) {
			t.Fatalf("untyped error %v", err)
		}
	})
}

// --- the record reader --------------------------------------------------------

// atkRecordContent is the canonical content of record i in the record
// reader's seeds: any stream a fuzzer makes can only authenticate records
// taken from them, in order, so whatever a reader delivers must be a
// prefix of these, cut at a record boundary.
func atkRecordContent(i int) []byte {
	if i == 3 {
		return bytes.Repeat([]byte{'L'}, maxRecordContent) // a full record
	}
	return []byte(fmt.Sprintf("record %d:%s", i, bytes.Repeat([]byte{'x'}, i*7)))
}

const atkRecordSeedCount = 6

func FuzzAtkRecordReader(f *testing.F) {
	key := atkFixedKey(9)
	var all []byte
	bounds := map[int]bool{0: true}
	for i := range atkRecordSeedCount {
		all = append(all, atkRecordContent(i)...)
		bounds[len(all)] = true
	}
	// Seeds: the first k records, with and without CLOSE, and broken
	// variants.
	stream := func(k int, close bool) []byte {
		var b bytes.Buffer
		rw := newRecordWriter(&b, key, dirServerToClient)
		for i := range k {
			rw.Write(atkRecordContent(i))
			rw.Flush()
		}
		if close {
			rw.close(time.Time{})
		}
		return b.Bytes()
	}
	for k := range 4 {
		f.Add(stream(k, true), uint8(0))
		f.Add(stream(k, false), uint8(3))
	}
	// The full record (record 3) in one seed only, to keep inputs small.
	f.Add(stream(atkRecordSeedCount, true), uint8(0))
	two := stream(2, true)
	f.Add(two[:len(two)-1], uint8(0))
	f.Add(append(binary.BigEndian.AppendUint32(nil, 17), make([]byte, 17)...), uint8(0))
	f.Add([]byte{0xff, 0xff, 0xff, 0xff}, uint8(1))
	f.Add([]byte{0, 0, 0, 16}, uint8(0))

	f.Fuzz(func(t *testing.T, in []byte, chunk uint8) {
		rr := newRecordReader(&atkScriptConn{in: in, chunk: int(chunk)}, key, dirServerToClient)
		buf := make([]byte, int(chunk)%37+1)
		var got []byte
		var err error
		for reads := 0; ; reads++ {
			n, e := rr.Read(buf)
			if n == 0 && e == nil {
				t.Fatal("Read returned 0, nil")
			}
			got = append(got, buf[:n]...)
			if e != nil {
				err = e
				break
			}
			if reads > len(all)+10 {
				t.Fatal("more content than any stream can carry")
			}
		}
		switch {
		case err == io.EOF, errors.Is(err, ErrTruncated), errors.Is(err, ErrProtocol):
		default:
			t.Fatalf("untyped error %v", err)
		}
		if _, again := rr.Read(buf); again != err {
			t.Fatalf("error not sticky: %v, then %v", err, again)
		}
		if !bytes.HasPrefix(all, got) || !bounds[len(got)] {
			t.Fatalf("delivered %d bytes that are not whole authentic records", len(got))
		}
		if err == io.EOF && !bytes.HasPrefix(in, stream(countRecords(got), true)) {
			// A clean end is only the authentic stream up to its CLOSE.
			t.Fatalf("clean end of a stream that is not authentic")
		}
	})
}

// countRecords returns how many canonical records make up content.
func countRecords(content []byte) int {
	n, total := 0, 0
	for total < len(content) {
		total += len(atkRecordContent(n))
		n++
	}
	return n
}

// FuzzAtkRecordRoundTrip writes data through a record writer in pieces and
// flushes chosen by the fuzzer, then reads it back.
func FuzzAtkRecordRoundTrip(f *testing.F) {
	f.Add([]byte("hello"), []byte{1, 2, 3})
	f.Add(bytes.Repeat([]byte{1}, 1000), []byte{200, 255, 0, 7})
	f.Add([]byte{}, []byte{0})
	key := atkFixedKey(3)
	f.Fuzz(func(t *testing.T, data []byte, plan []byte) {
		var wire bytes.Buffer
		rw := newRecordWriter(&wire, key, dirClientToServer)
		// Each plan byte writes the next b*b bytes of data repeated to
		// size (so records fill up), flushing after odd ones.
		if len(plan) > 16 {
			plan = plan[:16] // enough to cross several records
		}
		var sent []byte
		for _, b := range plan {
			size := int(b) * int(b)
			piece := make([]byte, size)
			for i := range piece {
				if len(data) > 0 {
					piece[i] = data[(len(sent)+i)%len(data)]
				}
			}
			if _, err := rw.Write(piece); err != nil {
				t.Fatal(err)
			}
			sent = append(sent, piece...)
			if b&1 == 1 {
				if err := rw.Flush(); err != nil {
					t.Fatal(err)
				}
			}
		}
		if err := rw.close(time.Time{}); err != nil {
			t.Fatal(err)
		}
		rr := newRecordReader(bytes.NewReader(wire.Bytes()), key, dirClientToServer)
		got, err := io.ReadAll(rr)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, sent) {
			t.Fatalf("read back %d bytes, wrote %d", len(got), len(sent))
		}
		// Every record but CLOSE carries content, none more than the limit.
		for rest := wire.Bytes(); len(rest) > 0; {
			n := int(binary.BigEndian.Uint32(rest))
			if n < minSealedRecord || n > maxSealedRecord {
				t.Fatalf("record of %d sealed bytes", n)
			}
			rest = rest[recordLenSize+n:]
		}
	})
}
