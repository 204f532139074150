package bokbok

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"math"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"testing/iotest"
	"time"

	"github.com/vmihailenco/msgpack/v5"
	"github.com/vmihailenco/msgpack/v5/msgpcode"
	"go.uber.org/goleak"

	"github.com/bokbok-go/bokbok/internal/msgpackcheck"
)

// Fuzz targets for every decoder that reads bytes from the network, and
// one end-to-end target that feeds arbitrary bytes to a real Conn.
//
//	go test -run XXX -fuzz FuzzName -fuzztime 15s .

// robWire encodes messages and control frames exactly as a Conn's writer
// would: through a sendQueue, round robin, control frames first.
type robWire struct {
	msgs []*outMsg
	ctrl []robCtrl
}

type robCtrl struct {
	kind frameKind
	id   uint32
}

func (w *robWire) msg(kind frameKind, flags uint8, id uint32, data []byte) *robWire {
	w.msgs = append(w.msgs, &outMsg{kind: kind, flags: flags, id: id, data: data})
	return w
}

func (w *robWire) control(kind frameKind, id uint32) *robWire {
	w.ctrl = append(w.ctrl, robCtrl{kind, id})
	return w
}

func (w *robWire) bytes() []byte {
	// The queue starts a "writer" on the first push; this one only exits,
	// and the loop below takes the frames instead.
	var writers sync.WaitGroup
	defer writers.Wait()
	q := newSendQueue(1<<30, writers.Done, &writers)
	for _, m := range w.msgs {
		q.pushSmall(m)
	}
	for _, c := range w.ctrl {
		q.pushCtrl(c.kind, c.id)
	}
	var out []byte
	for {
		ctrl, frames, ok := q.take(nil, nil)
		if !ok {
			return out
		}
		out = append(out, ctrl...)
		for _, f := range frames {
			out = append(out, f.hdr[:]...)
			out = append(out, f.payload...)
		}
	}
}

// robFrames cuts data (a 4-byte length and a body) into frames of at most
// size payload bytes: the protocol allows frames of any size up to the
// maximum, so seeds can have multi-frame messages without being large.
func robFrames(kind frameKind, flags uint8, id uint32, data []byte, size int) [][]byte {
	var out [][]byte
	for len(data) > 0 {
		n := min(len(data), max(size, bodyLenSize+1))
		out = append(out, robFrameBytes(kind, flags, id, data[:n]))
		data = data[n:]
	}
	return out
}

// robInterleave joins frame lists taking one frame of each in turn.
func robInterleave(lists ...[][]byte) []byte {
	var out []byte
	for more := true; more; {
		more = false
		for i, l := range lists {
			if len(l) > 0 {
				out = append(out, l[0]...)
				lists[i] = l[1:]
				more = true
			}
		}
	}
	return out
}

func robMust(b []byte, err error) []byte {
	if err != nil {
		panic(err)
	}
	return b
}

// robSampleMessages are values of every msgpack shape, for seeds.
func robSampleMessages() []any {
	return []any{
		nil, true, false, 0, 1, -1, 127, 128, -33, 255, 256, 65535, 65536, -129,
		math.MaxInt64, math.MinInt64, uint64(math.MaxUint64), 1.5, float32(2.5), math.Inf(1),
		"", "hello", strings.Repeat("s", 40), strings.Repeat("x", 300),
		[]byte{}, []byte{1, 2, 3}, bytes.Repeat([]byte{7}, 300),
		[]any{}, []any{1, "two", 3.0, nil}, []int{1, 2, 3},
		map[string]any{}, map[string]any{"op": "add", "args": []int{2, 3}},
		map[string]any{"nested": map[string]any{"deeper": []any{map[string]any{"k": "v"}}}},
		map[int]string{1: "a"},
		time.Unix(1700000000, 5).UTC(),
		struct {
			A int    `msgpack:"a"`
			B string `msgpack:"b"`
		}{1, "b"},
	}
}

// robSampleBodies are valid msgpack encodings (no length prefix).
func robSampleBodies() [][]byte {
	var out [][]byte
	for _, m := range robSampleMessages() {
		out = append(out, robMust(encodeValueBody(m))[bodyLenSize:])
	}
	return out
}

// --- frame headers -------------------------------------------------------

func FuzzParseFrameHeader(f *testing.F) {
	for kind := range 12 {
		for _, length := range []int{0, 1, 4, 100, maxFramePayload} {
			for _, id := range []uint32{0, 1, 0xffffffff} {
				f.Add(appendFrameHeader(nil, frameKind(kind), 0, length, id))
			}
		}
	}
	f.Add(appendFrameHeader(nil, kindRequest, flagNested, 10, 3))
	f.Add(robRawHeader(byte(kindRequest), 0, maxFramePayload+1, 1))
	f.Add(robRawHeader(byte(kindPing), 0xff, 0xffff, 0))
	f.Add(robRawHeader(0xff, 0xff, 0xffff, 0xffffffff))
	f.Add([]byte{})
	f.Add([]byte{2, 0, 0})

	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) < frameHeaderSize {
			return // the reader only ever passes whole headers
		}
		b = b[:frameHeaderSize]
		h, err := parseFrameHeader(b)

		// An independent statement of the rules.
		kind, length, id := b[0], binary.BigEndian.Uint16(b[2:4]), binary.BigEndian.Uint32(b[4:8])
		valid := length <= maxFramePayload
		switch frameKind(kind) {
		case kindSettings:
			valid = valid && id == 0
		case kindRequest, kindResponse, kindError, kindNotify:
			valid = valid && id != 0 && length > 0
		case kindCancel:
			valid = valid && id != 0 && length == 0
		case kindPing, kindPong, kindGoAway, kindCredit:
			valid = valid && length == 0
		default:
			valid = false
		}
		if valid != (err == nil) {
			t.Fatalf("header % x: valid by the rules = %v, parseFrameHeader error = %v", b, valid, err)
		}
		if err != nil {
			var pe *ProtocolError
			if !errors.As(err, &pe) || !errors.Is(err, ErrProtocol) {
				t.Fatalf("header % x: error %v (%T) is not a *ProtocolError", b, err, err)
			}
			return
		}
		// An accepted header re-encodes to the same bytes.
		var out [frameHeaderSize]byte
		h.put(out[:])
		if !bytes.Equal(out[:], b) {
			t.Fatalf("header % x re-encodes as % x", b, out)
		}
		if again := appendFrameHeader(nil, h.kind, h.flags, int(h.length), h.id); !bytes.Equal(again, b) {
			t.Fatalf("header % x re-encodes (appendFrameHeader) as % x", b, again)
		}
		if h.kind.String() == "UNKNOWN" {
			t.Fatalf("accepted a header of unknown kind %d", h.kind)
		}
	})
}

// --- frame streams -------------------------------------------------------

// robReadFrames reads frames until an error and returns them re-encoded
// (so the caller can compare with the stream) and the final error.
func robReadFrames(t *testing.T, r io.Reader) (reencoded []byte, frames int, err error) {
	fr := frameReader{r: r}
	for {
		h, p, err := fr.next()
		if err != nil {
			return reencoded, frames, err
		}
		if len(p) != int(h.length) {
			t.Fatalf("frame %d: payload of %d bytes, header says %d", frames, len(p), h.length)
		}
		var hb [frameHeaderSize]byte
		h.put(hb[:])
		if _, herr := parseFrameHeader(hb[:]); herr != nil {
			t.Fatalf("frame %d: next returned a header that does not parse: %v", frames, herr)
		}
		reencoded = append(append(reencoded, hb[:]...), p...)
		frames++
	}
}

func FuzzFrameReader(f *testing.F) {
	valid := new(robWire).
		msg(kindRequest, 0, 1, robMust(encodeRequestBody(0, "hello"))).
		msg(kindRequest, flagNested, 2, robMust(encodeRequestBody(5000000, map[string]any{"op": "add"}))).
		msg(kindNotify, 0, 3, robMust(encodeValueBody([]int{1, 2, 3}))).
		msg(kindError, 0, 10, encodeErrorBody("code", "message")).
		control(kindPing, 0).control(kindPong, 7).control(kindCancel, 2).
		control(kindGoAway, 0).control(kindCredit, 4).
		bytes()
	valid = append(valid, robInterleave(
		robFrames(kindResponse, 0, 9, robMust(encodeValueBody(strings.Repeat("z", 100))), 30),
		robFrames(kindNotify, 0, 11, robMust(encodeValueBody(map[string]any{"k": "v"})), 5),
	)...)
	f.Add(valid)
	f.Add(robFrameBytes(kindSettings, 0, 0, robSettings.encode()))
	f.Add(valid[:len(valid)-1])
	f.Add(valid[:5])
	f.Add([]byte{})
	f.Add(robRawHeader(0x0b, 0, 0, 1))
	f.Add(append(robFrameBytes(kindPing, 0, 1, nil), robRawHeader(byte(kindRequest), 0, 200, 3)...))

	f.Fuzz(func(t *testing.T, stream []byte) {
		re, frames, err := robReadFrames(t, bytes.NewReader(stream))
		if !bytes.HasPrefix(stream, re) {
			t.Fatalf("the frames read do not re-encode to a prefix of the stream")
		}
		rest := stream[len(re):]
		switch {
		case err == io.EOF:
			if len(rest) != 0 {
				t.Fatalf("io.EOF with %d bytes unread", len(rest))
			}
		case !errors.Is(err, ErrProtocol):
			t.Fatalf("error %v (%T) after %d frames is neither io.EOF nor a *ProtocolError", err, err, frames)
		case len(rest) == 0:
			t.Fatalf("protocol error %v with nothing left in the stream", err)
		case len(rest) < frameHeaderSize:
			if !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Fatalf("a %d-byte tail gave %v, want a truncated header", len(rest), err)
			}
		default:
			_, herr := parseFrameHeader(rest[:frameHeaderSize])
			if herr == nil {
				// A good header: the payload must have been cut short.
				if !errors.Is(err, io.ErrUnexpectedEOF) {
					t.Fatalf("good header then %v, want a truncated payload", err)
				}
				if n := binary.BigEndian.Uint16(rest[2:4]); int(n) <= len(rest)-frameHeaderSize {
					t.Fatalf("payload of %d bytes was there, yet %v", n, err)
				}
			} else if herr.Error() != err.Error() {
				t.Fatalf("bad header: next says %v, parseFrameHeader says %v", err, herr)
			}
		}

		// The same stream a byte at a time reads the same.
		re2, frames2, err2 := robReadFrames(t, iotest.OneByteReader(bytes.NewReader(stream)))
		if !bytes.Equal(re, re2) || frames != frames2 || err.Error() != err2.Error() {
			t.Fatalf("byte-at-a-time read differs: %d frames, %v; want %d frames, %v", frames2, err2, frames, err)
		}
	})
}

// --- message assembly ----------------------------------------------------

// robAsmRecords encodes frame payloads in FuzzAssembly's input format:
// per frame, a selector byte (id in bits 0-1, kind in bits 2-3), a 2-byte
// length, the payload.
func robAsmRecords(sel byte, payloads ...[]byte) []byte {
	var out []byte
	for _, p := range payloads {
		out = append(out, sel)
		out = binary.BigEndian.AppendUint16(out, uint16(len(p)))
		out = append(out, p...)
	}
	return out
}

func robSplit(b []byte, sizes ...int) [][]byte {
	var out [][]byte
	for _, n := range sizes {
		n = min(n, len(b))
		out = append(out, b[:n])
		b = b[n:]
	}
	if len(b) > 0 {
		out = append(out, b)
	}
	return out
}

func FuzzAssembly(f *testing.F) {
	for i, body := range robSampleBodies() {
		whole := robBody(uint32(len(body)), body)
		sel := byte(i % 16)
		f.Add(uint32(1<<20), robAsmRecords(sel, whole))
		f.Add(uint32(len(body)), robAsmRecords(sel, robSplit(whole, 5, 3)...))
		f.Add(uint32(len(body)-1), robAsmRecords(sel, whole))
	}
	f.Add(uint32(DefaultMaxMessageSize), robAsmRecords(0, robBody(0x7fffffff, nil)))
	f.Add(uint32(maxMessageSizeLimit), robAsmRecords(1, robBody(0x7fffffff, []byte{1})))
	f.Add(uint32(100), robAsmRecords(2, robBody(0, nil)))
	f.Add(uint32(100), robAsmRecords(3, []byte{0, 0, 1}))
	f.Add(uint32(100), robAsmRecords(3, robBody(3, []byte{1, 2, 3, 4})))
	f.Add(uint32(100), append(robAsmRecords(0, robBody(4, []byte{1})), robAsmRecords(1, robBody(2, []byte{9, 9}))...))

	kinds := [4]frameKind{kindRequest, kindResponse, kindError, kindNotify}
	type model struct {
		a     assembly
		total int
		got   []byte
	}
	f.Fuzz(func(t *testing.T, limitSeed uint32, data []byte) {
		limit := int(limitSeed%maxMessageSizeLimit) + 1
		msgs := map[byte]*model{}
		for len(data) >= 3 {
			sel, n := data[0]&15, int(binary.BigEndian.Uint16(data[1:3]))
			inPlace := data[0]&16 != 0 // read into the buffer's free end, as the reader does when it can
			data = data[3:]
			n = min(n, len(data), maxFramePayload)
			p := bytes.Clone(data[:n])
			data = data[n:]
			kind := kinds[sel>>2]

			m := msgs[sel]
			if m == nil {
				m = &model{}
				msgs[sel] = m
			}
			// What the rules say should happen.
			rest, wantErr := p, ""
			if m.a.buf == nil {
				switch {
				case len(p) < bodyLenSize:
					wantErr = "too short for the length"
				case binary.BigEndian.Uint32(p) == 0:
					wantErr = "empty body"
				case int64(binary.BigEndian.Uint32(p)) > int64(limit):
					wantErr = "longer than this side's limit"
				default:
					m.total = int(binary.BigEndian.Uint32(p))
					rest = p[bodyLenSize:]
				}
			}
			if wantErr == "" && len(m.got)+len(rest) > m.total {
				wantErr = "carry more than"
			}

			rest = bytes.Clone(rest)
			if dst := m.a.free(len(p)); inPlace && dst != nil {
				copy(dst, p)
				p = dst
				inPlace = true
			} else {
				inPlace = false
			}
			done, err := m.a.add(kind, p, limit)
			if !inPlace {
				clear(p) // the reader reuses its buffer: add must have copied
			}
			if wantErr != "" {
				if err == nil || !errors.Is(err, ErrProtocol) || !strings.Contains(err.Error(), wantErr) {
					t.Fatalf("want a protocol error %q, got %v", wantErr, err)
				}
				if strings.Contains(wantErr, "limit") && !errors.Is(err, ErrMessageTooLarge) {
					t.Fatalf("a body over the limit gave %v, want ErrMessageTooLarge too", err)
				}
				delete(msgs, sel) // the connection would close
				continue
			}
			if err != nil {
				t.Fatalf("unexpected error %v", err)
			}
			if limit := min(m.total, max(2*len(m.a.buf), 1)); cap(m.a.buf) > limit {
				t.Fatalf("declared %d bytes, %d arrived: buffer of %d, want at most %d", m.total, len(m.a.buf), cap(m.a.buf), limit)
			}
			m.got = append(m.got, rest...)
			if done != (len(m.got) == m.total) {
				t.Fatalf("done = %v with %d of %d bytes", done, len(m.got), m.total)
			}
			if len(m.a.buf) != len(m.got) || len(m.a.buf) > m.total {
				t.Fatalf("assembled %d bytes, want %d (of %d)", len(m.a.buf), len(m.got), m.total)
			}
			if done {
				if !bytes.Equal(m.a.buf, m.got) {
					t.Fatalf("assembled body differs from the frames' bytes")
				}
				delete(msgs, sel)
			}
		}
	})
}

// --- msgpack pieces ------------------------------------------------------

func FuzzReadMsgpackUint(f *testing.F) {
	for _, v := range []uint64{0, 1, 0x7f, 0x80, 0xff, 0x100, 0xffff, 0x10000, 0xffffffff, 1 << 32, math.MaxInt64, math.MaxUint64} {
		f.Add(appendMsgpackUint(nil, v))
		f.Add(appendMsgpackUint([]byte{}, v)[:1])
	}
	for _, v := range []int64{0, 5, -1, -32, -33, 127, -128, 32767, -32768, math.MaxInt32, math.MinInt32, math.MaxInt64, math.MinInt64} {
		for _, compact := range []bool{true, false} {
			var buf bytes.Buffer
			enc := msgpack.NewEncoder(&buf)
			enc.UseCompactInts(compact)
			if err := enc.EncodeInt(v); err != nil {
				f.Fatal(err)
			}
			f.Add(buf.Bytes())
		}
	}
	f.Add([]byte{0xd0, 0x7f})
	f.Add([]byte{0xd3, 0x80, 0, 0, 0, 0, 0, 0, 0})
	f.Add([]byte{0xca, 0, 0, 0, 0})
	f.Add([]byte{0xc0})
	f.Add([]byte{})

	f.Fuzz(func(t *testing.T, b []byte) {
		v, n, err := readMsgpackUint(b)
		if err == nil && (n < 1 || n > 9 || n > len(b)) {
			t.Fatalf("% x: took %d bytes", b, n)
		}

		// The reference: msgpack's own decoder, for the integer forms only.
		isInt := len(b) > 0 && (b[0] <= 0x7f || b[0] >= 0xe0 || (b[0] >= 0xcc && b[0] <= 0xd3))
		if !isInt {
			if err == nil {
				t.Fatalf("% x is not a msgpack integer, yet read %d", b, v)
			}
			return
		}
		r := bytes.NewReader(b)
		x, derr := msgpack.NewDecoder(r).DecodeInterfaceLoose()
		var want uint64
		wantOK := derr == nil
		switch x := x.(type) {
		case int64:
			wantOK = wantOK && x >= 0
			want = uint64(x)
		case uint64:
			want = x
		default:
			wantOK = false
		}
		if wantOK != (err == nil) {
			t.Fatalf("% x: msgpack says %v (%v), readMsgpackUint says %d, %v", b, x, derr, v, err)
		}
		if !wantOK {
			return
		}
		if v != want || n != len(b)-r.Len() {
			t.Fatalf("% x: read %d in %d bytes, want %d in %d", b, v, n, want, len(b)-r.Len())
		}
		// The shortest encoding reads back the same.
		enc := appendMsgpackUint(nil, v)
		v2, n2, err2 := readMsgpackUint(enc)
		if err2 != nil || v2 != v || n2 != len(enc) || n2 > n {
			t.Fatalf("%d: re-encoded as % x, read back %d, %d, %v", v, enc, v2, n2, err2)
		}
	})
}

func FuzzParseRequestBody(f *testing.F) {
	for _, m := range robSampleMessages() {
		for _, timeout := range []uint64{0, 1, 1000000, math.MaxUint64} {
			f.Add(robMust(encodeRequestBody(timeout, m))[bodyLenSize:])
		}
	}
	f.Add([]byte{0x05})
	f.Add([]byte{0xff, 0xc0})
	f.Add([]byte{0xd0, 0x80, 0xc0})
	f.Add([]byte{0xcf, 0xff})
	f.Add([]byte{})

	f.Fuzz(func(t *testing.T, body []byte) {
		timeout, msg, err := parseRequestBody(body)
		if err != nil {
			if !errors.Is(err, ErrProtocol) {
				t.Fatalf("error %v (%T) is not a *ProtocolError", err, err)
			}
			if _, n, uerr := readMsgpackUint(body); uerr == nil && n < len(body) {
				t.Fatalf("a valid timeout and a message, yet %v", err)
			}
			return
		}
		if len(msg) == 0 {
			t.Fatal("accepted an empty message")
		}
		t2, n, uerr := readMsgpackUint(body)
		if uerr != nil || t2 != timeout || !bytes.Equal(body[n:], msg) {
			t.Fatalf("split % x into %d + % x", body, timeout, msg)
		}
		// Re-encoding the parts gives a body that parses the same.
		again := robMust(encodeRequestBody(timeout, msgpack.RawMessage(msg)))
		if binary.BigEndian.Uint32(again) != uint32(len(again)-bodyLenSize) {
			t.Fatal("encodeRequestBody wrote a wrong length")
		}
		t3, msg3, err3 := parseRequestBody(again[bodyLenSize:])
		if err3 != nil || t3 != timeout || !bytes.Equal(msg3, msg) {
			t.Fatalf("round trip: %d % x %v", t3, msg3, err3)
		}
	})
}

func FuzzParseErrorBody(f *testing.F) {
	for _, cm := range [][2]string{{"", ""}, {"", "boom"}, {CodeBusy, "too many"}, {"app.x", strings.Repeat("m", 300)}, {"\xff", "\x00"}} {
		f.Add(encodeErrorBody(cm[0], cm[1])[bodyLenSize:])
	}
	f.Add(robMust(encodeValueBody(map[string]any{"Code": "c", "Message": "m"}))[bodyLenSize:])
	f.Add(robMust(encodeValueBody(map[string]any{"Code": "c", "other": []int{1}}))[bodyLenSize:])
	f.Add(robMust(encodeValueBody([]any{"a", "b", "c"}))[bodyLenSize:])
	f.Add(robMust(encodeValueBody([]any{1, 2}))[bodyLenSize:])
	f.Add([]byte{0x90})
	f.Add([]byte{0xc0})
	f.Add([]byte{0x92, 0xa1, 'c'})
	f.Add([]byte{0xdc, 0, 2, 0xd9, 1, 'c', 0xda, 0, 1, 'm'})
	f.Add([]byte{0x92, 0xc4, 1, 'a', 0xc4, 1, 'b'})
	f.Add([]byte{0x92, 0xa0, 0xd4, 1, 1})
	f.Add(append(encodeErrorBody("c", "m")[bodyLenSize:], 0xc0))
	f.Add([]byte{})

	f.Fuzz(func(t *testing.T, body []byte) {
		re, err := parseErrorBody(body)
		if want, ok := errorBodyOracle(body); ok != (err == nil) || (ok && *want != *re) {
			t.Fatalf("parseErrorBody(% x) = %v, %v; PROTOCOL.md's rule, read with the msgpack library: %v, %v", body, re, err, want, ok)
		}
		if err != nil {
			var pe *ProtocolError
			if !errors.As(err, &pe) || re != nil {
				t.Fatalf("error %v (%T) is not a *ProtocolError, or came with %v", err, err, re)
			}
			return
		}
		if re == nil {
			t.Fatal("nil *RemoteError without an error")
		}
		_ = re.Error()
		again, err := parseErrorBody(encodeErrorBody(re.Code, re.Message)[bodyLenSize:])
		if err != nil || *again != *re {
			t.Fatalf("round trip of %#v: %#v, %v", re, again, err)
		}
	})
}

func FuzzParseSettings(f *testing.F) {
	for _, s := range []settings{
		{DefaultMaxMessageSize, DefaultNotifyWindow, DefaultMaxConcurrentHandlers, DefaultNotifyBytes, 0},
		{1, 1, 1, 1, 1},
		{maxMessageSizeLimit, maxNotifyWindow, math.MaxUint64, maxMessageSizeLimit, 0},
		{0, 1, 1, 0, 0},
		{1, 0, 1, 0, 0},
		{maxMessageSizeLimit + 1, 1, 1, 0, 0},
		{1, maxNotifyWindow + 1, 1, 0, 0},
		{1, 1, 1, maxMessageSizeLimit + 1, 0},
	} {
		f.Add(s.encode())
	}
	f.Add(robMust(encodeValueBody(map[string]any{
		"max_message_size": 100, "notify_window": 2, "max_handlers": 3, "future_setting": []any{"x", 1}}))[bodyLenSize:])
	f.Add(robMust(encodeValueBody(map[string]any{"max_message_size": -1, "notify_window": 2}))[bodyLenSize:])
	f.Add(robMust(encodeValueBody(map[string]any{"max_message_size": 1.5, "notify_window": "2"}))[bodyLenSize:])
	f.Add(robMust(encodeValueBody([]any{1, 2, 3}))[bodyLenSize:])
	f.Add(append(robSettings.encode(), 0xc0))
	f.Add(ruleMap(ruleKV("max_message_size", 1), ruleKV("notify_window", 1), ruleKV("notify_window", 1)))
	f.Add(ruleMap(ruleKV("max_message_size", 1), ruleKV("notify_window", 1), ruleKV("max_handlers", 0xff)))
	f.Add(ruleMap(ruleKV("max_message_size", 0xd0, 0x01), ruleKV("notify_window", 0xd9, 1, '1'), []byte{0xc4, 1, 'x', 1}))
	f.Add(ruleMap(append([]byte{0xd9, 13}, "notify_window"...), ruleKV("max_message_size", 1), ruleKV("x", 0xd4, 1, 1), ruleKV("x", 0xc0)))
	f.Add([]byte{0x80})
	f.Add([]byte{0xc0})
	f.Add([]byte{})

	f.Fuzz(func(t *testing.T, p []byte) {
		if len(p) > maxFramePayload {
			return // a SETTINGS payload is one frame
		}
		s, err := parseSettings(p)
		if want, ok := settingsOracle(p); ok != (err == nil) || (ok && want != s) {
			t.Fatalf("parseSettings(% x) = %+v, %v; PROTOCOL.md's rules, read with the msgpack library: %+v, %v", p, s, err, want, ok)
		}
		if err != nil {
			if !errors.Is(err, ErrProtocol) {
				t.Fatalf("error %v (%T) is not a *ProtocolError", err, err)
			}
			return
		}
		if s.MaxMessageSize < 1 || s.MaxMessageSize > maxMessageSizeLimit || s.NotifyWindow < 1 || s.NotifyWindow > maxNotifyWindow {
			t.Fatalf("accepted out-of-range settings %+v", s)
		}
		again, err := parseSettings(s.encode())
		if err != nil || again != s {
			t.Fatalf("round trip of %+v: %+v, %v", s, again, err)
		}
	})
}

// oracleString reads a msgpack string (not a binary, which the library
// would also read as a string).
func oracleString(d *msgpack.Decoder) (string, bool) {
	if c, err := d.PeekCode(); err != nil || !msgpcode.IsString(c) {
		return "", false
	}
	s, err := d.DecodeString()
	return s, err == nil
}

// errorBodyOracle applies PROTOCOL.md's rule for ERROR bodies, with the
// msgpack library doing the reading: one well-formed value, an array of
// exactly two strings.
func errorBodyOracle(body []byte) (*RemoteError, bool) {
	d, err := msgpackcheck.NewDecoder(body)
	if err != nil {
		return nil, false
	}
	if c, err := d.PeekCode(); err != nil || !(msgpcode.IsFixedArray(c) || c == msgpcode.Array16 || c == msgpcode.Array32) {
		return nil, false
	}
	if n, err := d.DecodeArrayLen(); err != nil || n != 2 {
		return nil, false
	}
	code, ok1 := oracleString(d)
	msg, ok2 := oracleString(d)
	return &RemoteError{Code: code, Message: msg}, ok1 && ok2
}

// settingsOracle applies PROTOCOL.md's rules for SETTINGS payloads, with
// the msgpack library doing the reading.
func settingsOracle(p []byte) (settings, bool) {
	d, err := msgpackcheck.NewDecoder(p)
	if err != nil {
		return settings{}, false
	}
	if c, err := d.PeekCode(); err != nil || !(msgpcode.IsFixedMap(c) || c == msgpcode.Map16 || c == msgpcode.Map32) {
		return settings{}, false
	}
	n, err := d.DecodeMapLen()
	if err != nil {
		return settings{}, false
	}
	vals := map[string]uint64{}
	for range n {
		key, ok := oracleString(d)
		if !ok {
			return settings{}, false
		}
		switch key {
		case "max_message_size", "notify_window", "max_handlers", "notify_bytes", "headers":
		default:
			if d.Skip() != nil {
				return settings{}, false
			}
			continue
		}
		if _, dup := vals[key]; dup {
			return settings{}, false
		}
		v, err := d.DecodeInterfaceLoose()
		switch x := v.(type) {
		case int64: // the library's reading of fixints and int 8..64
			if err != nil || x < 0 {
				return settings{}, false
			}
			vals[key] = uint64(x)
		case uint64:
			vals[key] = x
		default:
			return settings{}, false
		}
	}
	s := settings{vals["max_message_size"], vals["notify_window"], vals["max_handlers"], vals["notify_bytes"], vals["headers"]}
	_, hasMax := vals["max_message_size"]
	_, hasWindow := vals["notify_window"]
	if !hasMax || !hasWindow || s.MaxMessageSize < 1 || s.MaxMessageSize > maxMessageSizeLimit ||
		s.NotifyWindow < 1 || s.NotifyWindow > maxNotifyWindow || s.NotifyBytes > maxMessageSizeLimit {
		return settings{}, false
	}
	if s.NotifyBytes == 0 {
		s.NotifyBytes = DefaultNotifyBytes
	}
	return s, true
}

func FuzzCheckPreamble(f *testing.F) {
	f.Add(appendPreamble(nil, modeInsecure), byte(modeInsecure))
	f.Add(appendPreamble(nil, modeSecure), byte(modeInsecure))
	f.Add(appendPreamble(nil, modeInsecure), byte(modeSecure))
	f.Add(appendPreamble(nil, 9), byte(9))
	f.Add([]byte("bokbok\x02\x00"), byte(modeInsecure))
	f.Add([]byte("bokbox\x01\x00"), byte(modeInsecure))
	f.Add([]byte("GET / HTTP/1.1"), byte(modeInsecure))
	f.Add([]byte{0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01}, byte(modeInsecure))

	f.Fuzz(func(t *testing.T, p []byte, mode byte) {
		if len(p) < preambleSize {
			return // the reader only passes whole preambles
		}
		p = p[:preambleSize]
		err := checkPreamble(p, mode)
		switch {
		case string(p[:6]) != "bokbok":
			if !errors.Is(err, ErrProtocol) || !strings.Contains(err.Error(), "not speaking bokbok") {
				t.Fatalf("% x: %v, want a protocol error", p, err)
			}
		case p[6] != protocolVersion:
			if !errors.Is(err, ErrVersion) || !strings.Contains(err.Error(), "version "+strconv.Itoa(int(p[6]))) {
				t.Fatalf("% x: %v, want ErrVersion naming version %d", p, err, p[6])
			}
		case p[7] != mode:
			if !errors.Is(err, ErrMode) || !strings.Contains(err.Error(), modeName(p[7])) || !strings.Contains(err.Error(), modeName(mode)) {
				t.Fatalf("% x: %v, want ErrMode naming both modes", p, err)
			}
		default:
			if err != nil {
				t.Fatalf("% x: %v, want nil", p, err)
			}
			if !bytes.Equal(p, appendPreamble(nil, mode)) {
				t.Fatalf("accepted % x, our own is % x", p, appendPreamble(nil, mode))
			}
		}
	})
}

// --- message decoding ----------------------------------------------------

type robDecodeTarget struct {
	A int              `msgpack:"a"`
	B []string         `msgpack:"b"`
	C map[string]int   `msgpack:"c"`
	D []byte           `msgpack:"d"`
	E *robDecodeTarget `msgpack:"e"`
	F float64          `msgpack:"f"`
	G time.Time        `msgpack:"g"`
	H []any            `msgpack:"h"`
}

// robDecodeAll decodes raw into a value of every common shape (as a handler
// would with Request.Decode) and returns the interface decoding.
func robDecodeAll(raw []byte) (any, error) {
	var v any
	err := decodeValue(raw, &v, 0)
	var (
		s    string
		i    int64
		u    uint64
		b    bool
		fl   float64
		bs   []byte
		sl   []any
		ints []int
		arr  [4]int
		m    map[string]any
		mi   map[int]string
		st   robDecodeTarget
		rm   msgpack.RawMessage
		tm   time.Time
	)
	for _, out := range []any{&s, &i, &u, &b, &fl, &bs, &sl, &ints, &arr, &m, &mi, &st, &rm, &tm} {
		_ = decodeValue(raw, out, 0)
	}
	return v, err
}

func FuzzDecodeValue(f *testing.F) {
	for _, b := range robSampleBodies() {
		f.Add(b)
	}
	f.Add([]byte{0xc1})
	f.Add([]byte{0xc0, 0xc0})
	f.Add([]byte{0x92, 0x01})
	f.Add([]byte{0xd4, 0x01, 0x02})
	f.Add([]byte{0xd6, 0xff, 0, 0, 0, 1})
	f.Add([]byte{0x81, 0x01, 0x02})
	f.Add([]byte{0xdb, 0xff, 0xff, 0xff, 0xff, 'x'})
	f.Add([]byte{0xc6, 0x7f, 0xff, 0xff, 0xff})
	f.Add([]byte{})

	f.Fuzz(func(t *testing.T, raw []byte) {
		v, err := robDecodeAll(raw)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "bokbok: decoding message: ") {
				t.Fatalf("error %q lacks the package prefix", err)
			}
			return
		}
		// Exactly one value: a trailing byte is refused.
		var w any
		if err := decodeValue(append(bytes.Clone(raw), 0xc0), &w, 0); err == nil || !strings.Contains(err.Error(), "1 bytes left") {
			t.Fatalf("a trailing byte gave %v", err)
		}
		// What decodes re-encodes, and then re-encodes identically.
		enc1, err := robCanonical(v)
		if err != nil {
			t.Fatalf("re-encoding %#v: %v", v, err)
		}
		var v2 any
		if err := decodeValue(enc1, &v2, 0); err != nil {
			t.Fatalf("decoding the re-encoding % x: %v", enc1, err)
		}
		enc2, err := robCanonical(v2)
		if err != nil || !bytes.Equal(enc1, enc2) {
			t.Fatalf("re-encoding is unstable: % x then % x (%v)", enc1, enc2, err)
		}
	})
}

// robCanonical encodes v as the library does, with map keys sorted.
func robCanonical(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := msgpack.NewEncoder(&buf)
	enc.UseCompactInts(true)
	enc.SetSortMapKeys(true)
	err := enc.Encode(v)
	return buf.Bytes(), err
}

// --- addresses -----------------------------------------------------------

func FuzzParseAddr(f *testing.F) {
	for _, s := range []string{
		"", "sock", "localhost:7000", "[::1]:7000", ":7000", "tcp://localhost:7000", "tcp://[::1]:0",
		"./b.sock", "/run/app.sock", "dir/b.sock", "unix:///run/app.sock", "unix://rel.sock",
		"http://x:1", "tcp://x:1/p", "tcp://x", "x:99999", "x:http", "[::1]", "::1", "://", "a://b://c",
		"[fe80::1%eth0]:80", "tcp://:",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		a, err := ParseAddr(s)
		if err != nil {
			prefix := "bokbok: bad address " + strconv.Quote(s) + ": "
			if !strings.HasPrefix(err.Error(), prefix) || len(err.Error()) == len(prefix) {
				t.Fatalf("error %q should start with %q and say why", err, prefix)
			}
			if a != (Addr{}) {
				t.Fatalf("error with a non-zero Addr %#v", a)
			}
			return
		}
		switch a.Network {
		case "tcp":
			host, port, err := net.SplitHostPort(a.Address)
			if err != nil {
				t.Fatalf("%q: tcp address %q: %v", s, a.Address, err)
			}
			if p, err := strconv.ParseUint(port, 10, 16); err != nil || p > 65535 {
				t.Fatalf("%q: port %q", s, port)
			}
			_ = host
		case "unix":
			if a.Address == "" || !strings.Contains(a.Address, "/") {
				t.Fatalf("%q: unix path %q", s, a.Address)
			}
		default:
			t.Fatalf("%q: network %q", s, a.Network)
		}
		str := a.String()
		back, err := ParseAddr(str)
		if err != nil || back != a {
			t.Fatalf("ParseAddr(%q) = %#v; its String %q parses as %#v, %v", s, a, str, back, err)
		}
	})
}

// --- a whole connection --------------------------------------------------

// robConnSeeds are streams a peer might send after its opening: valid
// traffic made by the real encoders, and some broken variants.
func robConnSeeds() [][]byte {
	req := func(id uint32, timeout uint64, m any) []byte {
		return new(robWire).msg(kindRequest, 0, id, robMust(encodeRequestBody(timeout, m))).bytes()
	}
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	block := []byte(nil)
	for id := uint32(10); id < 16; id++ {
		block = append(block, req(id, 0, true)...) // true blocks the handler
	}
	var notes []byte
	for id := uint32(20); id < 26; id++ {
		notes = append(notes, new(robWire).msg(kindNotify, 0, id, robMust(encodeValueBody(id))).bytes()...)
	}
	seeds := [][]byte{
		{},
		req(3, 0, "hello"),
		req(3, 1000, map[string]any{"op": "add", "args": []int{2, 3}}),
		new(robWire).msg(kindRequest, flagNested, 4, robMust(encodeRequestBody(0, "nested"))).bytes(),
		new(robWire).msg(kindNotify, 0, 5, robMust(encodeValueBody([]any{"note", 1}))).bytes(),
		new(robWire).msg(kindResponse, 0, 1, robMust(encodeValueBody("answer"))).bytes(),
		new(robWire).msg(kindError, 0, 1, encodeErrorBody("app.code", "failed")).bytes(),
		new(robWire).control(kindPing, 0).control(kindPing, 9).control(kindPong, 1).bytes(),
		new(robWire).control(kindCancel, 3).control(kindGoAway, 0).bytes(),
		new(robWire).control(kindCredit, 1).bytes(),
		// Multi-frame messages, interleaved frame by frame.
		robInterleave(
			robFrames(kindRequest, 0, 6, robMust(encodeRequestBody(0, strings.Repeat("a", 100))), 20),
			robFrames(kindNotify, 0, 7, robMust(encodeValueBody(bytes.Repeat([]byte{1}, 50))), 9),
			robFrames(kindResponse, 0, 1, robMust(encodeValueBody([]any{"multi", "frame", "answer"})), 6),
		),
		cat(req(8, 0, true), new(robWire).control(kindCancel, 8).bytes()),
		block,
		notes,
		cat(new(robWire).control(kindGoAway, 0).bytes(), req(30, 0, "after goaway")),
		cat(req(3, 0, "x"), robRawHeader(0x0b, 0, 0, 1)),
		req(3, 0, "truncated")[:12],
		robFrameBytes(kindRequest, 0, 3, robBody(0x7fffffff, nil)),
	}
	return seeds
}

func FuzzConnStream(f *testing.F) {
	for _, s := range robConnSeeds() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, stream []byte) {
		leaks := goleak.IgnoreCurrent()
		robFeedConn(t, stream)
		goleak.VerifyNone(t, leaks)
	})
}

// robFeedConn opens a real Conn against a raw peer, starts a call (id 1),
// feeds stream as the peer's traffic, closes the peer's end and checks that
// the Conn ends cleanly.
func robFeedConn(t *testing.T, stream []byte) {
	closed := make(chan error, 1)
	cfg := &Config{
		Handler: HandlerFunc(func(ctx context.Context, req *Request) (any, error) {
			if bytes.Equal(req.Raw(), []byte{0xc3}) { // true: block
				<-ctx.Done()
				return nil, ctx.Err()
			}
			if req.IsNotification() {
				return nil, nil
			}
			return msgpack.RawMessage(req.Raw()), nil // echo
		}),
		OnClose:               func(_ *Conn, reason error) { closed <- reason },
		MaxMessageSize:        1 << 17,
		NotifyWindow:          4,
		MaxConcurrentHandlers: 2,
		MaxQueuedRequests:     2,
		KeepaliveInterval:     -1,
	}
	na, nb := net.Pipe()
	rp := startRobPeer(nb)
	defer rp.close()
	c, err := robNewConn(na, nb, cfg, robSettings)
	if err != nil {
		t.Fatalf("NewConn: %v", err)
	}
	defer c.Close()

	callErr := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, err := c.Request(ctx, "pending")
		callErr <- err
	}()
	// Wait until the call is on the wire, so a RESPONSE for id 1 finds it.
	deadline := time.After(5 * time.Second)
	for sawRequest := false; !sawRequest; {
		select {
		case f := <-rp.frames:
			sawRequest = f.kind == kindRequest
		case <-deadline:
			t.Fatal("the call's REQUEST never reached the peer")
		}
	}
	go robDiscard(rp)

	rp.write(stream)
	rp.close() // the end of the peer's traffic

	var reason error
	select {
	case reason = <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("the connection did not close after its peer did")
	}
	select {
	case <-c.Done():
	default:
		t.Fatal("OnClose ran before Done closed")
	}
	if !errors.Is(reason, ErrClosed) {
		t.Fatalf("close reason %v does not match ErrClosed", reason)
	}
	switch {
	case errors.Is(reason, io.EOF), errors.Is(reason, ErrShutdown), errors.Is(reason, io.ErrClosedPipe):
	case errors.Is(reason, ErrProtocol):
		var pe *ProtocolError
		if !errors.As(reason, &pe) || pe.Reason == "" {
			t.Fatalf("protocol error without a reason: %v", reason)
		}
	default:
		t.Fatalf("unexpected close reason %v", reason)
	}
	select {
	case err := <-callErr:
		var re *RemoteError
		// A reply that is not well-formed msgpack fails its call alone,
		// with a *ProtocolError.
		if err != nil && !errors.Is(err, ErrClosed) && !errors.As(err, &re) && !errors.Is(err, ErrProtocol) {
			t.Fatalf("the pending call ended with %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the pending call did not end")
	}
}

// robDiscard drains rp's frames until its reader ends.
func robDiscard(rp *robPeer) {
	for {
		select {
		case <-rp.frames:
		case <-rp.done:
			return
		}
	}
}
