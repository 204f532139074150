package pipes

import (
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

// After a clean stop of a hub and its nodes, the process holds no more
// goroutines or file descriptors than before (the child processes of the
// process tests check the same on SIGTERM).
func TestCleanStopReleasesEverything(t *testing.T) {
	baseFD, baseG := countFDs(), goleak.IgnoreCurrent()
	func() {
		keys := newTestKeys("alice", "bob")
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		h, err := NewHub(HubConfig{Dir: t.TempDir(), UserKeys: keys.UserKeys})
		require.NoError(t, err)
		done := make(chan error, 1)
		go func() { done <- h.Serve(ln) }()
		ctx := testCtx(t, 30*time.Second)
		var nodes []*Node
		var cs []*collector
		for _, u := range []string{"alice", "bob"} {
			n, err := OpenNode(NodeConfig{Dir: t.TempDir(), Hub: ln.Addr().String(), User: u, Key: keys.key(u)})
			require.NoError(t, err)
			nodes = append(nodes, n)
			for _, opts := range []*PipelineOptions{{Persistent: true}, nil} {
				p, err := n.Pipeline(fmt.Sprint("P", opts != nil), opts)
				require.NoError(t, err)
				c := newCollector()
				p.Listen(c.listen)
				if opts != nil {
					cs = append(cs, c)
					_, err = p.Put(ctx, []byte("x"))
					require.NoError(t, err)
				}
			}
		}
		for _, c := range cs {
			c.waitFor(t, ctx, 2)
		}
		for _, n := range nodes {
			require.NoError(t, n.Close())
		}
		require.NoError(t, h.Close())
		<-done
	}()
	require.NoError(t, goleak.Find(baseG))
	require.Eventually(t, func() bool { return countFDs() <= baseFD }, 10*time.Second, 10*time.Millisecond, "descriptors: %d, before %d", countFDs(), baseFD)
}
