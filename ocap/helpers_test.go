package ocap

import (
	"context"
	"fmt"
	"net"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/bokbok-go/bokbok"
	"github.com/stretchr/testify/require"
)

// newTestVat starts a vat that is closed, and waited for, when the test
// ends.
func newTestVat(t testing.TB, name string) *Vat {
	t.Helper()
	v := NewVat(name)
	t.Cleanup(func() {
		v.Close()
		<-v.Done()
	})
	return v
}

// pipeNodes connects a and b with Pipe; both sessions are closed when the
// test ends.
func pipeNodes(t testing.TB, ctx context.Context, a, b *Node) (*Session, *Session) {
	t.Helper()
	sa, sb, err := Pipe(ctx, a, b)
	require.NoError(t, err)
	t.Cleanup(func() {
		sa.Close()
		sb.Close()
	})
	return sa, sb
}

// connectConns connects a and b with Node.NewSession over the two given
// ends of a connection (for tests that wrap or close the net.Conns
// themselves). Both sessions are closed when the test ends.
func connectConns(t testing.TB, ctx context.Context, a, b *Node, ca, cb net.Conn) (*Session, *Session) {
	t.Helper()
	ch := make(chan *Session, 1)
	go func() {
		s, err := b.NewSession(ctx, cb, nil)
		if err != nil {
			t.Errorf("b.NewSession: %v", err)
		}
		ch <- s
	}()
	sa, err := a.NewSession(ctx, ca, nil)
	require.NoError(t, err)
	sb := <-ch
	require.NotNil(t, sb)
	t.Cleanup(func() {
		sa.Close()
		sb.Close()
	})
	return sa, sb
}

// await waits for p and requires it to be fulfilled.
func await(t testing.TB, ctx context.Context, p *Promise) Result {
	t.Helper()
	r, err := p.Await(ctx)
	require.NoError(t, err)
	return r
}

// awaitRef waits for p and requires it to be fulfilled with a reference.
func awaitRef(t testing.TB, ctx context.Context, p *Promise) Ref {
	t.Helper()
	ref, err := await(t, ctx, p).Ref()
	require.NoError(t, err)
	return ref
}

// awaitValue waits for p and decodes its value into a T.
func awaitValue[T any](t testing.TB, ctx context.Context, p *Promise) T {
	t.Helper()
	var v T
	require.NoError(t, await(t, ctx, p).Decode(&v))
	return v
}

// requireRemoteCode requires err to be a *bokbok.RemoteError with code.
func requireRemoteCode(t testing.TB, err error, code string) {
	t.Helper()
	var re *bokbok.RemoteError
	require.ErrorAs(t, err, &re, "want a remote error with code %s", code)
	require.Equal(t, code, re.Code, "error: %v", err)
}

// requireDrained runs the garbage collector until every session's tables
// are empty. The caller must have dropped every reference and promise it
// held (do the work in a function that has returned).
func requireDrained(t testing.TB, sessions ...*Session) {
	t.Helper()
	require.Eventually(t, func() bool {
		runtime.GC()
		for _, s := range sessions {
			if s.Stats() != (Stats{}) {
				return false
			}
		}
		return true
	}, 10*time.Second, 5*time.Millisecond, "tables not empty: %s", statsOf(sessions))
}

func statsOf(sessions []*Session) string {
	out := ""
	for i, s := range sessions {
		out += fmt.Sprintf("\n  session %d: %+v", i, s.Stats())
	}
	return out
}

// seqTarget asserts that the messages it receives carry its own name and
// consecutive sequence numbers starting at 0.
type seqTarget struct {
	name string
	next int
	bad  []string
}

func (s *seqTarget) Hit(name string, n int) int {
	switch {
	case name != s.name:
		s.bad = append(s.bad, fmt.Sprintf("message %d for %q reached %q", n, name, s.name))
	case n != s.next:
		s.bad = append(s.bad, fmt.Sprintf("%q got message %d, want %d", s.name, n, s.next))
	}
	s.next = n + 1
	return n
}

type seqReport struct {
	Next int
	Bad  []string
}

func (s *seqTarget) Report() seqReport { return seqReport{s.next, s.bad} }

// gate is an actor whose Wait blocks its vat until the test opens the
// gate, then answers the reference it holds: a promise that resolves
// when the test chooses.
type gate struct {
	open chan struct{}
	r    Ref
}

func newGate(r Ref) *gate { return &gate{open: make(chan struct{}), r: r} }

func (g *gate) Set(r Ref) { g.r = r }
func (g *gate) Clear()    { g.r = Ref{} }
func (g *gate) Wait() (Ref, error) {
	select {
	case <-g.open:
		return g.r, nil
	case <-time.After(20 * time.Second):
		return Ref{}, fmt.Errorf("gate never opened")
	}
}

// opener closes a gate's channel once.
type opener struct {
	once sync.Once
	ch   chan struct{}
}

func (o *opener) Open() { o.once.Do(func() { close(o.ch) }) }

// gateOpener returns a function opening g, also run when the test ends so
// that no vat stays blocked.
func gateOpener(t testing.TB, g *gate) func() {
	o := &opener{ch: g.open}
	t.Cleanup(o.Open)
	return o.Open
}

// blocker is an actor whose Block blocks its vat until released: an actor
// in the middle of a turn.
type blocker struct {
	entered chan string
	release chan struct{}
	r       Ref
}

func newBlocker(r Ref) *blocker {
	return &blocker{entered: make(chan string, 16), release: make(chan struct{}), r: r}
}

// Block blocks, then answers its argument.
func (b *blocker) Block(tag string) (string, error) {
	select {
	case b.entered <- tag:
	default: // nobody is counting
	}
	select {
	case <-b.release:
		return tag, nil
	case <-time.After(20 * time.Second):
		return "", fmt.Errorf("never released")
	}
}

// BlockRef blocks, then answers the reference it holds.
func (b *blocker) BlockRef() (Ref, error) {
	if _, err := b.Block("ref"); err != nil {
		return Ref{}, err
	}
	return b.r, nil
}

func (b *blocker) Ping() string { return "pong" }

// releaser closes a blocker's release channel once, also when the test
// ends.
func releaser(t testing.TB, b *blocker) func() {
	o := &opener{ch: b.release}
	t.Cleanup(o.Open)
	return o.Open
}

// echo answers what it is given.
type echo struct{}

func (echo) Echo(v any) any    { return v }
func (echo) EchoRef(r Ref) Ref { return r }
func (echo) Ping() string      { return "pong" }
func (echo) IsLocal(r Ref) bool {
	return r.IsLocal()
}
