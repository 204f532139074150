package ocap

import (
	"context"
	"errors"
	"net"
	"runtime"
	"testing"
	"time"

	"github.com/bokbok-go/bokbok"
	"github.com/stretchr/testify/require"
)

// TestServerShutdownWithCapabilityTraffic: a graceful Server.Shutdown lets
// a request in flight finish on a connection whose handler is a Node,
// although capability messages keep coming during the drain: releases
// sent by the garbage collector for dropped references, and a message
// sent after the shutdown began. Neither side's capability layer closes
// the connection; Shutdown returns nil because the request was answered.
func TestServerShutdownWithCapabilityTraffic(t *testing.T) {
	for _, secure := range []bool{false, true} {
		name := map[bool]string{false: "insecure", true: "secure"}[secure]
		t.Run(name, func(t *testing.T) {
			for range 3 {
				shutdownWithCapabilityTraffic(t, secure)
			}
		})
	}
}

func shutdownWithCapabilityTraffic(t *testing.T, secure bool) {
	ctx := testCtx(t)
	vat := newTestVat(t, "server")
	entered, release := make(chan struct{}), make(chan struct{})
	server := Node{Fallback: bokbok.HandlerFunc(func(ctx context.Context, req *bokbok.Request) (any, error) {
		close(entered)
		select {
		case <-release:
			return "done", nil
		case <-ctx.Done(): // the connection was cut
			return nil, ctx.Err()
		}
	})}
	server.Bind("factory", vat.Spawn(factory{}))
	key, err := bokbok.GenerateKey()
	require.NoError(t, err)
	srv := &bokbok.Server{Config: bokbok.Config{Handler: &server}}
	var cfg bokbok.Config
	if secure {
		srv.UserKey = func(user string) (bokbok.Key, bool) { return key, user == "alice" }
		cfg = bokbok.Config{User: "alice", Key: &key}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	go srv.Serve(ln)
	defer srv.Wait()
	defer srv.Close()

	var client Node
	cs, err := client.Dial(ctx, ln.Addr().String(), &cfg)
	require.NoError(t, err)
	defer cs.Close()

	// References the client drops, for the garbage collector to release
	// during the drain.
	f := cs.Fetch("factory")
	for range 20 {
		_, err := f.Send("make-car", "Explorist", "blue").Send("drive").Await(ctx)
		require.NoError(t, err)
	}

	answer := make(chan error, 1)
	go func() {
		resp, err := cs.Conn().Request(ctx, "slow")
		if err == nil {
			var s string
			if err = resp.Decode(&s); err == nil && s != "done" {
				err = errors.New("answer " + s)
			}
		}
		answer <- err
	}()
	<-entered
	shut := make(chan error, 1)
	go func() { shut <- srv.Shutdown(ctx) }()

	select {
	case <-cs.Conn().Draining(): // the client has the server's GOAWAY
	case <-ctx.Done():
		t.Fatal("the client never learnt of the shutdown")
	}
	f = nil
	for range 3 {
		runtime.GC()
		time.Sleep(5 * time.Millisecond)
	}
	_, err = cs.Fetch("factory").Await(ctx)
	require.ErrorIs(t, err, bokbok.ErrShutdown, "nothing new is sent during the drain")
	select {
	case <-cs.Conn().Done():
		t.Fatalf("the connection closed during the drain: %v", cs.Conn().Err())
	default:
	}

	close(release)
	require.NoError(t, <-answer, "the request in flight is answered")
	require.NoError(t, <-shut, "Shutdown reports the work finished")
	select {
	case <-cs.Done():
	case <-ctx.Done():
		t.Fatal("the session did not end")
	}
}
