package ocapn

import (
	"bytes"
	"context"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/bokbok-go/bokbok/ocapn/syrup"
)

// TestCrossedHellos: the node dials a peer (through the sturdyref
// enlivener) while that peer dials the node. Whichever session's
// identifier is lower is aborted, on the side the draft says: the node's
// outbound session's key against the peer's on the node's inbound one.
func TestCrossedHellos(t *testing.T) {
	for _, nodeOutboundLoses := range []bool{true, false} {
		name := "the node's outbound session loses"
		if !nodeOutboundLoses {
			name = "the node's inbound session loses"
		}
		t.Run(name, func(t *testing.T) {
			_, nl := testNode(t, Config{})
			p := dialRaw(t, nl)
			p.hello()
			enlivener := p.fetch(swissEnlivener)

			// A second identity of the raw side, listening, for the node to dial.
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			require.NoError(t, err)
			defer ln.Close()
			port := strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
			other := Peer{Transport: TestingOnlyTransport, Designator: "other-" + port, Hints: map[string]string{"host": "127.0.0.1", "port": port}}
			sr := Sturdyref{Peer: other, Swiss: []byte("my-object")}
			p.send(syrup.Record{Label: sym("op:deliver-only"), Fields: []any{exportDesc(enlivener), []any{sr.Value()}}})

			ln.(*net.TCPListener).SetDeadline(time.Now().Add(10 * time.Second))
			c, err := ln.Accept()
			require.NoError(t, err)
			defer c.Close()
			in := &rawPeer{t: t, c: c, dec: syrup.NewDecoder(c, syrup.Limits{}), loc: other}
			st := in.expect("op:start-session") // the node's hello on the session it opened
			nodeOut, err := parseStartSession(st)
			require.NoError(t, err)

			// Now the raw side opens its own session to the node, from the
			// same location, with a key that makes the chosen side lose.
			out := dialRaw(t, nl)
			out.loc = other
			for {
				k, err := newSessionKey()
				require.NoError(t, err)
				nodeOutLower := bytes.Compare(publicID(nodeOut.pub), publicID(k.pub)) < 0
				if nodeOutLower == nodeOutboundLoses {
					out.key = k
					break
				}
			}
			b, err := startSessionMessage(out.key, out.loc)
			require.NoError(t, err)
			out.c.Write(b)

			if nodeOutboundLoses {
				in.expect("op:abort") // on the connection the node dialed
				out.expect("op:start-session")
			} else {
				out.expect("op:abort")
			}
		})
	}
}

// TestGoToGo: two nodes over tcp-testing-only. One enlivens the other's
// sturdyref, calls through it with pipelining, and passes one of its own
// objects, which the other calls back.
func TestGoToGo(t *testing.T) {
	a, _ := testNode(t, Config{})
	b, nlB := testNode(t, Config{})

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	sr, err := b.Sturdyref(ctx, TestingOnlyTransport, swissCarFactoryBuilder)
	require.NoError(t, err)
	assert.Equal(t, nlB.Location().Designator, sr.Peer.Designator)
	parsed, err := ParseSturdyref(sr.String())
	require.NoError(t, err)

	builder, err := a.Enliven(parsed).Wait(ctx)
	require.NoError(t, err)
	ref := builder.(*Ref)
	factory, err := ref.Deliver().Wait(ctx)
	require.NoError(t, err)
	car, err := factory.(*Ref).Deliver([]any{sym("blue"), sym("sedan")}).Wait(ctx)
	require.NoError(t, err)
	vroom, err := car.(*Ref).Deliver().Wait(ctx)
	require.NoError(t, err)
	assert.Equal(t, "Vroom! I am a blue sedan car!", vroom)

	_, err = factory.(*Ref).Deliver("not a car").Wait(ctx)
	var be *BrokenError
	require.ErrorAs(t, err, &be)

	// A's object, passed to B's greeter, is called back on A.
	heard := make(chan any, 1)
	greeterRef, err := a.Enliven(Sturdyref{Peer: sr.Peer, Swiss: swissGreeter}).Wait(ctx)
	require.NoError(t, err)
	greeterRef.(*Ref).DeliverOnly(ObjectFunc(func(args []any) (any, error) {
		heard <- args[0]
		return "thanks", nil
	}))
	select {
	case v := <-heard:
		assert.Equal(t, "Hello", v)
	case <-ctx.Done():
		t.Fatal("the greeting never came")
	}
}
