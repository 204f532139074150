package bokbok

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Tests of core-protocol rules of PROTOCOL.md that an independent peer
// must get right, one test per rule. Each drives a real Conn from a raw
// peer that writes bytes by hand (the rob* harness of protocol_test.go,
// or the atk* secure-mode harness of secure_attack_test.go), and where a
// rule concerns bytes, checks that the spec shows them.

// ruleProtocolClose waits for rc to close on its own and checks that it
// closed with a *ProtocolError whose text contains want.
func ruleProtocolClose(t *testing.T, rc *robConn, want string) {
	t.Helper()
	err := robWaitClosed(t, rc.Conn)
	require.ErrorIs(t, err, ErrClosed)
	var pe *ProtocolError
	require.ErrorAs(t, err, &pe, "closed with %v", err)
	assert.Contains(t, err.Error(), want)
}

// ruleSynced returns once the Conn's reader has handled every frame the
// raw peer wrote before: it answers a PING only after them.
func ruleSynced(t *testing.T, rc *robConn) {
	t.Helper()
	rc.rp.write(robFrameBytes(kindPing, 0, 0x5eed, nil))
	for rc.rp.nextKind(t, kindPong).id != 0x5eed {
	}
}

// ruleCall makes a call the raw peer receives, and returns the REQUEST's
// id and a channel with the call's reply and error.
func ruleCall(t *testing.T, rc *robConn) (uint32, <-chan ruleResult) {
	t.Helper()
	ch := make(chan ruleResult, 1)
	ctx := testCtx(t)
	go func() {
		var r ruleResult
		r.err = rc.Call(ctx, "call", &r.reply)
		ch <- r
	}()
	return rc.rp.nextKind(t, kindRequest).id, ch
}

type ruleResult struct {
	reply string
	err   error
}

func ruleWait[T any](t *testing.T, ch <-chan T) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(5 * time.Second):
		t.Fatal("nothing within 5 s")
	}
	var zero T
	return zero
}

var ruleDocOnce = sync.OnceValues(func() ([]byte, error) { return os.ReadFile("PROTOCOL.md") })

// ruleDocHas fails the test unless PROTOCOL.md shows b: as a hex dump in a
// fenced block of its own, or inline (`xx xx`) if b fits on one line.
func ruleDocHas(t *testing.T, b []byte) {
	t.Helper()
	doc, err := ruleDocOnce()
	require.NoError(t, err)
	dump := hexDump(b)
	if os.Getenv("BOKBOK_PRINT_EXAMPLES") != "" {
		t.Logf("%s:\n%s", t.Name(), dump)
	}
	if bytes.Contains(doc, []byte("```\n"+dump+"\n```")) || (len(b) <= 16 && bytes.Contains(doc, []byte("`"+dump+"`"))) {
		return
	}
	t.Errorf("PROTOCOL.md lacks the hex dump\n%s", dump)
}

// TestRuleKindClass (§5): REQUEST and NOTIFY share one id space, RESPONSE
// and ERROR another. A frame continuing a message of its class must have
// the message's kind; messages of the two classes with the same id are
// unrelated.
func TestRuleKindClass(t *testing.T) {
	t.Run("refused", func(t *testing.T) {
		cases := []struct {
			name string
			send func(rc *robConn, pending uint32)
			want string
		}{
			{"NOTIFY continuing a REQUEST", func(rc *robConn, _ uint32) {
				rc.rp.write(robFrameBytes(kindRequest, 0, 5, robBody(4, []byte{0x00})))
				rc.rp.write(robFrameBytes(kindNotify, 0, 5, []byte{0xc0}))
			}, "NOTIFY frame continues a REQUEST with id 5"},
			{"REQUEST continuing a NOTIFY", func(rc *robConn, _ uint32) {
				rc.rp.write(robFrameBytes(kindNotify, 0, 5, robBody(2, []byte{0x91})))
				rc.rp.write(robFrameBytes(kindRequest, 0, 5, []byte{0xc0}))
			}, "REQUEST frame continues a NOTIFY with id 5"},
			{"ERROR continuing a RESPONSE", func(rc *robConn, p uint32) {
				rc.rp.write(robFrameBytes(kindResponse, 0, p, robBody(2, []byte{0x91})))
				rc.rp.write(robFrameBytes(kindError, 0, p, []byte{0xc0}))
			}, "ERROR frame continues a RESPONSE"},
			{"RESPONSE continuing an ERROR", func(rc *robConn, p uint32) {
				rc.rp.write(robFrameBytes(kindError, 0, p, robBody(3, []byte{0x92})))
				rc.rp.write(robFrameBytes(kindResponse, 0, p, []byte{0xa0, 0xa0}))
			}, "RESPONSE frame continues a ERROR"},
		}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				t.Parallel()
				rc := robOpen(t, nil, robSettings)
				p, call := ruleCall(t, rc)
				tc.send(rc, p)
				ruleProtocolClose(t, rc, tc.want)
				assert.ErrorIs(t, ruleWait(t, call).err, ErrProtocol)
			})
		}
	})

	t.Run("classes are unrelated", func(t *testing.T) {
		t.Parallel()
		g := newRuleGate()
		close(g.release)
		rc := robOpen(t, &Config{Handler: g}, robSettings)
		p, call := ruleCall(t, rc)
		// A REQUEST and a NOTIFY from the peer, with the id of the Conn's
		// own call, interleaved with the answer to that call.
		req := robRequestBody(t, "ping")
		req = robBody(uint32(len(req)), req)
		rc.rp.write(robFrameBytes(kindRequest, 0, p, req[:5]))
		rc.rp.write(robFrameBytes(kindNotify, 0, p+1, robBody(2, []byte{0x91})))
		reply, err := encodeValueBody("answer")
		require.NoError(t, err)
		rc.rp.write(robFrameBytes(kindResponse, 0, p, reply))
		rc.rp.write(robFrameBytes(kindRequest, 0, p, req[5:]))
		rc.rp.write(robFrameBytes(kindNotify, 0, p+1, []byte{0xc0}))

		r := ruleWait(t, call)
		require.NoError(t, r.err)
		assert.Equal(t, "answer", r.reply)
		var answer, credit *robFrame
		for answer == nil || credit == nil {
			switch f := rc.rp.next(t); f.kind {
			case kindResponse:
				answer = &f
			case kindCredit:
				credit = &f
			}
		}
		assert.Equal(t, p, answer.id, "the peer's request is answered")
		var s string
		require.NoError(t, decodeValue(answer.payload[bodyLenSize:], &s, 0))
		assert.Equal(t, "pong", s)
		assert.Equal(t, uint32(1), credit.id, "the notification is handled and credited")
		require.NoError(t, rc.Err())
	})
}

// TestRulePreambleMismatch (§2): a side sends its preamble and at most its
// first flight before it has checked the peer's preamble, and nothing
// after finding it wrong; it reports the mismatch without interpreting
// anything the peer sent after its preamble.
func TestRulePreambleMismatch(t *testing.T) {
	key := mustKey(t)
	const user = "alice"
	insecureFlight := append(appendPreamble(nil, modeInsecure), frameBytes(kindSettings, 0, 0,
		settings{MaxMessageSize: DefaultMaxMessageSize, NotifyWindow: DefaultNotifyWindow, MaxConcurrentHandlers: DefaultMaxConcurrentHandlers, Headers: headersVersion}.encode())...)
	sides := []struct {
		name string
		mode byte
		open func(ctx context.Context, nc net.Conn) (*Conn, error)
		// sent checks all the side sent before it closed the stream.
		sent func(t *testing.T, got []byte)
	}{
		{"insecure", modeInsecure,
			func(ctx context.Context, nc net.Conn) (*Conn, error) { return NewConn(ctx, nc, nil) },
			func(t *testing.T, got []byte) {
				assert.Equal(t, insecureFlight, got, "preamble and SETTINGS")
				ruleDocHas(t, got[:preambleSize])
			}},
		{"secure client", modeSecure,
			func(ctx context.Context, nc net.Conn) (*Conn, error) {
				return NewConn(ctx, nc, &Config{Key: &key, User: user})
			},
			func(t *testing.T, got []byte) {
				require.Greater(t, len(got), preambleSize+2)
				assert.Equal(t, appendPreamble(nil, modeSecure), got[:preambleSize])
				m1 := got[preambleSize:]
				assert.Equal(t, 1+len(user)+noiseDHLen+1+noiseTagLen, int(m1[0])<<8|int(m1[1]), "message 1's length")
				assert.Len(t, m1, 2+(int(m1[0])<<8|int(m1[1])), "preamble and message 1, nothing more")
			}},
		{"secure server", modeSecure,
			func(ctx context.Context, nc net.Conn) (*Conn, error) {
				srv := &Server{UserKey: func(string) (Key, bool) { return key, true }}
				defer srv.Close()
				return srv.ServeConn(ctx, nc)
			},
			func(t *testing.T, got []byte) {
				assert.Equal(t, appendPreamble(nil, modeSecure), got, "the preamble alone")
			}},
	}
	peers := []struct {
		name     string
		preamble func(mode byte) []byte
		want     error
	}{
		{"not bokbok", func(byte) []byte { return []byte("HELLO!\r\n") }, ErrProtocol},
		{"version 2", func(mode byte) []byte { return append([]byte("bokbok\x02"), mode) }, ErrVersion},
		{"other mode", func(mode byte) []byte { return append([]byte("bokbok\x01"), 1-mode) }, ErrMode},
	}
	for _, side := range sides {
		for _, peer := range peers {
			t.Run(side.name+"/"+peer.name, func(t *testing.T) {
				t.Parallel()
				na, nb := net.Pipe()
				defer nb.Close()
				got := make(chan []byte, 1)
				go func() {
					b, _ := io.ReadAll(nb)
					got <- b
				}()
				// Behind its preamble the peer sends what a first flight
				// might hold, and garbage: none of it may be interpreted.
				behind := append(frameBytes(kindSettings, 0, 0, robSettings.encode()), bytes.Repeat([]byte{0xff}, 64)...)
				go nb.Write(append(peer.preamble(side.mode), behind...))

				c, err := side.open(testCtx(t), na)
				if c != nil {
					c.Close()
				}
				require.ErrorIs(t, err, peer.want)
				side.sent(t, ruleWait(t, got))
			})
		}
	}
}

// ruleKV is one msgpack map entry, key and value, as raw bytes.
func ruleKV(key string, value ...byte) []byte {
	k, _ := appendEncoded(nil, key)
	return append(k, value...)
}

// ruleMap is a fixmap of the given entries.
func ruleMap(entries ...[]byte) []byte {
	return append([]byte{0x80 | byte(len(entries))}, bytes.Join(entries, nil)...)
}

// TestRuleSettingsValues (§4): the SETTINGS payload is one well-formed map
// with string keys; each known key at most once, with a non-negative
// integer in range; max_message_size and notify_window present; unknown
// keys ignored whatever their values and however often they appear.
// Every case goes through a real opening as well as through the parser.
func TestRuleSettingsValues(t *testing.T) {
	mms := func(v ...byte) []byte { return ruleKV("max_message_size", v...) }
	nw := func(v ...byte) []byte { return ruleKV("notify_window", v...) }
	str8Key := append([]byte{0xd9, 16}, "max_message_size"...)
	deep := append(bytes.Repeat([]byte{0x91}, 257), 0xc0)
	ok := func(mm, w, h, nb uint64) settings { return settings{mm, w, h, nb, 0} }
	cases := []struct {
		name    string
		payload []byte
		doc     bool     // PROTOCOL.md shows this payload (section 14)
		want    settings // if accepted
		err     string   // if refused: part of the reason
	}{
		{name: "the two required keys", doc: true, payload: ruleMap(mms(0x01), nw(0x01)),
			want: ok(1, 1, 0, DefaultNotifyBytes)},
		{name: "other encodings, unknown keys, a repeated unknown key", doc: true,
			payload: ruleMap(append(str8Key, 0xd2, 0, 1, 0, 0), nw(0x01), ruleKV("x", 0x91, 0xa1, 'y'), ruleKV("x", 0xc0)),
			want:    ok(65536, 1, 0, DefaultNotifyBytes)},
		{name: "every key, at the top of its range",
			payload: ruleMap(mms(0xce, 0x7f, 0xff, 0xff, 0xff), nw(0xd3, 0, 0, 0, 0, 0, 0x10, 0, 0),
				ruleKV("max_handlers", 0xcf, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff), ruleKV("notify_bytes", 0xce, 0x7f, 0xff, 0xff, 0xff)),
			want: ok(maxMessageSizeLimit, maxNotifyWindow, 1<<64-1, maxMessageSizeLimit)},
		{name: "notify_bytes 0 means the default", payload: ruleMap(mms(1), nw(1), ruleKV("notify_bytes", 0)),
			want: ok(1, 1, 0, DefaultNotifyBytes)},
		{name: "unknown keys with maps, extensions, floats", payload: ruleMap(mms(1), nw(1),
			ruleKV("m", 0x81, 0xa1, 'k', 0xcb, 0x3f, 0xf0, 0, 0, 0, 0, 0, 0), ruleKV("e", 0xd4, 0x01, 0x00), ruleKV("f", 0xca, 0, 0, 0, 0)),
			want: ok(1, 1, 0, DefaultNotifyBytes)},

		{name: "negative max_handlers", doc: true, payload: ruleMap(mms(1), nw(1), ruleKV("max_handlers", 0xff)),
			err: "max_handlers is not a non-negative msgpack integer"},
		{name: "negative int8", payload: ruleMap(mms(1), nw(0xd0, 0xfe)),
			err: "notify_window is not a non-negative msgpack integer"},
		{name: "integral float", doc: true, payload: ruleMap(mms(0xcb, 0x3f, 0xf0, 0, 0, 0, 0, 0, 0), nw(1)),
			err: "max_message_size is not a non-negative msgpack integer"},
		{name: "nil", payload: ruleMap(mms(1), nw(0xc0)), err: "notify_window is not a non-negative msgpack integer"},
		{name: "string", payload: ruleMap(mms(0xa1, '1'), nw(1)), err: "max_message_size is not a non-negative msgpack integer"},
		{name: "boolean", payload: ruleMap(mms(1), nw(1), ruleKV("max_handlers", 0xc3)), err: "max_handlers is not"},
		{name: "repeated key", doc: true, payload: ruleMap(mms(1), nw(1), nw(1)), err: "notify_window appears more than once"},
		{name: "binary key", doc: true, payload: ruleMap(mms(1), nw(1), []byte{0xc4, 1, 'x', 1}), err: "SETTINGS key of msgpack type 0xc4"},
		{name: "integer key", payload: ruleMap(mms(1), nw(1), []byte{0x01, 0x01}), err: "SETTINGS key of msgpack type 0x01"},
		{name: "missing notify_window", doc: true, payload: ruleMap(mms(1)), err: "lacks notify_window"},
		{name: "missing max_message_size", payload: ruleMap(nw(1)), err: "lacks max_message_size"},
		{name: "out of range", payload: ruleMap(mms(1), nw(0xce, 0, 0x10, 0, 1)), err: "notify_window 1048577 out of range"},
		{name: "an array", payload: []byte{0x92, 0x01, 0x01}, err: "want a map"},
		{name: "bytes after the map", payload: append(ruleMap(mms(1), nw(1)), 0xc0), err: "bytes left after"},
		{name: "an unknown value nested too deep", payload: ruleMap(mms(1), nw(1), ruleKV("x", deep...)), err: "nested deeper than 256"},
		{name: "empty", payload: nil, err: "bad SETTINGS payload"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if tc.doc {
				ruleDocHas(t, tc.payload)
			}
			s, err := parseSettings(tc.payload)
			if tc.err == "" {
				require.NoError(t, err)
				assert.Equal(t, tc.want, s)
			} else {
				require.ErrorIs(t, err, ErrProtocol)
				assert.Contains(t, err.Error(), tc.err)
			}

			// The same payload in a real opening.
			na, nb := net.Pipe()
			rp := startRobPeer(nb)
			defer rp.close()
			opening := append(appendPreamble(nil, modeInsecure), frameBytes(kindSettings, 0, 0, tc.payload)...)
			go rp.write(opening)
			c, err := NewConn(testCtx(t), na, &Config{KeepaliveInterval: -1})
			if tc.err == "" {
				require.NoError(t, err)
				assert.Equal(t, tc.want, c.peer)
				c.Close()
			} else {
				require.ErrorIs(t, err, ErrProtocol)
				assert.Contains(t, err.Error(), tc.err)
			}
		})
	}
}

// TestRuleErrorBody (§5): an ERROR body is exactly an array of two
// strings; anything else is a protocol error that ends the connection.
func TestRuleErrorBody(t *testing.T) {
	cases := []struct {
		name string
		body []byte
		doc  bool         // PROTOCOL.md shows this body (section 5)
		want *RemoteError // nil: refused
	}{
		{"two empty strings", []byte{0x92, 0xa0, 0xa0}, true, &RemoteError{}},
		{"longer encodings", []byte{0xdc, 0, 2, 0xd9, 1, 'c', 0xda, 0, 1, 'm'}, true, &RemoteError{Code: "c", Message: "m"}},
		{"array 32, str 32", []byte{0xdd, 0, 0, 0, 2, 0xdb, 0, 0, 0, 1, 'c', 0xa0}, false, &RemoteError{Code: "c"}},
		{"not UTF-8", []byte{0x92, 0xa1, 0xff, 0xa1, 0x00}, false, &RemoteError{Code: "\xff", Message: "\x00"}},
		{"[1, 2]", []byte{0x92, 0x01, 0x02}, true, nil},
		{"a string", []byte{0xa1, 'x'}, true, nil},
		{"three strings", []byte{0x93, 0xa1, 'a', 0xa1, 'b', 0xa1, 'c'}, true, nil},
		{"one string", []byte{0x91, 0xa1, 'a'}, true, nil},
		{"nil", []byte{0xc0}, true, nil},
		{"two binaries", []byte{0x92, 0xc4, 1, 'a', 0xc4, 1, 'b'}, true, nil},
		{"bytes after the array", []byte{0x92, 0xa0, 0xa0, 0xc0}, true, nil},
		{"[nil, nil]", []byte{0x92, 0xc0, 0xc0}, false, nil},
		{"empty array", []byte{0x90}, false, nil},
		{"a map", ruleMap(ruleKV("Code", 0xa1, 'c'), ruleKV("Message", 0xa1, 'm')), false, nil},
		{"string longer than the body", []byte{0x92, 0xa5, 'a', 0xa0}, false, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if tc.doc {
				ruleDocHas(t, tc.body)
			}
			re, err := parseErrorBody(tc.body)
			if tc.want != nil {
				require.NoError(t, err)
				assert.Equal(t, tc.want, re)
			} else {
				require.ErrorIs(t, err, ErrProtocol)
			}

			rc := robOpen(t, nil, robSettings)
			p, call := ruleCall(t, rc)
			rc.rp.write(robMsgFrame(kindError, p, tc.body))
			err = ruleWait(t, call).err
			if tc.want != nil {
				var got *RemoteError
				require.ErrorAs(t, err, &got)
				assert.Equal(t, tc.want, got)
				ruleSynced(t, rc)
				require.NoError(t, rc.Err(), "the connection stays open")
				return
			}
			assert.ErrorIs(t, err, ErrClosed)
			assert.ErrorIs(t, err, ErrProtocol)
			ruleProtocolClose(t, rc, "ERROR body is not [code, message]")
		})
	}
}

// TestRuleRequestIDReuse (§6): a REQUEST or NOTIFY whose id is that of a
// request received whole and not yet answered (queued or running) is a
// protocol error. Once the answer has been sent the id is free again, at
// once: a peer that reuses it the moment the answer arrives is served.
func TestRuleRequestIDReuse(t *testing.T) {
	block := robMsgFrame(kindRequest, 5, robRequestBody(t, "block"))
	t.Run("refused", func(t *testing.T) {
		cases := []struct {
			name  string
			cfg   *Config
			first [][]byte // frames that leave request 5 unanswered
			again []byte   // the frame reusing id 5
		}{
			{name: "REQUEST while running", first: [][]byte{block}, again: block},
			{name: "NOTIFY while running", first: [][]byte{block},
				again: robMsgFrame(kindNotify, 5, []byte{0xc0})},
			{name: "REQUEST while queued", cfg: &Config{MaxConcurrentHandlers: 1},
				first: [][]byte{robMsgFrame(kindRequest, 4, robRequestBody(t, "block")), block}, again: block},
		}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				t.Parallel()
				rc := robOpen(t, tc.cfg, robSettings)
				for _, f := range tc.first {
					rc.rp.write(f)
				}
				rc.rp.write(tc.again)
				ruleProtocolClose(t, rc, "with id 5, which a running request still holds")
			})
		}
	})

	t.Run("free once answered", func(t *testing.T) {
		t.Parallel()
		rc := robOpen(t, nil, robSettings)
		ping := robMsgFrame(kindRequest, 5, robRequestBody(t, "ping"))
		// Reuse the id the moment each answer arrives, so that a receiver
		// that frees the id only some time after sending the answer fails.
		for range 2000 {
			rc.rp.write(ping)
			require.Equal(t, "", hostileAnswer(t, rc.rp, 5))
		}
		require.NoError(t, rc.Err())
	})

	t.Run("free once refused or cancelled", func(t *testing.T) {
		t.Parallel()
		rc := robOpen(t, &Config{MaxConcurrentHandlers: 1, MaxQueuedRequests: 1}, robSettings)
		rc.rp.write(robMsgFrame(kindRequest, 4, robRequestBody(t, "block"))) // takes the one slot
		rc.rp.write(block)                                                   // queued
		rc.rp.write(robFrameBytes(kindCancel, 0, 5, nil))
		require.Equal(t, CodeCanceled, hostileAnswer(t, rc.rp, 5))
		rc.rp.write(block) // queued again
		rc.rp.write(robMsgFrame(kindRequest, 6, robRequestBody(t, "block")))
		require.Equal(t, CodeBusy, hostileAnswer(t, rc.rp, 6), "the queue is full")
		rc.rp.write(robMsgFrame(kindRequest, 6, robRequestBody(t, "block")))
		require.Equal(t, CodeBusy, hostileAnswer(t, rc.rp, 6), "a refused request's id is free at once")
		ruleSynced(t, rc)
		require.NoError(t, rc.Err())
	})
}

// ruleGate is a Handler whose notifications each wait for a token on
// release; entered receives one value per notification started. Requests
// go to the blocking handler of the rob harness.
type ruleGate struct {
	entered, release chan struct{}
}

func newRuleGate() *ruleGate {
	return &ruleGate{entered: make(chan struct{}, 64), release: make(chan struct{}, 64)}
}

func (g *ruleGate) ServeBokbok(ctx context.Context, req *Request) (any, error) {
	if !req.IsNotification() {
		return robBlockingHandler(ctx, req)
	}
	g.entered <- struct{}{}
	select {
	case <-g.release:
	case <-ctx.Done():
	}
	return nil, nil
}

// TestRuleCreditWhenIdle (§7): a receiver may hold back CREDIT while a
// whole notification waits to be handled, and must credit everything it
// has handled as soon as none does.
func TestRuleCreditWhenIdle(t *testing.T) {
	note := func(id uint32) []byte { return robMsgFrame(kindNotify, id, []byte{0xc0}) }

	t.Run("a lone notification", func(t *testing.T) {
		t.Parallel()
		g := newRuleGate()
		rc := robOpen(t, &Config{Handler: g}, robSettings) // notify_window 256: batches of 64
		g.release <- struct{}{}
		rc.rp.write(note(1))
		assert.Equal(t, uint32(1), rc.rp.nextKind(t, kindCredit).id)
	})

	t.Run("the next still arriving", func(t *testing.T) {
		t.Parallel()
		g := newRuleGate()
		rc := robOpen(t, &Config{Handler: g}, robSettings)
		rc.rp.write(note(1))
		ruleWait(t, g.entered)
		rc.rp.write(robFrameBytes(kindNotify, 0, 3, robBody(2, []byte{0x91}))) // half of [nil]
		ruleSynced(t, rc)
		g.release <- struct{}{}
		assert.Equal(t, uint32(1), rc.rp.nextKind(t, kindCredit).id, "credit for the first, without waiting for the second")
		rc.rp.write(robFrameBytes(kindNotify, 0, 3, []byte{0xc0}))
		ruleWait(t, g.entered)
		g.release <- struct{}{}
		assert.Equal(t, uint32(1), rc.rp.nextKind(t, kindCredit).id, "credit for the second")
	})

	t.Run("batches while notifications wait", func(t *testing.T) {
		t.Parallel()
		g := newRuleGate()
		rc := robOpen(t, &Config{Handler: g, NotifyWindow: 16}, robSettings)
		rc.rp.write(note(1))
		ruleWait(t, g.entered)
		for id := uint32(2); id <= 10; id++ {
			rc.rp.write(note(id))
		}
		ruleSynced(t, rc) // all ten arrived while the first was being handled
		for range 10 {
			g.release <- struct{}{}
		}
		var credits []byte
		for total := uint32(0); total < 10; {
			f := rc.rp.nextKind(t, kindCredit)
			total += f.id
			credits = append(credits, robFrameBytes(kindCredit, 0, f.id, nil)...)
		}
		ruleDocHas(t, credits) // CREDIT 4, 4, 2
		ruleSynced(t, rc)
		require.NoError(t, rc.Err())
	})

	t.Run("the peer's graceful shutdown", func(t *testing.T) {
		t.Parallel()
		g := newRuleGate()
		close(g.release)
		rc := robOpen(t, &Config{Handler: g}, robSettings)
		for id := uint32(1); id <= 3; id++ {
			rc.rp.write(note(id))
		}
		rc.rp.write(robFrameBytes(kindGoAway, 0, 0, nil))
		credited := uint32(0)
		goAway := false
		for credited < 3 || !goAway {
			switch f := rc.rp.next(t); f.kind {
			case kindCredit:
				credited += f.id
			case kindGoAway:
				goAway = true
			}
		}
		assert.Equal(t, uint32(3), credited)
		rc.rp.close() // the raw peer's drain is complete: it closes
		assert.ErrorIs(t, robWaitClosed(t, rc.Conn), ErrShutdown)
	})
}

// TestRuleCloseRecordOnlyOnPurpose (§12): in secure mode a side sends a
// CLOSE record when it ends the connection on purpose, and never when it
// closes because something went wrong; its peer then sees a truncation.
func TestRuleCloseRecordOnlyOnPurpose(t *testing.T) {
	alice := mustKey(t)
	cases := []struct {
		name   string
		cfg    Config
		act    func(t *testing.T, s *Conn, srv *Server, raw *atkRaw, frames <-chan frameHeader)
		reason error // the server's close reason matches it
		close  bool  // the server sends CLOSE
	}{
		{name: "protocol error", reason: ErrProtocol,
			act: func(t *testing.T, _ *Conn, _ *Server, raw *atkRaw, _ <-chan frameHeader) {
				raw.rw.Write(robRawHeader(0x42, 0, 0, 0))
				raw.rw.Flush()
			}},
		{name: "bad ERROR body", reason: ErrProtocol,
			act: func(t *testing.T, s *Conn, _ *Server, raw *atkRaw, frames <-chan frameHeader) {
				go s.Request(context.Background(), "x")
				h := ruleWait(t, frames)
				require.Equal(t, kindRequest, h.kind)
				raw.rw.Write(robMsgFrame(kindError, h.id, []byte{0x92, 0x01, 0x02}))
				raw.rw.Flush()
			}},
		{name: "keepalive timeout", reason: ErrKeepaliveTimeout,
			cfg: Config{KeepaliveInterval: 20 * time.Millisecond, KeepaliveTimeout: 20 * time.Millisecond},
			act: func(*testing.T, *Conn, *Server, *atkRaw, <-chan frameHeader) {}},
		{name: "Conn.Close", close: true, reason: ErrClosed,
			act: func(_ *testing.T, s *Conn, _ *Server, _ *atkRaw, _ <-chan frameHeader) { s.Close() }},
		{name: "Server.Close", close: true, reason: ErrClosed,
			act: func(_ *testing.T, _ *Conn, srv *Server, _ *atkRaw, _ <-chan frameHeader) { srv.Close() }},
		{name: "the peer's CLOSE", close: true, reason: io.EOF,
			act: func(_ *testing.T, _ *Conn, _ *Server, raw *atkRaw, _ <-chan frameHeader) {
				raw.rw.close(time.Now().Add(5 * time.Second))
			}},
		{name: "graceful shutdown", close: true, reason: ErrShutdown,
			act: func(t *testing.T, s *Conn, _ *Server, raw *atkRaw, frames <-chan frameHeader) {
				go s.Shutdown(context.Background())
				require.Equal(t, kindGoAway, ruleWait(t, frames).kind)
				raw.rw.Write(robFrameBytes(kindGoAway, 0, 0, nil))
				raw.rw.Flush()
			}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv, _ := atkServer(map[string]Key{"alice": alice}, tc.cfg)
			defer atkStopServer(srv)
			a, b := net.Pipe()
			defer a.Close()
			served := atkServeConn(srv, b)
			raw := atkRawOpen(t, a, alice, "alice")
			s := atkRecv(t, served, "ServeConn")
			require.NoError(t, s.err)

			// Read the server's frames until its stream ends; the end says
			// whether it sent CLOSE (io.EOF) or not (ErrTruncated).
			frames := make(chan frameHeader, 16)
			end := make(chan error, 1)
			go func() {
				fr := frameReader{r: raw.rr}
				for {
					h, _, err := fr.next()
					if err != nil {
						end <- err
						return
					}
					if h.kind != kindPing {
						frames <- h
					}
				}
			}()
			tc.act(t, s.c, srv, raw, frames)

			reason := atkDone(t, s.c, "the server's connection")
			assert.ErrorIs(t, reason, tc.reason)
			err := ruleWait(t, end)
			if tc.close {
				assert.ErrorIs(t, err, io.EOF, "the server sent CLOSE")
			} else {
				assert.ErrorIs(t, err, ErrTruncated, "the server sent no CLOSE")
				assert.False(t, errors.Is(err, io.EOF))
			}
		})
	}
}
