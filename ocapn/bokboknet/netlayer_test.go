package bokboknet

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/bokbok-go/bokbok"
	"github.com/bokbok-go/bokbok/ocapn"
	"github.com/bokbok-go/bokbok/ocapn/syrup"
)

// TestMain fails the run if any test leaves a goroutine behind.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// keyring holds one pre-shared key per pair of nodes.
type keyring struct {
	mu   sync.Mutex
	keys map[[2]string]bokbok.Key
}

func pairOf(a, b string) [2]string {
	if a > b {
		a, b = b, a
	}
	return [2]string{a, b}
}

// share gives a and b a fresh key, replacing any they had.
func (k *keyring) share(t testing.TB, a, b string) bokbok.Key {
	key, err := bokbok.GenerateKey()
	require.NoError(t, err)
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.keys == nil {
		k.keys = make(map[[2]string]bokbok.Key)
	}
	k.keys[pairOf(a, b)] = key
	return key
}

// of returns me's PeerKeys.
func (k *keyring) of(me string) func(peer string) []bokbok.Key {
	return func(peer string) []bokbok.Key {
		k.mu.Lock()
		defer k.mu.Unlock()
		if key, ok := k.keys[pairOf(me, peer)]; ok {
			return []bokbok.Key{key}
		}
		return nil
	}
}

func listen(t testing.TB, name string, ring *keyring, cfg Config) *Netlayer {
	t.Helper()
	cfg.Name, cfg.PeerKeys = name, ring.of(name)
	nl, err := Listen("127.0.0.1:0", cfg)
	require.NoError(t, err)
	t.Cleanup(func() { nl.Close() })
	return nl
}

func testNode(t testing.TB, name string, ring *keyring) (*ocapn.Node, *Netlayer) {
	t.Helper()
	nl := listen(t, name, ring, Config{})
	n := ocapn.NewNode(ocapn.Config{})
	n.AddNetlayer(nl)
	t.Cleanup(func() { n.Close() })
	return n, nl
}

func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// TestGoToGo: two nodes over the bokbok netlayer. A enlivens B's
// sturdyref, passes one of its own objects, which B calls back, and
// sends a value large enough to take many chunks.
func TestGoToGo(t *testing.T) {
	var ring keyring
	ring.share(t, "alice", "bob")
	a, _ := testNode(t, "alice", &ring)
	b, nlB := testNode(t, "bob", &ring)
	ctx := testCtx(t)

	b.Register([]byte("greeter"), ocapn.ObjectFunc(func(args []any) (any, error) {
		if len(args) != 1 {
			return nil, errors.New("want a reference to greet")
		}
		return b.Send(args[0], "Hello"), nil // resolves with what the callback answers
	}))
	b.Register([]byte("echo"), ocapn.ObjectFunc(func(args []any) (any, error) { return args, nil }))

	sr, err := b.Sturdyref(ctx, Transport, []byte("greeter"))
	require.NoError(t, err)
	assert.Equal(t, nlB.Location(), sr.Peer)
	assert.Equal(t, "bob", sr.Peer.Designator)
	parsed, err := ocapn.ParseSturdyref(sr.String())
	require.NoError(t, err)
	assert.Equal(t, sr.Peer, parsed.Peer, "the location survives its URI: %s", sr)

	greeter, err := a.Enliven(parsed).Wait(ctx)
	require.NoError(t, err)
	require.IsType(t, &ocapn.Ref{}, greeter)
	assert.True(t, greeter.(*ocapn.Ref).Peer().Same(nlB.Location()))

	heard := make(chan any, 1)
	answer, err := greeter.(*ocapn.Ref).Deliver(ocapn.ObjectFunc(func(args []any) (any, error) {
		heard <- args[0]
		return fmt.Sprintf("alice heard %v", args[0]), nil
	})).Wait(ctx)
	require.NoError(t, err)
	assert.Equal(t, "alice heard Hello", answer)
	assert.Equal(t, "Hello", <-heard)

	echo, err := a.Enliven(ocapn.Sturdyref{Peer: sr.Peer, Swiss: []byte("echo")}).Wait(ctx)
	require.NoError(t, err)
	big := make([]byte, 3*MaxChunk+12345)
	for i := range big {
		big[i] = byte(i * 7)
	}
	back, err := echo.(*ocapn.Ref).Deliver(big, "tail").Wait(ctx)
	require.NoError(t, err)
	require.Len(t, back, 2)
	assert.True(t, bytes.Equal(big, back.([]any)[0].([]byte)), "a value of several chunks comes back whole")
	assert.Equal(t, "tail", back.([]any)[1])
}

// TestThreeNodeHandoff: A holds a reference to C's counter and passes it
// to B, which gets it through C, not through A, and keeps using it after
// A is gone.
func TestThreeNodeHandoff(t *testing.T) {
	var ring keyring
	ring.share(t, "a", "b")
	ring.share(t, "a", "c")
	ring.share(t, "b", "c")
	a, _ := testNode(t, "a", &ring)
	b, nlB := testNode(t, "b", &ring)
	c, nlC := testNode(t, "c", &ring)
	ctx := testCtx(t)

	count := 0 // on C's event loop only
	c.Register([]byte("counter"), ocapn.ObjectFunc(func([]any) (any, error) { count++; return int64(count), nil }))
	kept := make(chan any, 1)
	b.Register([]byte("keeper"), ocapn.ObjectFunc(func(args []any) (any, error) { kept <- args[0]; return nil, nil }))

	counter, err := a.Enliven(ocapn.Sturdyref{Peer: nlC.Location(), Swiss: []byte("counter")}).Wait(ctx)
	require.NoError(t, err)
	keeper, err := a.Enliven(ocapn.Sturdyref{Peer: nlB.Location(), Swiss: []byte("keeper")}).Wait(ctx)
	require.NoError(t, err)
	_, err = keeper.(*ocapn.Ref).Deliver(counter).Wait(ctx)
	require.NoError(t, err)

	var gift any
	select {
	case gift = <-kept:
	case <-ctx.Done():
		t.Fatal("the keeper got nothing")
	}
	require.IsType(t, &ocapn.Promise{}, gift, "a handed-off reference arrives as a promise")
	ref, err := gift.(*ocapn.Promise).Wait(ctx)
	require.NoError(t, err)
	require.IsType(t, &ocapn.Ref{}, ref)
	assert.True(t, ref.(*ocapn.Ref).Peer().Same(nlC.Location()), "B holds the counter through C, not A")

	v, err := b.Send(ref, "tick").Wait(ctx)
	require.NoError(t, err)
	assert.Equal(t, int64(1), v)

	require.NoError(t, a.Close())
	v, err = ref.(*ocapn.Ref).Deliver().Wait(ctx)
	require.NoError(t, err, "B and C go on without A")
	assert.Equal(t, int64(2), v)
}

// TestWrongKey: a dialer whose key is not the listener's for it opens no
// session; the enliven fails promptly, and so does a direct dial, as does
// one to the right address under another designator (the realm differs)
// and one for a peer the dialer has no key for.
func TestWrongKey(t *testing.T) {
	var ringA, ringB keyring
	ringA.share(t, "alice", "bob")
	ringB.share(t, "alice", "bob") // another key for the same pair
	ringA.share(t, "alice", "carol")
	a, nlA := testNode(t, "alice", &ringA)
	b, nlB := testNode(t, "bob", &ringB)
	b.Register([]byte("x"), ocapn.ObjectFunc(func([]any) (any, error) { return "reached", nil }))
	ctx := testCtx(t)

	start := time.Now()
	_, err := a.Enliven(ocapn.Sturdyref{Peer: nlB.Location(), Swiss: []byte("x")}).Wait(ctx)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "authentication failed")
	assert.Less(t, time.Since(start), 10*time.Second, "the refusal is prompt")

	_, err = nlA.Dial(ctx, nlB.Location())
	assert.ErrorIs(t, err, bokbok.ErrAuth)

	carolAtBob := nlB.Location()
	carolAtBob.Designator = "carol"
	_, err = nlA.Dial(ctx, carolAtBob)
	assert.ErrorIs(t, err, bokbok.ErrAuth, "a listener with another name fails the handshake")

	daveAtBob := nlB.Location()
	daveAtBob.Designator = "dave"
	_, err = nlA.Dial(ctx, daveAtBob)
	assert.ErrorIs(t, err, bokbok.ErrAuth, "no key for dave")

	// With the right key, the same call goes through.
	ringA.mu.Lock()
	ringA.keys[pairOf("alice", "bob")] = ringB.keys[pairOf("alice", "bob")]
	ringA.mu.Unlock()
	got, err := a.Enliven(ocapn.Sturdyref{Peer: nlB.Location(), Swiss: []byte("x")}).Wait(ctx)
	require.NoError(t, err)
	v, err := got.(*ocapn.Ref).Deliver().Wait(ctx)
	require.NoError(t, err)
	assert.Equal(t, "reached", v)
}

// impostor is a netlayer that dials with its own name and key but gives
// the OCapN session another node's location.
type impostor struct {
	*Netlayer
	claim ocapn.Peer
}

func (i impostor) Location() ocapn.Peer { return i.claim }

// TestImpersonation: a node that holds a key for bob, as mallory, cannot
// open a session with bob claiming to be alice: bob's netlayer closes the
// connection before bob's node takes the claim.
func TestImpersonation(t *testing.T) {
	var ring keyring
	ring.share(t, "alice", "bob")
	ring.share(t, "mallory", "bob")
	_, nlAlice := testNode(t, "alice", &ring)
	bob, nlB := testNode(t, "bob", &ring)
	bob.Register([]byte("x"), ocapn.ObjectFunc(func([]any) (any, error) { return "reached", nil }))
	nlM := listen(t, "mallory", &ring, Config{})
	mallory := ocapn.NewNode(ocapn.Config{HandshakeTimeout: 5 * time.Second})
	defer mallory.Close()
	mallory.AddNetlayer(impostor{nlM, nlAlice.Location()})
	ctx := testCtx(t)

	start := time.Now()
	_, err := mallory.Enliven(ocapn.Sturdyref{Peer: nlB.Location(), Swiss: []byte("x")}).Wait(ctx)
	require.Error(t, err, "mallory posing as alice reached bob")
	assert.Less(t, time.Since(start), 4*time.Second, "refused, not timed out")

	// As itself, mallory gets through.
	honest := ocapn.NewNode(ocapn.Config{})
	defer honest.Close()
	nlM2 := listen(t, "mallory", &ring, Config{})
	honest.AddNetlayer(nlM2)
	got, err := honest.Enliven(ocapn.Sturdyref{Peer: nlB.Location(), Swiss: []byte("x")}).Wait(ctx)
	require.NoError(t, err)
	v, err := got.(*ocapn.Ref).Deliver().Wait(ctx)
	require.NoError(t, err)
	assert.Equal(t, "reached", v)
}

// TestKeyRotation: a dialer tries its keys in order while the peer
// refuses them.
func TestKeyRotation(t *testing.T) {
	var ring keyring
	key := ring.share(t, "alice", "bob")
	old, err := bokbok.GenerateKey()
	require.NoError(t, err)
	nlB := listen(t, "bob", &ring, Config{})
	nlA, err := Listen("127.0.0.1:0", Config{Name: "alice", PeerKeys: func(string) []bokbok.Key { return []bokbok.Key{old, key} }})
	require.NoError(t, err)
	defer nlA.Close()
	ctx := testCtx(t)
	c, err := nlA.Dial(ctx, nlB.Location())
	require.NoError(t, err)
	defer c.Close()
	in, err := nlB.Accept()
	require.NoError(t, err)
	defer in.Close()
	assert.Equal(t, "alice", in.(*Conn).PeerDesignator())
	assert.Equal(t, "bob", c.(*Conn).PeerDesignator())
}

// connPair returns the two ends of one connection: out dialed by "alice",
// in accepted by "bob".
func connPair(t testing.TB, cfg Config) (out, in *Conn) {
	t.Helper()
	var ring keyring
	ring.share(t, "alice", "bob")
	nlA := listen(t, "alice", &ring, cfg)
	nlB := listen(t, "bob", &ring, cfg)
	c, err := nlA.Dial(testCtx(t), nlB.Location())
	require.NoError(t, err)
	a, err := nlB.Accept()
	require.NoError(t, err)
	out, in = c.(*Conn), a.(*Conn)
	t.Cleanup(func() { out.Close(); in.Close() })
	return out, in
}

// startSession is an op:start-session from location designator on
// transport, as far as the netlayer checks it (the OCapN session checks
// the key and signature).
func startSession(t testing.TB, transport, designator string) []byte {
	b, err := syrup.Marshal(syrup.Record{Label: syrup.Symbol("op:start-session"), Fields: []any{
		"1.0", []byte("a key"),
		syrup.Record{Label: syrup.Symbol("ocapn-peer"), Fields: []any{syrup.Symbol(transport), designator, false}},
		[]byte("a signature"),
	}})
	require.NoError(t, err)
	return b
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// TestOrderedBytes: many writes of assorted sizes, some larger than a
// chunk, arrive whole and in order, both ways at once.
func TestOrderedBytes(t *testing.T) {
	out, in := connPair(t, Config{})
	sizes := []int{1, 7, 0, 1000, MaxChunk - 1, MaxChunk, MaxChunk + 1, 3, 200_000, 4096, 2*MaxChunk + 17, 1 << 20}
	r := rand.New(rand.NewPCG(1, 2))
	for range 20 {
		sizes = append(sizes, r.IntN(150_000))
	}
	stream := func(prefix []byte) []byte {
		b := append([]byte(nil), prefix...)
		for _, n := range sizes {
			for range n {
				b = append(b, byte(r.Uint32()))
			}
		}
		return b
	}
	hello := startSession(t, Transport, "alice")
	fromOut, fromIn := stream(hello), stream(nil)

	var wg sync.WaitGroup
	write := func(c *Conn, data []byte, first int) {
		defer wg.Done()
		if first > 0 {
			n, err := c.Write(data[:first])
			assert.NoError(t, err)
			assert.Equal(t, first, n)
			data = data[first:]
		}
		for _, size := range sizes {
			n, err := c.Write(data[:size])
			assert.NoError(t, err)
			assert.Equal(t, size, n)
			data = data[size:]
		}
	}
	read := func(c *Conn, want []byte) {
		defer wg.Done()
		c.SetReadDeadline(time.Now().Add(30 * time.Second))
		got := make([]byte, len(want))
		_, err := io.ReadFull(c, got)
		assert.NoError(t, err)
		assert.True(t, bytes.Equal(want, got), "the bytes arrive in order")
	}
	wg.Add(4)
	go write(out, fromOut, len(hello))
	go write(in, fromIn, 0)
	go read(in, fromOut)
	go read(out, fromIn)
	wg.Wait()
}

// TestReadDeadline: a Read times out at its deadline with a net.Error
// whose Timeout is true, including one already waiting when the deadline
// is set, and the Conn goes on working afterwards.
func TestReadDeadline(t *testing.T) {
	out, in := connPair(t, Config{})
	buf := make([]byte, 10)

	out.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	_, err := out.Read(buf)
	require.Error(t, err)
	assert.True(t, isTimeout(err), "%v", err)
	assert.ErrorIs(t, err, os.ErrDeadlineExceeded)

	out.SetReadDeadline(time.Time{})
	got := make(chan error, 1)
	go func() {
		_, err := out.Read(buf)
		got <- err
	}()
	time.Sleep(20 * time.Millisecond)
	out.SetReadDeadline(time.Now().Add(30 * time.Millisecond)) // on the Read waiting
	select {
	case err := <-got:
		assert.True(t, isTimeout(err), "%v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("a deadline set during a Read did not end it")
	}

	out.SetReadDeadline(time.Now().Add(-time.Second)) // in the past
	_, err = out.Read(buf)
	assert.True(t, isTimeout(err), "%v", err)

	out.SetReadDeadline(time.Time{})
	_, err = in.Write([]byte("still here"))
	require.NoError(t, err)
	out.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, err := io.ReadFull(out, buf)
	require.NoError(t, err)
	assert.Equal(t, "still here", string(buf[:n]))
}

// TestWriteBackpressure: writing to a peer that does not read soon
// blocks, with no more queued than the documented bounds, and fails at
// the write deadline; everything Write reported written then arrives.
func TestWriteBackpressure(t *testing.T) {
	out, in := connPair(t, Config{})
	chunk := make([]byte, MaxChunk)
	in.SetWriteDeadline(time.Now().Add(time.Second))
	total := 0
	var err error
	for total < 64<<20 {
		var n int
		n, err = in.Write(chunk)
		total += n
		if err != nil {
			break
		}
	}
	require.Error(t, err, "writes to a peer that does not read must block")
	t.Logf("%d bytes queued before writes blocked", total)
	assert.True(t, isTimeout(err), "%v", err)
	assert.ErrorIs(t, err, os.ErrDeadlineExceeded)
	assert.GreaterOrEqual(t, total, DefaultReceiveBuffer, "the peer's buffer took what it holds")
	assert.LessOrEqual(t, total, DefaultReceiveBuffer+DefaultNotifyBytes+2*MaxChunk, "the bytes in flight are bounded")

	// An expired deadline fails at once; a new one lets writes wait again.
	_, err = in.Write([]byte("x"))
	assert.True(t, isTimeout(err))

	// Everything written arrives, and nothing more.
	out.SetReadDeadline(time.Now().Add(20 * time.Second))
	_, err = io.ReadFull(out, make([]byte, total))
	require.NoError(t, err)
	out.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	n, err := out.Read(make([]byte, 1))
	assert.Equal(t, 0, n)
	assert.True(t, isTimeout(err), "%v", err)

	// With the reader reading, writes go on.
	in.SetWriteDeadline(time.Time{})
	out.SetReadDeadline(time.Time{})
	go in.Write([]byte("more"))
	buf := make([]byte, 4)
	_, err = io.ReadFull(out, buf)
	require.NoError(t, err)
	assert.Equal(t, "more", string(buf))
}

// TestCloseUnblocks: Close ends a Read and a Write that are waiting, and
// then the connection, within CloseTimeout even though the peer does not
// read what was written.
func TestCloseUnblocks(t *testing.T) {
	out, in := connPair(t, Config{CloseTimeout: 200 * time.Millisecond})

	reading := make(chan error, 1)
	go func() {
		_, err := out.Read(make([]byte, 1))
		reading <- err
	}()
	writing := make(chan error, 1)
	go func() {
		chunk := make([]byte, MaxChunk)
		for {
			if _, err := out.Write(chunk); err != nil {
				writing <- err
				return
			}
		}
	}()
	time.Sleep(100 * time.Millisecond) // let the writer fill the peer's buffers
	require.NoError(t, out.Close())
	for name, ch := range map[string]chan error{"Read": reading, "Write": writing} {
		select {
		case err := <-ch:
			assert.ErrorIs(t, err, net.ErrClosed, name)
		case <-time.After(10 * time.Second):
			t.Fatalf("Close did not end a waiting %s", name)
		}
	}
	_, err := out.Write([]byte("x"))
	assert.ErrorIs(t, err, net.ErrClosed)
	_, err = out.Read(make([]byte, 1))
	assert.ErrorIs(t, err, net.ErrClosed)
	assert.ErrorIs(t, out.Close(), net.ErrClosed)

	// The accepted side's reads end (with the netlayer's refusal of bytes
	// that are no op:start-session, or the end of the stream), not time out.
	in.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, err = io.Copy(io.Discard, in)
	assert.False(t, isTimeout(err), "%v", err)
}

// TestCloseFlushes: bytes written just before Close reach the peer, then
// io.EOF.
func TestCloseFlushes(t *testing.T) {
	out, in := connPair(t, Config{})
	data := make([]byte, 700_000)
	for i := range data {
		data[i] = byte(i)
	}
	done := make(chan []byte, 1)
	go func() {
		out.SetReadDeadline(time.Now().Add(20 * time.Second))
		got, err := io.ReadAll(out) // ends at io.EOF
		assert.NoError(t, err)
		done <- got
	}()
	n, err := in.Write(data)
	require.NoError(t, err)
	require.Equal(t, len(data), n)
	require.NoError(t, in.Close())
	got := <-done
	assert.True(t, bytes.Equal(data, got), "got %d of %d bytes", len(got), len(data))
}

// TestDesignatorIsChecked: an authenticated dialer's first message must
// claim the designator it authenticated as, on this transport; it may
// arrive in pieces, across read timeouts.
func TestDesignatorIsChecked(t *testing.T) {
	t.Run("in pieces", func(t *testing.T) {
		out, in := connPair(t, Config{})
		hello := startSession(t, Transport, "alice")
		_, err := out.Write(hello[:10])
		require.NoError(t, err)
		in.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		_, err = in.Read(make([]byte, 100))
		require.True(t, isTimeout(err), "%v", err)
		_, err = out.Write(append(hello[10:], "after"...))
		require.NoError(t, err)
		in.SetReadDeadline(time.Now().Add(10 * time.Second))
		got := make([]byte, len(hello)+5)
		_, err = io.ReadFull(in, got)
		require.NoError(t, err)
		assert.Equal(t, append(hello, "after"...), got, "the session reads the checked message itself")
	})
	for name, hello := range map[string][]byte{
		"another designator": startSession(t, Transport, "carol"),
		"another transport":  startSession(t, "tcp-testing-only", "alice"),
		"not start-session":  []byte("<8'op:abort3\"bye>"),
		"not syrup":          []byte("GET / HTTP/1.1\r\n\r\n"),
	} {
		t.Run(name, func(t *testing.T) {
			out, in := connPair(t, Config{})
			_, err := out.Write(hello)
			require.NoError(t, err)
			in.SetReadDeadline(time.Now().Add(10 * time.Second))
			_, err = in.Read(make([]byte, 100))
			require.Error(t, err)
			assert.False(t, isTimeout(err), "%v", err)
			assert.NotErrorIs(t, err, io.EOF)
			// The dialer's connection is closed.
			out.SetReadDeadline(time.Now().Add(10 * time.Second))
			_, err = out.Read(make([]byte, 1))
			assert.False(t, isTimeout(err), "%v", err)
		})
	}
}

// hostileClient opens a bokbok connection to nl as user, with the key
// ring gives it, without this package's adapter.
func hostileClient(t *testing.T, nl *Netlayer, user string, ring *keyring) *bokbok.Conn {
	t.Helper()
	key := ring.of(user)(nl.Location().Designator)[0]
	bc, err := bokbok.Dial(testCtx(t), nl.Location().Hints[AddrHint], &bokbok.Config{Key: &key, User: user, Realm: nl.Location().Designator})
	require.NoError(t, err)
	t.Cleanup(func() { bc.Close() })
	return bc
}

// TestHostilePeer: a peer that sends anything but chunks of "ocapn.bytes"
// is refused: requests with an error, other notifications and
// oversized or non-binary chunks by closing the connection.
func TestHostilePeer(t *testing.T) {
	var ring keyring
	ring.share(t, "mallory", "bob")
	nl := listen(t, "bob", &ring, Config{})
	ctx := testCtx(t)

	t.Run("request", func(t *testing.T) {
		bc := hostileClient(t, nl, "mallory", &ring)
		_, err := bc.RequestMethod(ctx, Method, []byte("hi"))
		assert.ErrorIs(t, err, bokbok.ErrNoMethod)
		in, err := nl.Accept()
		require.NoError(t, err)
		in.Close()
	})
	for name, send := range map[string]func(*bokbok.Conn) error{
		"another method":  func(bc *bokbok.Conn) error { return bc.NotifyMethod(ctx, "other", []byte("hi")) },
		"not bytes":       func(bc *bokbok.Conn) error { return bc.NotifyMethod(ctx, Method, map[string]int{"a": 1}) },
		"a string":        func(bc *bokbok.Conn) error { return bc.NotifyMethod(ctx, Method, "text, not bin") },
		"nil":             func(bc *bokbok.Conn) error { return bc.NotifyMethod(ctx, Method, nil) },
		"oversized chunk": func(bc *bokbok.Conn) error { return bc.NotifyMethod(ctx, Method, make([]byte, MaxChunk+1)) },
	} {
		t.Run(name, func(t *testing.T) {
			bc := hostileClient(t, nl, "mallory", &ring)
			in, err := nl.Accept()
			require.NoError(t, err)
			defer in.Close()
			require.NoError(t, send(bc))
			select {
			case <-bc.Done():
			case <-time.After(10 * time.Second):
				t.Fatal("the connection stayed open")
			}
			in.SetReadDeadline(time.Now().Add(10 * time.Second))
			_, err = in.Read(make([]byte, 10))
			require.Error(t, err)
			assert.False(t, isTimeout(err), "%v", err)
			assert.Contains(t, err.Error(), "bokboknet: the peer sent")
		})
	}
}

// TestCut: a connection cut without bokbok's close record (the peer died,
// or someone cut the socket) does not read as a clean end of the stream.
func TestCut(t *testing.T) {
	var ring keyring
	key := ring.share(t, "mallory", "bob")
	nl := listen(t, "bob", &ring, Config{})
	ctx := testCtx(t)
	raw, err := net.Dial("tcp", nl.Addr().String())
	require.NoError(t, err)
	bc, err := bokbok.NewConn(ctx, raw, &bokbok.Config{Key: &key, User: "mallory", Realm: "bob"})
	require.NoError(t, err)
	defer bc.Close()
	in, err := nl.Accept()
	require.NoError(t, err)
	defer in.Close()
	require.NoError(t, bc.NotifyMethod(ctx, Method, startSession(t, Transport, "mallory")[:5]))
	raw.Close() // under bokbok's feet
	in.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, err = in.Read(make([]byte, 100))
	require.Error(t, err)
	assert.NotErrorIs(t, err, io.EOF)
	assert.False(t, isTimeout(err), "%v", err)
	assert.ErrorIs(t, err, bokbok.ErrClosed)
	assert.ErrorIs(t, err, bokbok.ErrTruncated)
}

// TestBacklog: authenticated connections beyond AcceptBacklog, and those
// still waiting when the netlayer closes, are closed.
func TestBacklog(t *testing.T) {
	var ring keyring
	ring.share(t, "alice", "bob")
	nlA := listen(t, "alice", &ring, Config{})
	nlB := listen(t, "bob", &ring, Config{AcceptBacklog: 1})
	ctx := testCtx(t)
	first, err := nlA.Dial(ctx, nlB.Location())
	require.NoError(t, err)
	defer first.Close()
	require.Eventually(t, func() bool { return len(nlB.backlog) == 1 }, 10*time.Second, 5*time.Millisecond)
	second, err := nlA.Dial(ctx, nlB.Location())
	if err == nil { // the handshake may finish before the refusal
		defer second.Close()
		second.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, err = second.Read(make([]byte, 1))
		assert.False(t, isTimeout(err), "the connection beyond the backlog is closed: %v", err)
	}

	require.NoError(t, nlB.Close())
	_, err = nlB.Accept()
	assert.ErrorIs(t, err, net.ErrClosed)
	first.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, err = first.Read(make([]byte, 1))
	assert.False(t, isTimeout(err), "the connection never accepted is closed with the netlayer: %v", err)
	_, err = nlA.Dial(ctx, nlB.Location())
	assert.Error(t, err, "nobody listens")
	require.NoError(t, nlB.Close(), "closing twice")
}

// TestConfig: what Listen refuses, the location it makes, and what Dial
// refuses.
func TestConfig(t *testing.T) {
	keys := func(string) []bokbok.Key { return nil }
	key, err := bokbok.GenerateKey()
	require.NoError(t, err)
	for name, cfg := range map[string]Config{
		"no name":           {PeerKeys: keys},
		"a name with /":     {Name: "a/b", PeerKeys: keys},
		"a long name":       {Name: string(make([]byte, 256)), PeerKeys: keys},
		"no keys: insecure": {Name: "a"},
		"bokbok key":        {Name: "a", PeerKeys: keys, Bokbok: &bokbok.Config{Key: &key}},
		"bokbok handler":    {Name: "a", PeerKeys: keys, Bokbok: &bokbok.Config{Handler: bokbok.NewMux()}},
		"small messages":    {Name: "a", PeerKeys: keys, Bokbok: &bokbok.Config{MaxMessageSize: 1000}},
		"bad advertise":     {Name: "a", PeerKeys: keys, Advertise: "nowhere"},
		"negative buffer":   {Name: "a", PeerKeys: keys, ReceiveBuffer: -1},
	} {
		_, err := Listen("127.0.0.1:0", cfg)
		assert.Error(t, err, name)
	}

	nl, err := Listen("127.0.0.1:0", Config{Name: "node-1.example", PeerKeys: keys, Advertise: "tcp://node1.example:7000"})
	require.NoError(t, err)
	defer nl.Close()
	loc := nl.Location()
	assert.Equal(t, ocapn.Peer{Transport: "bokbok", Designator: "node-1.example", Hints: map[string]string{"addr": "tcp://node1.example:7000"}}, loc)
	loc.Hints["addr"] = "changed"
	assert.Equal(t, "tcp://node1.example:7000", nl.Location().Hints["addr"], "Location returns a copy")
	assert.Equal(t, "ocapn://node-1.example.bokbok?addr=tcp%3A%2F%2Fnode1.example%3A7000", nl.Location().String())
	parsed, err := ocapn.ParsePeer(nl.Location().String())
	require.NoError(t, err)
	assert.Equal(t, nl.Location(), parsed)

	ctx := testCtx(t)
	for name, p := range map[string]ocapn.Peer{
		"another transport": {Transport: "tcp-testing-only", Designator: "b", Hints: map[string]string{"addr": "127.0.0.1:1"}},
		"no addr":           {Transport: Transport, Designator: "b"},
		"no designator":     {Transport: Transport, Hints: map[string]string{"addr": "127.0.0.1:1"}},
	} {
		_, err := nl.Dial(ctx, p)
		assert.Error(t, err, name)
	}

	def, err := Listen("127.0.0.1:0", Config{Name: "d", PeerKeys: keys})
	require.NoError(t, err)
	defer def.Close()
	assert.Equal(t, "tcp://"+def.Addr().String(), def.Location().Hints[AddrHint])
}

// TestUnixSocket: the addr hint may name a Unix socket.
func TestUnixSocket(t *testing.T) {
	var ring keyring
	ring.share(t, "alice", "bob")
	dir := t.TempDir()
	nlB, err := Listen(dir+"/bob.sock", Config{Name: "bob", PeerKeys: ring.of("bob")})
	require.NoError(t, err)
	defer nlB.Close()
	assert.Equal(t, "unix://"+dir+"/bob.sock", nlB.Location().Hints[AddrHint])
	nlA := listen(t, "alice", &ring, Config{})
	c, err := nlA.Dial(testCtx(t), nlB.Location())
	require.NoError(t, err)
	defer c.Close()
	in, err := nlB.Accept()
	require.NoError(t, err)
	defer in.Close()
	_, err = in.Write([]byte("over a unix socket"))
	require.NoError(t, err)
	buf := make([]byte, 18)
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, err = io.ReadFull(c, buf)
	require.NoError(t, err)
	assert.Equal(t, "over a unix socket", string(buf))
}
