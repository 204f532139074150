package ocapn

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/bokbok-go/bokbok/ocapn/syrup"
)

// TestMessagesToAnswersArePipelined: messages sent to the promise of a
// question the node asked go out at once, to the question's answer
// position, before the peer has answered anything (promise pipelining on
// the wire). Once the answer is in and its position given back, messages
// go to what it resolved to.
func TestMessagesToAnswersArePipelined(t *testing.T) {
	n, _ := testNode(t, Config{})
	peer := listenRaw(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	factory := n.Enliven(Sturdyref{Peer: peer.loc, Swiss: []byte("factory")})
	carP := n.Send(factory, sym("make-car"), "Explorist")
	noise := n.Send(carP, sym("drive"))

	e := peer.accept(t)
	e.hello()
	fetch := e.expect("op:deliver")
	require.Equal(t, exportDesc(0), fetch.Fields[0])
	fetchAnswer := fetch.Fields[2].(int64)
	makeCar := e.expect("op:deliver")
	assert.Equal(t, answerDesc(int(fetchAnswer)), makeCar.Fields[0], "make-car goes to the fetch's answer")
	assert.Equal(t, []any{sym("make-car"), "Explorist"}, makeCar.Fields[1])
	drive := e.expect("op:deliver")
	assert.Equal(t, answerDesc(int(makeCar.Fields[2].(int64))), drive.Fields[0], "drive goes to make-car's answer")

	// The peer answers drive; the node's promise settles.
	e.send(syrup.Record{Label: sym("op:deliver-only"), Fields: []any{asExport(drive.Fields[3]), []any{sym("fulfill"), "vroom"}}})
	v, err := noise.Wait(ctx)
	require.NoError(t, err)
	assert.Equal(t, "vroom", v)

	// The fetch is answered with an object: once the answer is given
	// back, a message to the promise goes to the object itself.
	obj := e.newImport()
	e.send(syrup.Record{Label: sym("op:deliver-only"), Fields: []any{asExport(fetch.Fields[3]), []any{sym("fulfill"), importObj(obj)}}})
	for gc := e.expect("op:gc-answer"); !syrup.Equal(gc.Fields[0], []any{fetchAnswer}); gc = e.expect("op:gc-answer") {
		// drive's answer, given back first
	}
	_, err = factory.Wait(ctx)
	require.NoError(t, err)
	n.SendOnly(factory, sym("honk"))
	honk := e.expect("op:deliver")
	assert.Equal(t, exportDesc(obj), honk.Fields[0])
}
