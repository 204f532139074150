package ocapn

import (
	"fmt"
	"io"
	"net"
	"testing"
	"time"

	"github.com/bokbok-go/bokbok/ocapn/syrup"
)

// FuzzSessionMessages sends a node, after a valid op:start-session,
// whatever bytes the fuzzer makes: the node may abort or close the
// session, but must not panic, hang or stop serving others.
func FuzzSessionMessages(f *testing.F) {
	seed := func(msgs ...syrup.Record) []byte {
		var out []byte
		for _, m := range msgs {
			b, err := syrup.Marshal(m)
			if err != nil {
				f.Fatal(err)
			}
			out = append(out, b...)
		}
		return out
	}
	fetch := syrup.Record{Label: sym("op:deliver"), Fields: []any{exportDesc(0), []any{sym("fetch"), swissEcho}, int64(0), importObj(1)}}
	f.Add(seed(fetch))
	f.Add(seed(fetch, syrup.Record{Label: sym("op:deliver"), Fields: []any{answerDesc(0), []any{importObj(2), []any{answerDesc(0)}}, int64(1), importObj(3)}}))
	f.Add(seed(fetch, syrup.Record{Label: sym("op:listen"), Fields: []any{answerDesc(0), importObj(4), true}}))
	f.Add(seed(syrup.Record{Label: sym("op:gc-export"), Fields: []any{[]any{int64(0), int64(9)}, []any{int64(1), int64(1)}}},
		syrup.Record{Label: sym("op:gc-answer"), Fields: []any{[]any{int64(0)}}}))
	f.Add(seed(syrup.Record{Label: sym("op:deliver-only"), Fields: []any{exportDesc(0), []any{sym("deposit-gift"), []byte("g"), exportDesc(0)}}},
		syrup.Record{Label: sym("op:deliver"), Fields: []any{exportDesc(0), []any{sym("withdraw-gift"),
			syrup.Record{Label: sym("desc:sig-envelope"), Fields: []any{syrup.Record{Label: sym("desc:handoff-receive"), Fields: []any{}}, []any{}}}}, false, importObj(5)}}))
	f.Add(seed(syrup.Record{Label: sym("op:abort"), Fields: []any{"bye"}}))
	f.Add([]byte("<10'op:deliver<10'desc:export0+>[5'fetch32:"))

	_, nl := testNode(f, Config{HandshakeTimeout: time.Second, Syrup: syrup.Limits{MaxBytes: 1 << 16, MaxValues: 4096}})
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := net.Dial("tcp", nl.ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		key, _ := newSessionKey()
		p := &rawPeer{t: t, c: c, key: key, loc: Peer{Transport: TestingOnlyTransport, Designator: fmt.Sprintf("fuzz%p", c), Hints: map[string]string{"host": "127.0.0.1", "port": "1"}}}
		hello, _ := startSessionMessage(p.key, p.loc)
		c.SetDeadline(time.Now().Add(5 * time.Second))
		c.Write(append(hello, data...))
		// Read what comes back for a moment, so answers do not pile up
		// in the kernel, then hang up.
		c.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
		io.Copy(io.Discard, c)
	})
}
