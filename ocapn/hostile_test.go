package ocapn

import (
	"net"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/bokbok-go/bokbok/ocapn/syrup"
)

// Hostile peers on raw sockets: whatever a peer sends, it ends its own
// session (with op:abort where the draft says so) and the node, its other
// sessions and its goroutines carry on.

// stillServes checks the node answers a fresh, well-behaved peer.
func stillServes(t testing.TB, nl *TestingOnlyTCP) {
	t.Helper()
	p := dialRaw(t, nl)
	p.hello()
	p.fetch(swissGreeter)
}

func TestHostileBytesEndTheSession(t *testing.T) {
	cases := map[string]func(p *rawPeer) []byte{
		"not Syrup":                func(*rawPeer) []byte { return []byte("GET / HTTP/1.1\r\n\r\n") },
		"a byte string of 1 GB":    func(*rawPeer) []byte { return []byte("1000000000:") },
		"an integer of 1e6 digits": func(*rawPeer) []byte { return []byte(strings.Repeat("9", 1_000_000) + "+") },
		"lists 100,000 deep":       func(*rawPeer) []byte { return []byte(strings.Repeat("[", 100_000)) },
		"a list of 1e6 values": func(*rawPeer) []byte {
			return []byte("<10'op:deliver" + "[" + strings.Repeat("t", 1_000_000) + "]>")
		},
		"after a valid hello, garbage": func(p *rawPeer) []byte {
			b, _ := startSessionMessage(p.key, p.loc)
			return append(b, "\xff\xfe"...)
		},
		"after a valid hello, a message that is not a record": func(p *rawPeer) []byte {
			b, _ := startSessionMessage(p.key, p.loc)
			return append(b, "[1+2+]"...)
		},
	}
	_, nl := testNode(t, Config{})
	for name, payload := range cases {
		t.Run(name, func(t *testing.T) {
			p := dialRaw(t, nl)
			p.c.Write(payload(p))
			closed, _ := p.closedSoon()
			assert.True(t, closed, "the node closes the connection")
			stillServes(t, nl)
		})
	}
}

// sessionAborts sends msgs after a hello and checks the node aborts the
// session and goes on serving.
func sessionAborts(t *testing.T, nl *TestingOnlyTCP, msgs ...any) {
	t.Helper()
	p := dialRaw(t, nl)
	p.hello()
	for _, m := range msgs {
		b, err := syrup.Marshal(m)
		require.NoError(t, err)
		if _, err := p.c.Write(b); err != nil {
			break // the node closed already
		}
	}
	closed, got := p.closedSoon()
	require.True(t, closed, "the node closes the session")
	require.NotEmpty(t, got)
	assert.Equal(t, sym("op:abort"), got[len(got)-1].Label, "the last word is op:abort")
	stillServes(t, nl)
}

func TestTablesAPeerFillsAreBounded(t *testing.T) {
	const limit = 8
	_, nl := testNode(t, Config{MaxImports: limit, MaxAnswers: limit})
	t.Run("imports beyond MaxImports", func(t *testing.T) {
		var descs []any
		for i := range limit + 1 {
			descs = append(descs, importObj(i+1))
		}
		sessionAborts(t, nl, syrup.Record{Label: sym("op:deliver-only"), Fields: []any{exportDesc(0), descs}})
	})
	t.Run("answers beyond MaxAnswers", func(t *testing.T) {
		// Answers stay open until the peer gives them back
		// (op:gc-answer), which this one never does.
		var msgs []any
		for i := range limit + 1 {
			msgs = append(msgs, syrup.Record{Label: sym("op:deliver"), Fields: []any{exportDesc(0),
				[]any{sym("fetch"), swissGreeter}, int64(i), false}})
		}
		sessionAborts(t, nl, msgs...)
	})
	t.Run("a message to an export never made", func(t *testing.T) {
		sessionAborts(t, nl, syrup.Record{Label: sym("op:deliver-only"), Fields: []any{exportDesc(77), []any{}}})
	})
	t.Run("an answer position opened twice", func(t *testing.T) {
		m := syrup.Record{Label: sym("op:deliver"), Fields: []any{exportDesc(0), []any{sym("fetch"), swissGreeter}, int64(5), false}}
		sessionAborts(t, nl, m, m)
	})
	t.Run("an unknown operation", func(t *testing.T) {
		sessionAborts(t, nl, syrup.Record{Label: sym("op:launch-missiles"), Fields: []any{}})
	})
	t.Run("a second hello", func(t *testing.T) {
		p := dialRaw(t, nl)
		sessionAborts(t, nl, p.startRecord())
	})
}

func TestGiftsAPeerDepositsAreBounded(t *testing.T) {
	const limit = 4
	_, nl := testNode(t, Config{MaxGifts: limit})
	p := dialRaw(t, nl)
	p.hello()
	greeter := p.fetch(swissGreeter)
	var lastRes int
	for i := range limit + 1 {
		lastRes, _ = p.deliver(exportDesc(0), []any{sym("deposit-gift"), []byte{byte(i)}, exportDesc(greeter)}, false)
	}
	got := p.resolution(lastRes)
	assert.Equal(t, sym("break"), got[0], "the deposit beyond MaxGifts is refused: %v", got)
	p.fetch(swissGreeter) // and the session goes on
}

func TestHandoffsAPeerGivesAreBounded(t *testing.T) {
	const limit = 3
	_, nl := testNode(t, Config{MaxGifts: limit})
	g := dialRaw(t, nl)
	g.hello()
	echo := g.fetch(swissEcho)
	exporter := listenRaw(t) // accepts, never answers
	geKey, _ := newSessionKey()
	var results []int
	for i := range limit + 1 {
		give := signedGive(t, geKey, g.them, exporter.loc, make([]byte, 32), []byte{byte(i)})
		res, _ := g.deliver(exportDesc(echo), []any{give}, false)
		results = append(results, res)
	}
	got := g.resolution(results[limit])
	assert.Equal(t, sym("break"), got[0], "the handoff beyond MaxGifts breaks its message: %v", got)
}

// TestAPeerThatDoesNotReadLosesItsSession: a peer that sends requests
// and never reads the answers fills the node's outbox (MaxQueued) and
// the kernel's buffers; the node ends that session instead of holding
// more, and its goroutines end.
func TestAPeerThatDoesNotReadLosesItsSession(t *testing.T) {
	_, nl := testNode(t, Config{MaxQueued: 16})
	before := runtime.NumGoroutine()
	p := dialRaw(t, nl)
	p.c.(*net.TCPConn).SetReadBuffer(4096)
	p.hello()
	echo := p.fetch(swissEcho)
	big := strings.Repeat("x", 60_000)
	deadline := time.Now().Add(20 * time.Second)
	var err error
	for err == nil && time.Now().Before(deadline) {
		b, _ := syrup.Marshal(syrup.Record{Label: sym("op:deliver"), Fields: []any{exportDesc(echo), []any{big}, false, importObj(p.newImport())}})
		p.c.SetWriteDeadline(time.Now().Add(2 * time.Second))
		_, err = p.c.Write(b)
	}
	require.Error(t, err, "the node stopped reading from this peer, or closed it")
	stillServes(t, nl)
	require.Eventually(t, func() bool { return runtime.NumGoroutine() <= before+4 }, 10*time.Second, 20*time.Millisecond,
		"the session's goroutines end")
}

func TestSilentConnectionsAreClosedAfterTheHandshakeTimeout(t *testing.T) {
	_, nl := testNode(t, Config{HandshakeTimeout: 200 * time.Millisecond})
	var peers []*rawPeer
	for range 20 {
		peers = append(peers, dialRaw(t, nl))
	}
	for _, p := range peers {
		closed, got := p.closedSoon()
		assert.True(t, closed)
		assert.Empty(t, got, "nothing is said to a peer that said nothing")
	}
	stillServes(t, nl)
}

// TestConnectionsAreBounded: beyond MaxSessions, a connection is closed
// at once; once one ends, a new one is served.
func TestConnectionsAreBounded(t *testing.T) {
	const limit = 3
	_, nl := testNode(t, Config{MaxSessions: limit})
	var held []*rawPeer
	for range limit {
		p := dialRaw(t, nl)
		p.hello()
		held = append(held, p)
	}
	extra := dialRaw(t, nl)
	closed, got := extra.closedSoon()
	assert.True(t, closed, "the connection beyond the limit is closed")
	assert.Empty(t, got)

	held[0].c.Close()
	require.Eventually(t, func() bool {
		p := dialRaw(t, nl)
		p.send(p.startRecord())
		r, err := p.recv()
		return err == nil && r.Label == sym("op:start-session")
	}, 10*time.Second, 50*time.Millisecond, "a session is served again")
}

// TestMessagesWaitingOnPromisesAreBounded: a peer that piles messages on
// a promise of the node that never settles has its session aborted at
// MaxWaiting.
func TestMessagesWaitingOnPromisesAreBounded(t *testing.T) {
	const limit = 8
	_, nl := testNode(t, Config{MaxWaiting: limit})
	p := dialRaw(t, nl)
	p.hello()
	res, _ := p.deliver(exportDesc(0), []any{sym("fetch"), swissPromiseResolver}, false)
	got := p.resolution(res)
	_, pos, ok := descriptor(got[1], "desc:import-object")
	require.True(t, ok, "%v", got)
	res, _ = p.deliver(exportDesc(pos), []any{}, false)
	pair := p.resolution(res)[1].([]any) // [promise resolver]
	_, promise, ok := descriptor(pair[0], "desc:import-promise")
	require.True(t, ok, "%v", pair)
	for range limit + 1 {
		p.send(syrup.Record{Label: sym("op:deliver-only"), Fields: []any{exportDesc(promise), []any{"wait"}}})
	}
	closed, msgs := p.closedSoon()
	require.True(t, closed)
	require.NotEmpty(t, msgs)
	assert.Equal(t, sym("op:abort"), msgs[len(msgs)-1].Label)
	stillServes(t, nl)
}
