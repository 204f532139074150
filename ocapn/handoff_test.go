package ocapn

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/bokbok-go/bokbok/ocapn/syrup"
)

// The node as each of the three roles of a third-party handoff, against
// raw peers that play the other two (as the OCapN test suite does), and
// three Go nodes handing a reference off for real.

// sessionID of a raw peer's session with the node.
func (p *rawPeer) sessionID() []byte { return sessionID(publicID(p.key.pub), publicID(p.them)) }

// signedGive is a handoff-give for receiverKey, signed by key as the
// gifter of session (gifter side publicID(key.pub)).
func signedGive(t testing.TB, key sessionKey, receiverKey ed25519.PublicKey, exporter Peer, session, giftID []byte) syrup.Record {
	env, err := sigEnvelope(syrup.Record{Label: sym("desc:handoff-give"), Fields: []any{
		publicKeySyrup(receiverKey), exporter.syrup(), session, publicID(key.pub), giftID,
	}}, key.priv)
	require.NoError(t, err)
	return env
}

// exporterCase: peer g deposits the greeter it fetched as a gift for a
// receiver whose key is rKey, and peer r withdraws it on its own session.
type exporterCase struct {
	g, r      *rawPeer
	rKey      sessionKey // the receiver's key "in its session with the gifter"
	greeter   int
	giftID    []byte
	give      syrup.Record
	nodeLoc   Peer
	withdrawn int // resolver of the last withdraw
}

func newExporterCase(t *testing.T) *exporterCase {
	_, nl := testNode(t, Config{})
	c := &exporterCase{g: dialRaw(t, nl), r: dialRaw(t, nl), nodeLoc: nl.Location(), giftID: []byte("my-gift")}
	c.g.hello()
	c.r.hello()
	var err error
	c.rKey, err = newSessionKey()
	require.NoError(t, err)
	c.greeter = c.g.fetch(swissGreeter)
	c.give = signedGive(t, c.g.key, c.rKey.pub, c.nodeLoc, c.g.sessionID(), c.giftID)
	return c
}

func (c *exporterCase) deposit() {
	c.g.send(syrup.Record{Label: sym("op:deliver-only"), Fields: []any{exportDesc(0),
		[]any{sym("deposit-gift"), c.giftID, exportDesc(c.greeter)}}})
}

// withdraw sends withdraw-gift with a handoff-receive; sign signs it.
func (c *exporterCase) withdraw(t *testing.T, count int64, session, side []byte, sign func([]byte) []byte) {
	recv := syrup.Record{Label: sym("desc:handoff-receive"), Fields: []any{session, side, count, c.give}}
	enc, err := syrup.Marshal(recv)
	require.NoError(t, err)
	env := syrup.Record{Label: sym("desc:sig-envelope"), Fields: []any{recv, signatureSyrup(sign(enc))}}
	c.withdrawn, _ = c.r.deliver(exportDesc(0), []any{sym("withdraw-gift"), env}, false)
}

func (c *exporterCase) validWithdraw(t *testing.T, count int64) {
	c.withdraw(t, count, c.r.sessionID(), publicID(c.r.key.pub), func(b []byte) []byte { return ed25519.Sign(c.rKey.priv, b) })
}

func (c *exporterCase) result(t *testing.T) []any { return c.r.resolution(c.withdrawn) }

func fulfilledWithObject(t *testing.T, got []any) {
	t.Helper()
	require.Equal(t, sym("fulfill"), got[0], "%v", got)
	_, _, ok := descriptor(got[1], "desc:import-object")
	assert.True(t, ok, "the gift is %v", got[1])
}

func TestNodeAsExporter(t *testing.T) {
	t.Run("gift deposited first", func(t *testing.T) {
		c := newExporterCase(t)
		c.deposit()
		c.validWithdraw(t, 0)
		fulfilledWithObject(t, c.result(t))
	})
	t.Run("gift deposited after the withdrawal", func(t *testing.T) {
		c := newExporterCase(t)
		c.validWithdraw(t, 0)
		time.Sleep(20 * time.Millisecond) // let the withdrawal arrive first (either order must work)
		c.deposit()
		fulfilledWithObject(t, c.result(t))
	})
	t.Run("the gift is the greeter", func(t *testing.T) {
		c := newExporterCase(t)
		c.deposit()
		c.validWithdraw(t, 0)
		got := c.result(t)
		_, pos, _ := descriptor(got[1], "desc:import-object")
		me := c.r.newImport()
		c.r.send(syrup.Record{Label: sym("op:deliver-only"), Fields: []any{exportDesc(pos), []any{importObj(me)}}})
		hello := c.r.resolution(me)
		assert.Equal(t, "Hello", hello[0])
	})
	rejected := []struct {
		name     string
		withdraw func(t *testing.T, c *exporterCase)
	}{
		{"a reused handoff count", func(t *testing.T, c *exporterCase) {
			c.deposit()
			c.validWithdraw(t, 0)
			fulfilledWithObject(t, c.result(t))
			c.deposit()
			c.validWithdraw(t, 0)
		}},
		{"a receive not signed by the receiver the gifter named", func(t *testing.T, c *exporterCase) {
			c.deposit()
			other, _ := newSessionKey()
			c.withdraw(t, 0, c.r.sessionID(), publicID(c.r.key.pub), func(b []byte) []byte { return ed25519.Sign(other.priv, b) })
		}},
		{"a receive with a bad signature", func(t *testing.T, c *exporterCase) {
			c.deposit()
			c.withdraw(t, 0, c.r.sessionID(), publicID(c.r.key.pub), func([]byte) []byte { return ed25519.Sign(c.rKey.priv, []byte("something else")) })
		}},
		{"a receive for another session", func(t *testing.T, c *exporterCase) {
			c.deposit()
			c.withdraw(t, 0, c.g.sessionID(), publicID(c.r.key.pub), func(b []byte) []byte { return ed25519.Sign(c.rKey.priv, b) })
		}},
		{"a receive naming another receiving side", func(t *testing.T, c *exporterCase) {
			c.deposit()
			c.withdraw(t, 0, c.r.sessionID(), publicID(c.g.key.pub), func(b []byte) []byte { return ed25519.Sign(c.rKey.priv, b) })
		}},
		{"a give not signed by the gifter", func(t *testing.T, c *exporterCase) {
			c.deposit()
			forger, _ := newSessionKey()
			c.give = signedGive(t, forger, c.rKey.pub, c.nodeLoc, c.g.sessionID(), c.giftID)
			c.validWithdraw(t, 0)
		}},
		{"a give naming an unknown session", func(t *testing.T, c *exporterCase) {
			c.deposit()
			c.give = signedGive(t, c.g.key, c.rKey.pub, c.nodeLoc, make([]byte, 32), c.giftID)
			c.validWithdraw(t, 0)
		}},
		{"the gifter's session ends before the deposit", func(t *testing.T, c *exporterCase) {
			c.validWithdraw(t, 0)
			time.Sleep(20 * time.Millisecond)
			c.g.c.Close()
		}},
	}
	for _, tc := range rejected {
		t.Run("breaks: "+tc.name, func(t *testing.T) {
			c := newExporterCase(t)
			tc.withdraw(t, c)
			got := c.result(t)
			assert.Equal(t, sym("break"), got[0], "%v", got)
		})
	}
}

func TestHandoffCounts(t *testing.T) {
	var h handoffCounts
	for _, c := range []int64{0, 1, 3, 2, 5} {
		require.True(t, h.use(c, 4), "count %d", c)
	}
	assert.Equal(t, int64(4), h.low)
	for _, c := range []int64{0, 1, 2, 3, 5} {
		assert.False(t, h.use(c, 4), "count %d again", c)
	}
	for _, c := range []int64{7, 8, 9} {
		require.True(t, h.use(c, 4))
	}
	assert.False(t, h.use(100, 4), "beyond the limit of counts out of order")
	assert.True(t, h.use(4, 4))
	assert.Equal(t, int64(6), h.low)
}

// rawListener is a raw peer's own location, which the node dials.
type rawListener struct {
	ln  net.Listener
	loc Peer
	key sessionKey
}

func listenRaw(t *testing.T) *rawListener {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { ln.Close() })
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	key, err := newSessionKey()
	require.NoError(t, err)
	return &rawListener{ln: ln, key: key, loc: Peer{Transport: TestingOnlyTransport, Designator: fmt.Sprintf("exporter%s", port),
		Hints: map[string]string{"host": "127.0.0.1", "port": port}}}
}

func (l *rawListener) accept(t *testing.T) *rawPeer {
	l.ln.(*net.TCPListener).SetDeadline(time.Now().Add(10 * time.Second))
	c, err := l.ln.Accept()
	require.NoError(t, err)
	t.Cleanup(func() { c.Close() })
	return &rawPeer{t: t, c: c, dec: syrup.NewDecoder(c, syrup.Limits{}), key: l.key, loc: l.loc, imp: 1}
}

// TestNodeAsReceiver: a raw gifter sends the node's greeter a handoff-give
// for an object of a raw exporter; the node dials the exporter and
// withdraws the gift with a receive it signed with its key of the gifter
// session, on a fresh handoff count.
func TestNodeAsReceiver(t *testing.T) {
	_, nl := testNode(t, Config{})
	g := dialRaw(t, nl)
	g.hello()
	greeter := g.fetch(swissGreeter)
	exporter := listenRaw(t)
	geKey, err := newSessionKey()
	require.NoError(t, err)
	geSession := make([]byte, 32)
	rand.Read(geSession)

	var e *rawPeer // the node's session with the exporter, opened by the first handoff
	for i, gift := range [][]byte{[]byte("first gift"), []byte("second gift")} {
		give := signedGive(t, geKey, g.them, exporter.loc, geSession, gift)
		g.send(syrup.Record{Label: sym("op:deliver-only"), Fields: []any{exportDesc(greeter), []any{give}}})

		if i == 0 {
			e = exporter.accept(t)
			e.hello()
		}
		msg := e.expectTo(exportDesc(0))
		args := msg.Fields[1].([]any)
		require.Equal(t, sym("withdraw-gift"), args[0])
		recv, enc, sig, err := openEnvelope(args[1], "desc:handoff-receive")
		require.NoError(t, err)
		assert.True(t, ed25519.Verify(g.them, enc, sig), "signed with the node's key of the gifter session")
		require.Len(t, recv.Fields, 4)
		assert.Equal(t, sessionID(publicID(exporter.key.pub), publicID(e.them)), recv.Fields[0], "receiving-session")
		assert.Equal(t, publicID(e.them), recv.Fields[1], "receiving-side")
		assert.Equal(t, int64(i), recv.Fields[2], "handoff-count")
		assert.True(t, syrup.Equal(give, recv.Fields[3]), "the give, as sent")

		// The exporter answers with an object of its own; the greeter's
		// "Hello" then reaches it directly.
		obj := e.newImport()
		e.send(syrup.Record{Label: sym("op:deliver-only"), Fields: []any{asExport(msg.Fields[3]),
			[]any{sym("fulfill"), importObj(obj)}}})
		hello := e.expectTo(exportDesc(obj))
		assert.Equal(t, "Hello", hello.Fields[1].([]any)[0])
	}

	// A give for another receiver breaks the message, not the session.
	other, _ := newSessionKey()
	give := signedGive(t, geKey, other.pub, exporter.loc, geSession, []byte("not yours"))
	res, _ := g.deliver(exportDesc(greeter), []any{give}, false)
	assert.Equal(t, sym("break"), g.resolution(res)[0])
	g.fetch(swissGreeter) // the session goes on
}

// asExport names an import descriptor's position as the export it is to
// the other side.
func asExport(desc any) syrup.Record {
	_, pos, _ := descriptor(desc, "desc:import-object", "desc:import-promise")
	return exportDesc(pos)
}

// TestNodeAsGifter: a raw receiver has the node's enlivener enliven a
// sturdyref to a raw exporter; the node fetches the object and answers
// the receiver with a handoff-give, signed with its key of the exporter
// session, after depositing the object with the exporter under the gift
// id it names.
func TestNodeAsGifter(t *testing.T) {
	_, nl := testNode(t, Config{})
	r := dialRaw(t, nl)
	r.hello()
	e := dialRaw(t, nl)
	e.hello()
	enlivener := r.fetch(swissEnlivener)

	sr := Sturdyref{Peer: e.loc, Swiss: []byte("an object of the exporter")}
	res, _ := r.deliver(exportDesc(enlivener), []any{sr.Value()}, false)
	fetch := e.expectTo(exportDesc(0))
	require.Equal(t, []any{sym("fetch"), sr.Swiss}, fetch.Fields[1])
	obj := e.newImport()
	e.send(syrup.Record{Label: sym("op:deliver-only"), Fields: []any{asExport(fetch.Fields[3]), []any{sym("fulfill"), importObj(obj)}}})

	deposit := e.expectTo(exportDesc(0))
	args := deposit.Fields[1].([]any)
	require.Len(t, args, 3)
	assert.Equal(t, sym("deposit-gift"), args[0])
	assert.Equal(t, exportDesc(obj), args[2], "the deposited object is the exporter's own")
	giftID := args[1].([]byte)
	assert.Len(t, giftID, 32)

	got := r.resolution(res)
	require.Equal(t, sym("fulfill"), got[0], "%v", got)
	give, enc, sig, err := openEnvelope(got[1], "desc:handoff-give")
	require.NoError(t, err)
	assert.True(t, ed25519.Verify(e.them, enc, sig), "signed with the node's key of the exporter session")
	g, err := parseHandoffGive(give)
	require.NoError(t, err)
	assert.Equal(t, r.key.pub, g.receiverKey)
	assert.True(t, g.exporter.Same(e.loc))
	assert.Equal(t, e.sessionID(), g.session)
	assert.Equal(t, publicID(e.them), g.gifterSide)
	assert.Equal(t, giftID, g.giftID)
}

// TestThreeNodeHandoff: A holds a reference to C's counter and passes it
// to B's keeper. B reaches the counter on its own session with C, not
// through A: once A is stopped, B and C keep talking.
func TestThreeNodeHandoff(t *testing.T) {
	a, _ := testNode(t, Config{})
	b, nlB := testNode(t, Config{})
	c, nlC := testNode(t, Config{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	count := 0
	swissCounter, swissKeeper := []byte("counter"), []byte("keeper")
	c.Register(swissCounter, ObjectFunc(func([]any) (any, error) { count++; return int64(count), nil }))
	kept := make(chan any, 1)
	b.Register(swissKeeper, ObjectFunc(func(args []any) (any, error) { kept <- args[0]; return nil, nil }))

	counter, err := a.Enliven(Sturdyref{Peer: nlC.Location(), Swiss: swissCounter}).Wait(ctx)
	require.NoError(t, err)
	keeper, err := a.Enliven(Sturdyref{Peer: nlB.Location(), Swiss: swissKeeper}).Wait(ctx)
	require.NoError(t, err)
	_, err = keeper.(*Ref).Deliver(counter).Wait(ctx)
	require.NoError(t, err)

	var gift any
	select {
	case gift = <-kept:
	case <-ctx.Done():
		t.Fatal("the keeper got nothing")
	}
	require.IsType(t, &Promise{}, gift, "a handed-off reference arrives as a promise")
	ref, err := gift.(*Promise).Wait(ctx)
	require.NoError(t, err)
	require.IsType(t, &Ref{}, ref)
	assert.True(t, ref.(*Ref).Peer().Same(nlC.Location()), "B holds the counter through C, not A")

	v, err := b.Send(ref, "tick").Wait(ctx)
	require.NoError(t, err)
	assert.Equal(t, int64(1), v)

	require.NoError(t, a.Close())
	v, err = ref.(*Ref).Deliver().Wait(ctx)
	require.NoError(t, err, "B and C go on without A")
	assert.Equal(t, int64(2), v)
}
