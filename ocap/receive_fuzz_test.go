package ocap

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// FuzzSessionReceive feeds arbitrary bytes to a session as capability
// messages from its peer: whatever they are, the session either handles
// them or ends with a *ProtocolError, and never panics; the node keeps
// serving a healthy session afterwards.
func FuzzSessionReceive(f *testing.F) {
	for _, ex := range capExamples {
		f.Add(ex.bytes(&testing.T{}))
	}
	f.Add(newOp(opDeliver, 5).desc(desc{descYourExport, 1}).str("drive").raw([]byte{0x91, 0xd6, 0x62, 0, 0, 0, 7}).descs(nil).nil().bytes())
	f.Add(newOp(opRelease, 2).uint(1).uint(1).bytes())
	f.Add(newOp(opFinish, 1).uint(9).bytes())
	f.Add(newOp(opAbort, 1).str("bye").bytes())
	f.Add([]byte{0x91, 0xa3, 'o', 'p', ':'})
	f.Fuzz(func(t *testing.T, msg []byte) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		vat := NewVat("fuzz")
		defer vat.Close()
		var server, client Node
		server.Bind("car", vat.Spawn(&car{"Fuzz", "grey"}))
		cs, ss, err := Pipe(ctx, &client, &server)
		require.NoError(t, err)
		defer cs.Close()
		defer ss.Close()
		// Export something, so that ids 1 and up can name a real object.
		_, err = cs.Fetch("car").Send("drive").Await(ctx)
		require.NoError(t, err)

		if _, ok := capOp(msg); ok {
			ss.receive(msg)
		}
		select {
		case <-ss.Done():
			if err := ss.Err(); err != nil {
				var pe *ProtocolError
				require.ErrorAs(t, err, &pe)
			}
		default:
		}
		// The node still serves a new session.
		cs2, ss2, err := Pipe(ctx, &client, &server)
		require.NoError(t, err)
		defer cs2.Close()
		defer ss2.Close()
		_, err = cs2.Fetch("car").Send("drive").Await(ctx)
		require.NoError(t, err)
	})
}
