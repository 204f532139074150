package jetstream

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/stretchr/testify/require"
)

// cluster is an embedded JetStream cluster on loopback whose servers can
// be shut down and started again on the same ports and store.
type cluster struct {
	t    testing.TB
	mu   sync.Mutex
	opts []*server.Options
	srvs []*server.Server // nil while shut down
}

// freePorts returns n loopback ports that were free a moment ago.
func freePorts(t testing.TB, n int) []int {
	var lns []net.Listener
	var ports []int
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		lns = append(lns, ln)
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	for _, ln := range lns {
		ln.Close()
	}
	return ports
}

// startCluster starts n JetStream servers (1 for a single server) and
// waits for a meta leader. They are shut down at the end of the test.
func startCluster(t testing.TB, n int) *cluster {
	t.Helper()
	ports := freePorts(t, 2*n)
	c := &cluster{t: t}
	name := fmt.Sprintf("C%d", time.Now().UnixNano()%100000)
	for i := range n {
		o := &server.Options{
			ServerName:         fmt.Sprintf("S%d", i+1),
			Host:               "127.0.0.1",
			Port:               ports[i],
			JetStream:          true,
			StoreDir:           t.TempDir(),
			JetStreamMaxMemory: 256 << 20,
			JetStreamMaxStore:  1 << 30,
			NoLog:              true,
			NoSigs:             true,
		}
		if n > 1 {
			o.Cluster = server.ClusterOpts{Name: name, Host: "127.0.0.1", Port: ports[n+i]}
			for j := range n {
				if j != i {
					o.Routes = append(o.Routes, &url.URL{Scheme: "nats", Host: fmt.Sprintf("127.0.0.1:%d", ports[n+j])})
				}
			}
		}
		c.opts = append(c.opts, o)
		c.srvs = append(c.srvs, nil)
	}
	for i := range n {
		c.start(i)
	}
	t.Cleanup(c.shutdown)
	c.waitReady()
	return c
}

func (c *cluster) start(i int) {
	c.t.Helper()
	o := *c.opts[i]
	s, err := server.NewServer(&o)
	require.NoError(c.t, err)
	go s.Start()
	require.True(c.t, s.ReadyForConnections(30*time.Second), "server %d not ready", i)
	c.mu.Lock()
	c.srvs[i] = s
	c.mu.Unlock()
}

// waitReady waits until the cluster has a JetStream meta leader and
// every running server is current with it.
func (c *cluster) waitReady() {
	c.t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		leader, current := false, true
		c.mu.Lock()
		for _, s := range c.srvs {
			if s == nil {
				continue
			}
			if s.JetStreamIsLeader() {
				leader = true
			}
			if !s.JetStreamIsCurrent() {
				current = false
			}
		}
		c.mu.Unlock()
		if leader && current {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	c.t.Fatal("no JetStream meta leader")
}

// stop shuts server i down.
func (c *cluster) stop(i int) {
	c.mu.Lock()
	s := c.srvs[i]
	c.srvs[i] = nil
	c.mu.Unlock()
	if s != nil {
		s.Shutdown()
		s.WaitForShutdown()
	}
}

// restart starts server i again, on its ports and store.
func (c *cluster) restart(i int) {
	c.t.Helper()
	c.start(i)
	c.waitReady()
}

func (c *cluster) shutdown() {
	for i := range c.srvs {
		c.stop(i)
	}
}

// urls returns the client URLs of every server, comma-separated.
func (c *cluster) urls() string {
	var us []string
	for _, o := range c.opts {
		us = append(us, fmt.Sprintf("nats://127.0.0.1:%d", o.Port))
	}
	return strings.Join(us, ",")
}

// url returns server i's client URL first, then the others'.
func (c *cluster) url(i int) string {
	us := []string{fmt.Sprintf("nats://127.0.0.1:%d", c.opts[i].Port)}
	for j, o := range c.opts {
		if j != i {
			us = append(us, fmt.Sprintf("nats://127.0.0.1:%d", o.Port))
		}
	}
	return strings.Join(us, ",")
}

// connect opens a connection to server i (others as fallbacks), closed
// at the end of the test.
func (c *cluster) connect(i int) *nats.Conn {
	c.t.Helper()
	nc, err := nats.Connect(c.url(i), nats.DontRandomize(), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond), nats.Timeout(2*time.Second))
	require.NoError(c.t, err)
	c.t.Cleanup(nc.Close)
	return nc
}

// openLog opens a Log on server i of the cluster, closed at the end of
// the test.
func (c *cluster) openLog(i int, tune ...func(*Config)) *Log {
	c.t.Helper()
	cfg := Config{Conn: c.connect(i), Replicas: min(3, len(c.opts)), Timeout: 20 * time.Second}
	for _, f := range tune {
		f(&cfg)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var l *Log
	var err error
	// The first bucket may be made while the cluster still settles.
	for range 20 {
		if l, err = Open(ctx, cfg); err == nil {
			break
		}
		time.Sleep(250 * time.Millisecond)
	}
	require.NoError(c.t, err)
	c.t.Cleanup(func() { l.Close() })
	return l
}
