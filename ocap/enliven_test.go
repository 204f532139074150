package ocap

import (
	"context"
	"crypto/rand"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/bokbok-go/bokbok"
	"github.com/stretchr/testify/require"
)

// srCtx bounds one sturdyref test.
func srCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// srEcho is the object the sturdyref tests enliven.
type srEcho struct{ name string }

func (e *srEcho) Hello(who string) string { return "hello " + who + " from " + e.name }

// srHello checks that r answers hello(who) as the srEcho named name.
func srHello(ctx context.Context, t *testing.T, r Ref, who, name string) {
	t.Helper()
	res, err := r.Send("hello", who).Await(ctx)
	require.NoError(t, err)
	var s string
	require.NoError(t, res.Decode(&s))
	require.Equal(t, "hello "+who+" from "+name, s)
}

// srHostLog records the user of every connection a host opened, across
// restarts of the host.
type srHostLog struct {
	mu    sync.Mutex
	users []string
}

func (l *srHostLog) opened() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.users...)
}

// srHost is a Node served by a bokbok.Server on a real listener, as a
// sturdyref host is.
type srHost struct {
	addr   bokbok.Addr
	srv    *bokbok.Server
	log    *srHostLog
	served chan error
	once   sync.Once
}

// srAddr returns an address to listen on: a free loopback port, or a
// socket in a fresh directory (short, as socket paths must be).
func srAddr(t *testing.T, network string) bokbok.Addr {
	if network != "unix" {
		return bokbok.Addr{Network: "tcp", Address: "127.0.0.1:0"}
	}
	dir, err := os.MkdirTemp("", "ocap")
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(dir) })
	return bokbok.Addr{Network: "unix", Address: filepath.Join(dir, "host.sock")}
}

// srServe serves n on a, with n.UserKey(next), until the test ends or
// stop is called. log may be nil.
func srServe(t *testing.T, n *Node, a bokbok.Addr, realm string, next func(string) (bokbok.Key, bool), log *srHostLog) *srHost {
	t.Helper()
	ln, err := net.Listen(a.Network, a.Address)
	require.NoError(t, err)
	if a.Network == "tcp" {
		a.Address = ln.Addr().String()
	}
	if log == nil {
		log = &srHostLog{}
	}
	h := &srHost{addr: a, log: log, served: make(chan error, 1)}
	h.srv = &bokbok.Server{
		Config:  bokbok.Config{Handler: n, Realm: realm},
		UserKey: n.UserKey(next),
		OnOpen: func(c *bokbok.Conn) error {
			log.mu.Lock()
			log.users = append(log.users, c.User())
			log.mu.Unlock()
			return nil
		},
	}
	go func() { h.served <- h.srv.Serve(ln) }()
	t.Cleanup(h.stop)
	return h
}

// stop closes the server and its connections and waits until they are
// gone; the listener's address is free again.
func (h *srHost) stop() {
	h.once.Do(func() {
		h.srv.Close()
		<-h.served
		h.srv.Wait()
	})
}

// srOnlySession returns n's one session.
func srOnlySession(t *testing.T, n *Node) *Session {
	t.Helper()
	ss := n.Sessions()
	require.Len(t, ss, 1)
	return ss[0]
}

func srWaitDone(ctx context.Context, t *testing.T, s *Session) {
	t.Helper()
	select {
	case <-s.Done():
	case <-ctx.Done():
		t.Fatal("the session did not end")
	}
}

// srFlipped returns s with one bit of its swiss number changed.
func srFlipped(s Sturdyref) Sturdyref {
	s.Swiss = append([]byte(nil), s.Swiss...)
	s.Swiss[len(s.Swiss)/2] ^= 0x10
	return s
}

func TestEnliven(t *testing.T) {
	for _, network := range []string{"tcp", "unix"} {
		t.Run(network, func(t *testing.T) { testEnliven(t, network) })
	}
}

func testEnliven(t *testing.T, network string) {
	ctx := srCtx(t)
	vat := NewVat("bob")
	defer vat.Close()
	bob := &Node{}
	defer bob.Close()
	h := srServe(t, bob, srAddr(t, network), "", nil, nil)
	bob.Addr = h.addr.String()
	srA, err := bob.Register(vat.Spawn(&srEcho{"A"}))
	require.NoError(t, err)
	srB, err := bob.Register(vat.Spawn(&srEcho{"B"}))
	require.NoError(t, err)
	require.Equal(t, h.addr, srA.Addr)
	require.Len(t, srA.Swiss, SwissSize)
	require.NotEqual(t, srA.Swiss, srB.Swiss)

	// The client knows only the text, as another process would.
	srA, err = ParseSturdyref(srA.String())
	require.NoError(t, err)

	alice := &Node{}
	defer alice.Close()
	a, err := alice.Enliven(ctx, srA)
	require.NoError(t, err)
	srHello(ctx, t, a, "alice", "A")
	require.False(t, a.IsLocal())

	// A second sturdyref of the same host comes over the same connection.
	b, err := alice.Enliven(ctx, srB)
	require.NoError(t, err)
	srHello(ctx, t, b, "alice", "B")
	require.Len(t, alice.Sessions(), 1)
	require.Len(t, bob.Sessions(), 1)
	require.Len(t, h.log.opened(), 1)
	// Enlivening again gives the same reference.
	a2, err := alice.Enliven(ctx, srA)
	require.NoError(t, err)
	require.True(t, a == a2, "the same import")

	// An unknown swiss number, over the open connection and over a new one.
	bad := srFlipped(srA)
	_, err = alice.Enliven(ctx, bad)
	require.ErrorIs(t, err, ErrUnknownSturdyref)
	require.NotErrorIs(t, err, bokbok.ErrAuth, "the connection was already open")
	require.Len(t, alice.Sessions(), 1, "a failed enliven keeps the connection")
	carol := &Node{}
	defer carol.Close()
	_, err = carol.Enliven(ctx, bad)
	require.ErrorIs(t, err, ErrUnknownSturdyref)
	require.ErrorIs(t, err, bokbok.ErrAuth, "a new connection is refused in its handshake")
	require.Empty(t, carol.Sessions())

	// Revocation: the sturdyref is gone, the live reference stays.
	require.NoError(t, bob.Unregister(srB))
	require.ErrorIs(t, bob.Unregister(srB), ErrUnknownSturdyref)
	_, err = alice.Enliven(ctx, srB)
	require.ErrorIs(t, err, ErrUnknownSturdyref)
	_, err = carol.Enliven(ctx, srB)
	require.ErrorIs(t, err, ErrUnknownSturdyref)
	require.ErrorIs(t, err, bokbok.ErrAuth)
	srHello(ctx, t, b, "alice", "B")
	ca, err := carol.Enliven(ctx, srA)
	require.NoError(t, err)
	srHello(ctx, t, ca, "carol", "A")
	require.Len(t, h.log.opened(), 2, "failed handshakes open no connection")

	// Reconnect after the client's connection closes.
	require.NoError(t, srOnlySession(t, alice).Close())
	_, err = a.Send("hello", "alice").Await(ctx)
	require.ErrorIs(t, err, ErrDisconnected)
	a3, err := alice.Enliven(ctx, srA)
	require.NoError(t, err)
	srHello(ctx, t, a3, "alice", "A")
	require.True(t, a != a3, "a new import")
	require.Len(t, alice.Sessions(), 1)
	require.Len(t, h.log.opened(), 3)

	// Reconnect after the server dies and a new one, with the node's same
	// registrations, listens on the same address.
	as, cs := srOnlySession(t, alice), srOnlySession(t, carol)
	h.stop()
	srWaitDone(ctx, t, as)
	srWaitDone(ctx, t, cs)
	for _, r := range []Ref{a3, b, ca} {
		_, err = r.Send("hello", "anyone").Await(ctx)
		require.ErrorIs(t, err, ErrDisconnected)
	}
	_, err = alice.Enliven(ctx, srA)
	require.Error(t, err, "nobody listens")
	require.NotErrorIs(t, err, ErrUnknownSturdyref)
	require.Empty(t, alice.Sessions())
	require.Eventually(t, func() bool { return len(bob.Sessions()) == 0 }, 5*time.Second, 5*time.Millisecond)

	h2 := srServe(t, bob, h.addr, "", nil, h.log)
	defer h2.stop()
	a4, err := alice.Enliven(ctx, srA)
	require.NoError(t, err)
	srHello(ctx, t, a4, "alice", "A")
	ca, err = carol.Enliven(ctx, srA)
	require.NoError(t, err)
	srHello(ctx, t, ca, "carol", "A")
	_, err = alice.Enliven(ctx, srB)
	require.ErrorIs(t, err, ErrUnknownSturdyref, "revoked stays revoked")
	require.Len(t, h.log.opened(), 5)
}

func TestEnlivenConcurrentShareOneDial(t *testing.T) {
	ctx := srCtx(t)
	vat := NewVat("bob")
	defer vat.Close()
	bob := &Node{}
	defer bob.Close()
	h := srServe(t, bob, srAddr(t, "tcp"), "", nil, nil)
	bob.Addr = h.addr.String()
	var srs []Sturdyref
	for _, name := range []string{"A", "B", "C"} {
		sr, err := bob.Register(vat.Spawn(&srEcho{name}))
		require.NoError(t, err)
		srs = append(srs, sr)
	}
	names := []string{"A", "B", "C"}

	alice := &Node{}
	defer alice.Close()

	// Many at once for a sturdyref the host does not know: they share the
	// one failed dial, and the failure is not remembered.
	const n = 12
	var wg sync.WaitGroup
	errs := make([]error, n)
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			<-start
			_, errs[i] = alice.Enliven(ctx, srFlipped(srs[i%len(srs)]))
		})
	}
	close(start)
	wg.Wait()
	for _, err := range errs {
		require.ErrorIs(t, err, ErrUnknownSturdyref)
	}
	require.Empty(t, alice.Sessions())
	alice.mu.Lock()
	require.Empty(t, alice.hosts)
	alice.mu.Unlock()

	refs := make([]Ref, n)
	start = make(chan struct{})
	for i := range n {
		wg.Go(func() {
			<-start
			refs[i], errs[i] = alice.Enliven(ctx, srs[i%len(srs)])
		})
	}
	close(start)
	wg.Wait()
	for i := range n {
		require.NoError(t, errs[i])
		srHello(ctx, t, refs[i], "alice", names[i%len(srs)])
		require.True(t, refs[i%len(srs)] == refs[i], "one import per object")
	}
	require.Len(t, alice.Sessions(), 1)
	require.Len(t, bob.Sessions(), 1)
	require.Len(t, h.log.opened(), 1, "one dial for all")
}

func TestEnlivenRealm(t *testing.T) {
	ctx := srCtx(t)
	vat := NewVat("bob")
	defer vat.Close()
	bob := &Node{Realm: "realm-a"}
	defer bob.Close()
	h := srServe(t, bob, srAddr(t, "tcp"), "realm-a", nil, nil)
	bob.Addr = h.addr.String()
	sr, err := bob.Register(vat.Spawn(&srEcho{"A"}))
	require.NoError(t, err)
	require.Equal(t, "realm-a", sr.Realm)
	require.Contains(t, sr.String(), "?realm=realm-a")

	alice := &Node{}
	defer alice.Close()
	a, err := alice.Enliven(ctx, sr)
	require.NoError(t, err)
	srHello(ctx, t, a, "alice", "A")

	// A wrong realm is refused, even though a connection to the same
	// address (in the right realm) is open.
	for _, realm := range []string{"realm-b", "", "Realm-a"} {
		wrong := sr
		wrong.Realm = realm
		_, err = alice.Enliven(ctx, wrong)
		require.ErrorIs(t, err, ErrUnknownSturdyref, "realm %q", realm)
		require.ErrorIs(t, err, bokbok.ErrAuth, "realm %q", realm)
	}
	require.Len(t, alice.Sessions(), 1)
	require.Len(t, h.log.opened(), 1)
	srHello(ctx, t, a, "alice", "A")
}

// TestSturdyConnReachesOnlySwissNumbers plays a client that holds one
// sturdyref and tries to reach more than that object through the
// connection it opens with it.
func TestSturdyConnReachesOnlySwissNumbers(t *testing.T) {
	ctx := srCtx(t)
	vat := NewVat("bob")
	defer vat.Close()
	var fallbackCalls sync.Map
	bob := &Node{Fallback: bokbok.HandlerFunc(func(_ context.Context, req *bokbok.Request) (any, error) {
		fallbackCalls.Store(req.Conn().User(), true)
		return "application answer", nil
	})}
	defer bob.Close()
	bob.Bind("admin-panel", vat.Spawn(&srEcho{"admin panel"}))
	adminKey, err := bokbok.GenerateKey()
	require.NoError(t, err)
	h := srServe(t, bob, srAddr(t, "tcp"), "", func(user string) (bokbok.Key, bool) {
		return adminKey, user == "admin"
	}, nil)
	bob.Addr = h.addr.String()
	sr, err := bob.Register(vat.Spawn(&srEcho{"A"}))
	require.NoError(t, err)
	other, err := bob.Register(vat.Spawn(&srEcho{"B"}))
	require.NoError(t, err)

	mallory := &Node{}
	defer mallory.Close()
	key := sturdyKey(sr.Swiss)
	user := sturdyUserPrefix + sturdyID(sr.Swiss)
	s, err := mallory.Dial(ctx, h.addr.String(), &bokbok.Config{Key: &key, User: user})
	require.NoError(t, err)

	requireCode := func(err error, code string) {
		t.Helper()
		var re *bokbok.RemoteError
		require.ErrorAs(t, err, &re)
		require.Equal(t, code, re.Code, "%v", err)
	}

	// Names bound with Bind are out of reach, known or not.
	for _, name := range []string{"admin-panel", "nothing-here", ""} {
		_, err = s.Fetch(name).Await(ctx)
		requireCode(err, CodeNoMethod)
	}
	_, err = s.Fetch("admin-panel").Send("hello", "mallory").Await(ctx)
	requireCode(err, CodeNoMethod)
	_, err = s.Bootstrap().Send("frobnicate").Await(ctx)
	requireCode(err, CodeNoMethod)

	// So is the application's handler.
	_, err = s.Conn().Request(ctx, "hello application")
	requireCode(err, bokbok.CodeNoHandler)
	require.NoError(t, s.Conn().Notify(ctx, "a note for the application"))

	// Exports and answers that were never handed out name nothing.
	for id := uint64(1); id <= 4; id++ {
		_, err = Ref{t: &importRef{s: s, id: id}}.Send("hello", "mallory").Await(ctx)
		requireCode(err, CodeNoObject)
	}

	// Guessed swiss numbers find nothing; a malformed one is refused.
	guesses := [][]byte{nil, {}, []byte("admin-panel"), sr.Swiss[:minSwissSize], append(append([]byte(nil), sr.Swiss...), 0),
		[]byte(sturdyID(sr.Swiss)), []byte(user), make([]byte, SwissSize)}
	for i := range sr.Swiss {
		g := append([]byte(nil), sr.Swiss...)
		g[i] ^= 1 << (i % 8)
		guesses = append(guesses, g)
	}
	for range 32 {
		g := make([]byte, SwissSize)
		rand.Read(g)
		guesses = append(guesses, g)
	}
	for _, g := range guesses {
		_, err = s.Bootstrap().Send("enliven", g).Await(ctx)
		requireCode(err, CodeNotFound)
	}
	_, err = s.Bootstrap().Send("enliven").Await(ctx)
	requireCode(err, CodeBadArgs)
	_, err = s.Bootstrap().Send("enliven", 42).Await(ctx)
	requireCode(err, CodeBadArgs)

	// The swiss number it holds works, and so would any other it were given.
	res, err := s.Bootstrap().Send("enliven", sr.Swiss).Await(ctx)
	require.NoError(t, err)
	a, err := res.Ref()
	require.NoError(t, err)
	srHello(ctx, t, a, "mallory", "A")
	res, err = s.Bootstrap().Send("enliven", other.Swiss).Await(ctx)
	require.NoError(t, err)
	b, err := res.Ref()
	require.NoError(t, err)
	srHello(ctx, t, b, "mallory", "B")
	// The capability messages above came after the note, in order: the
	// note has been handled (and not by the application).
	_, ok := fallbackCalls.Load(user)
	require.False(t, ok, "the application's handler was reached")

	// The host saw a user name that holds no piece of the swiss number.
	users := h.log.opened()
	require.Equal(t, []string{user}, users)
	require.Regexp(t, `^sturdy:[A-Za-z0-9_-]{22}$`, user)
	srRequireNoSwissPart(t, user, sr.Swiss)

	// Without the derived key the user name is worthless.
	for _, k := range []bokbok.Key{sturdyKey(other.Swiss), adminKey, {}} {
		c, err := bokbok.Dial(ctx, h.addr.String(), &bokbok.Config{Key: &k, User: user})
		require.ErrorIs(t, err, bokbok.ErrAuth)
		require.Nil(t, c)
	}

	// Other users, through the next lookup, are not restricted: the
	// restriction is the sturdyref connection's.
	admin := &Node{}
	defer admin.Close()
	as, err := admin.Dial(ctx, h.addr.String(), &bokbok.Config{Key: &adminKey, User: "admin"})
	require.NoError(t, err)
	res, err = as.Fetch("admin-panel").Await(ctx)
	require.NoError(t, err)
	p, err := res.Ref()
	require.NoError(t, err)
	srHello(ctx, t, p, "admin", "admin panel")
	var answer string
	require.NoError(t, as.Conn().Call(ctx, "hello application", &answer))
	require.Equal(t, "application answer", answer)
	_, ok = fallbackCalls.Load("admin")
	require.True(t, ok)
	_, ok = fallbackCalls.Load(user)
	require.False(t, ok)

	// A client that enlivens the usual way authenticates the same way.
	alice := &Node{}
	defer alice.Close()
	_, err = alice.Enliven(ctx, other)
	require.NoError(t, err)
	users = h.log.opened()
	require.Len(t, users, 3)
	require.Equal(t, sturdyUserPrefix+sturdyID(other.Swiss), users[2])
	srRequireNoSwissPart(t, users[2], other.Swiss)
}

func TestRegisterAddr(t *testing.T) {
	vat := NewVat("v")
	defer vat.Close()
	r := vat.Spawn(&srEcho{"x"})
	for addr, want := range map[string]bokbok.Addr{
		"127.0.0.1:7000":       {Network: "tcp", Address: "127.0.0.1:7000"},
		"tcp://[::1]:7000":     {Network: "tcp", Address: "[::1]:7000"},
		"host.example:1":       {Network: "tcp", Address: "host.example:1"},
		"/run/s/app.sock":      {Network: "unix", Address: "/run/s/app.sock"},
		"unix:///run/app.sock": {Network: "unix", Address: "/run/app.sock"},
	} {
		n := &Node{Addr: addr, Realm: "r"}
		sr, err := n.Register(r)
		require.NoError(t, err, addr)
		require.Equal(t, want, sr.Addr)
		require.Equal(t, "r", sr.Realm)
		got, err := ParseSturdyref(sr.String())
		require.NoError(t, err, "Register made a sturdyref whose URI does not parse")
		require.Equal(t, sr, got)
	}
	for addr, why := range map[string]string{
		"":             "Node.Addr is empty",
		"sock":         "ambiguous",
		"./app.sock":   "absolute socket path",
		"run/app.sock": "absolute socket path",
		"http://h:1":   "unknown scheme",
	} {
		_, err := (&Node{Addr: addr}).Register(r)
		require.ErrorContains(t, err, why, addr)
	}
	_, err := (&Node{Addr: "127.0.0.1:7000"}).Register(Ref{})
	require.ErrorContains(t, err, "zero Ref")
}

// TestEnlivenSharedDialOutlivesItsDialler: when the caller whose dial
// others share gives up (its context ends), the others dial again with
// their own contexts instead of failing with its error.
func TestEnlivenSharedDialOutlivesItsDialler(t *testing.T) {
	ctx := srCtx(t)
	vat := NewVat("bob")
	defer vat.Close()
	bob := &Node{}
	defer bob.Close()
	srv := &bokbok.Server{Config: bokbok.Config{Handler: bob}, UserKey: bob.UserKey(nil)}
	defer srv.Wait()
	defer srv.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	bob.Addr = ln.Addr().String()
	sr, err := bob.Register(vat.Spawn(&srEcho{"A"}))
	require.NoError(t, err)

	// The first connection is accepted and never answered; later ones are
	// served.
	first := make(chan net.Conn, 1)
	accepted := make(chan struct{})
	var served sync.WaitGroup
	defer served.Wait()
	go func() {
		for n := 0; ; n++ {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			if n == 0 {
				first <- nc
				close(accepted)
				continue
			}
			served.Go(func() { srv.ServeConn(ctx, nc) })
		}
	}()
	defer ln.Close()
	defer func() {
		select {
		case nc := <-first:
			nc.Close()
		default:
		}
	}()

	alice := &Node{}
	defer alice.Close()
	ctx1, cancel1 := context.WithCancel(ctx)
	err1 := make(chan error, 1)
	go func() {
		_, err := alice.Enliven(ctx1, sr)
		err1 <- err
	}()
	<-accepted
	res := make(chan error, 1)
	go func() {
		r, err := alice.Enliven(ctx, sr)
		if err == nil {
			_, err = r.Send("hello", "alice").Await(ctx)
		}
		res <- err
	}()
	// Let the second caller join the dial under way, then give up the first.
	time.Sleep(50 * time.Millisecond)
	cancel1()
	require.ErrorIs(t, <-err1, context.Canceled)
	require.NoError(t, <-res)
	require.Len(t, alice.Sessions(), 1)
}
