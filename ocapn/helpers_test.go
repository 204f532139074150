package ocapn

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"net"
	"runtime"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/bokbok-go/bokbok/ocapn/syrup"
)

// TestMain fails the run if any test leaves a goroutine behind.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// Swiss numbers of the test objects, as the OCapN test suite names them.
var (
	swissCarFactoryBuilder = []byte("JadQ0++RzsD4M+40uLxTWVaVqM10DcBJ")
	swissEcho              = []byte("IO58l1laTyhcrgDKbEzFOO32MDd6zE5w")
	swissGreeter           = []byte("VMDDd1voKWarCe2GvgLbxbVFysNzRPzx")
	swissPromiseResolver   = []byte("IokCxYmMj04nos2JN1TDoY1bT8dXh6Lr")
	swissEnlivener         = []byte("gi02I1qghIwPiKGKleCQAOhpy3ZtYRpB")
)

// testNode starts a node on a loopback tcp-testing-only netlayer with the
// objects the OCapN test suite expects, and closes it after the test.
func testNode(t testing.TB, cfg Config) (*Node, *TestingOnlyTCP) {
	t.Helper()
	nl, err := ListenTestingOnlyTCP("127.0.0.1:0")
	require.NoError(t, err)
	n := NewNode(cfg)
	n.AddNetlayer(nl)
	registerSuiteObjects(n)
	t.Cleanup(func() { n.Close() })
	return n, nl
}

func registerSuiteObjects(n *Node) {
	n.Register(swissCarFactoryBuilder, ObjectFunc(func([]any) (any, error) {
		return ObjectFunc(func(args []any) (any, error) {
			if len(args) != 1 {
				return nil, errors.New("one [color model]")
			}
			spec, ok := args[0].([]any)
			if !ok || len(spec) != 2 {
				return nil, errors.New("a car is [color model]")
			}
			color, ok1 := spec[0].(syrup.Symbol)
			model, ok2 := spec[1].(syrup.Symbol)
			if !ok1 || !ok2 {
				return nil, errors.New("color and model are symbols")
			}
			return ObjectFunc(func([]any) (any, error) {
				return fmt.Sprintf("Vroom! I am a %s %s car!", color, model), nil
			}), nil
		}), nil
	}))
	n.Register(swissEcho, ObjectFunc(func(args []any) (any, error) {
		time.AfterFunc(10*time.Millisecond, runtime.GC)
		return args, nil
	}))
	n.Register(swissGreeter, ObjectFunc(func(args []any) (any, error) {
		if len(args) != 1 {
			return nil, errors.New("a reference")
		}
		n.Send(args[0], "Hello").Then(func(any, error) { time.AfterFunc(10*time.Millisecond, runtime.GC) })
		return nil, nil
	}))
	n.Register(swissPromiseResolver, ObjectFunc(func([]any) (any, error) {
		p, r := n.NewPromise()
		return []any{p, ObjectFunc(func(args []any) (any, error) {
			switch args[0] {
			case sym("fulfill"):
				r.Fulfill(args[1])
			case sym("break"):
				r.Break(&BrokenError{Reason: args[1]})
			}
			return nil, nil
		})}, nil
	}))
	n.Register(swissEnlivener, ObjectFunc(func(args []any) (any, error) {
		sr, err := SturdyrefFromValue(args[0])
		if err != nil {
			return nil, err
		}
		return n.Enliven(sr), nil
	}))
}

// rawPeer is a hand-written CapTP peer on a raw socket, as the OCapN test
// suite is: it sends exactly the records a test gives it and reads
// exactly what the node sends.
type rawPeer struct {
	t    testing.TB
	c    net.Conn
	dec  *syrup.Decoder
	key  sessionKey
	loc  Peer
	imp  int // next position this peer exports (the node imports)
	ans  int // next answer position
	them ed25519.PublicKey
}

func dialRaw(t testing.TB, nl *TestingOnlyTCP) *rawPeer {
	t.Helper()
	c, err := net.Dial("tcp", nl.ln.Addr().String())
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	key, err := newSessionKey()
	require.NoError(t, err)
	return &rawPeer{t: t, c: c, dec: syrup.NewDecoder(c, syrup.Limits{}), key: key, imp: 1,
		loc: Peer{Transport: TestingOnlyTransport, Designator: fmt.Sprintf("raw%p", c), Hints: map[string]string{"host": "127.0.0.1", "port": "1"}}}
}

func (p *rawPeer) send(v any) {
	p.t.Helper()
	b, err := syrup.Marshal(v)
	require.NoError(p.t, err)
	_, err = p.c.Write(b)
	require.NoError(p.t, err)
}

// recv reads the next message, within 10 s.
func (p *rawPeer) recv() (syrup.Record, error) {
	p.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	v, err := p.dec.Decode()
	if err != nil {
		return syrup.Record{}, err
	}
	r, ok := v.(syrup.Record)
	if !ok {
		return syrup.Record{}, fmt.Errorf("a message that is not a record: %v", v)
	}
	return r, nil
}

// expect reads messages until one labelled label.
func (p *rawPeer) expect(label string) syrup.Record {
	p.t.Helper()
	for {
		r, err := p.recv()
		require.NoError(p.t, err, "waiting for %s", label)
		if r.Label == sym(label) {
			return r
		}
	}
}

// hello sends this peer's op:start-session and checks the node's.
func (p *rawPeer) hello() {
	p.t.Helper()
	b, err := startSessionMessage(p.key, p.loc)
	require.NoError(p.t, err)
	_, err = p.c.Write(b)
	require.NoError(p.t, err)
	r := p.expect("op:start-session")
	st, err := parseStartSession(r)
	require.NoError(p.t, err)
	p.them = st.pub
}

func exportDesc(pos int) syrup.Record {
	return syrup.Record{Label: sym("desc:export"), Fields: []any{int64(pos)}}
}
func answerDesc(pos int) syrup.Record {
	return syrup.Record{Label: sym("desc:answer"), Fields: []any{int64(pos)}}
}
func importObj(pos int) syrup.Record {
	return syrup.Record{Label: sym("desc:import-object"), Fields: []any{int64(pos)}}
}

// newImport returns a fresh object position of this peer's.
func (p *rawPeer) newImport() int { p.imp++; return p.imp - 1 }

// deliver sends op:deliver to to, with a fresh resolver; answer: whether
// to give it an answer position. It returns the resolver's position and
// the answer position (or -1).
func (p *rawPeer) deliver(to any, args []any, answer bool) (resolver, ans int) {
	resolver, ans = p.newImport(), -1
	var pos any = false
	if answer {
		ans = p.ans
		p.ans++
		pos = int64(ans)
	}
	p.send(syrup.Record{Label: sym("op:deliver"), Fields: []any{to, args, pos, importObj(resolver)}})
	return resolver, ans
}

// expectTo reads until an op:deliver or op:deliver-only to to.
func (p *rawPeer) expectTo(to any) syrup.Record {
	p.t.Helper()
	for {
		r, err := p.recv()
		require.NoError(p.t, err, "waiting for a message to %v", to)
		if (r.Label == sym("op:deliver-only") || r.Label == sym("op:deliver")) && syrup.Equal(r.Fields[0], to) {
			return r
		}
	}
}

// resolution reads until the node sends resolver a fulfill or break,
// and returns [fulfill|break, value].
func (p *rawPeer) resolution(resolver int) []any {
	p.t.Helper()
	return p.expectTo(exportDesc(resolver)).Fields[1].([]any)
}

// fetch fetches swiss from the node's bootstrap object and returns the
// export position of what it gave.
func (p *rawPeer) fetch(swiss []byte) int {
	p.t.Helper()
	res, _ := p.deliver(exportDesc(0), []any{sym("fetch"), swiss}, false)
	got := p.resolution(res)
	require.Equal(p.t, sym("fulfill"), got[0], "fetch: %v", got)
	_, pos, ok := descriptor(got[1], "desc:import-object")
	require.True(p.t, ok, "fetch gave %v", got[1])
	return pos
}

// closedSoon reports whether the node closes the connection (after
// sending whatever it sends) within 10 s, and returns the messages it
// sent first.
func (p *rawPeer) closedSoon() (bool, []syrup.Record) {
	var got []syrup.Record
	for {
		r, err := p.recv()
		if err != nil {
			var ne net.Error
			return !(errors.As(err, &ne) && ne.Timeout()), got
		}
		got = append(got, r)
	}
}
