package ocap_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/bokbok-go/bokbok"
	"github.com/bokbok-go/bokbok/ocap"
)

// greeter is the object the host registers.
type greeter struct{ run int }

// Greet answers "Greet" and "greet".
func (g greeter) Greet(name string) string {
	return fmt.Sprintf("hello %s, from run %d of the host", name, g.run)
}

// host is one run of a program that serves a greeter under a sturdyref
// kept in a store.
type host struct {
	vat    *ocap.Vat
	node   *ocap.Node
	cancel context.CancelFunc
	served chan error
}

// startHost listens on addr, registers the greeter under the label
// "greeter" of the store at storePath, and serves until stop.
func startHost(addr, storePath string, run int) (*host, ocap.Sturdyref) {
	st, err := ocap.OpenStore(storePath)
	if err != nil {
		panic(err)
	}
	h := &host{vat: ocap.NewVat("host"), node: &ocap.Node{Store: st}, served: make(chan error, 1)}
	ln, err := h.node.Listen(addr) // sets node.Addr from the listener
	if err != nil {
		panic(err)
	}
	sr, err := h.node.RegisterAs("greeter", h.vat.Spawn(greeter{run}))
	if err != nil {
		panic(err)
	}
	srv := &bokbok.Server{Config: bokbok.Config{Handler: h.node}, UserKey: h.node.UserKey(nil)}
	var ctx context.Context
	ctx, h.cancel = context.WithCancel(context.Background())
	go func() { h.served <- srv.Run(ctx, ln, time.Second) }()
	return h, sr
}

// stop stops the host: its connections close, as they would if it were
// restarted.
func (h *host) stop() {
	h.cancel()
	<-h.served
	h.node.Close()
	h.vat.Close()
	<-h.vat.Done()
}

// A sturdyref held with Node.Hold: the handle enlivens it when first used
// and again after the host has restarted, running OnEnliven each time
// before anyone gets the new reference. The host keeps its swiss number in
// a Store, so the restarted host serves the same sturdyref.
func ExampleNode_Hold() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	dir, err := os.MkdirTemp("", "hold-example")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(dir)
	store := filepath.Join(dir, "host.json")

	h, sr := startHost("127.0.0.1:0", store, 1)
	addr := h.node.Addr // the port it got, to restart on

	client := &ocap.Node{}
	defer client.Close()
	enlivenings := 0
	held := client.Hold(sr, &ocap.HoldOptions{
		// Runs in the handle's goroutine, one enlivening at a time.
		OnEnliven: func(ctx context.Context, r ocap.Ref) error {
			enlivenings++
			fmt.Println("enlivened, time", enlivenings)
			return nil
		},
		InitialDelay: 10 * time.Millisecond,
		MaxDelay:     200 * time.Millisecond,
	})
	defer held.Close()

	greet := func() {
		r, err := held.Send(ctx, "greet", "alice").Await(ctx)
		if err != nil {
			fmt.Println("error:", err)
			return
		}
		var s string
		if err := r.Decode(&s); err != nil {
			fmt.Println("error:", err)
			return
		}
		fmt.Println(s)
	}
	greet()
	greet() // the same reference

	// The host restarts on the same address with the same store.
	live, _ := held.Ref(ctx)
	h.stop()
	<-live.Session().Done() // the client has seen the connection close
	h, _ = startHost(addr, store, 2)
	defer h.stop()
	greet()
	// Output:
	// enlivened, time 1
	// hello alice, from run 1 of the host
	// hello alice, from run 1 of the host
	// enlivened, time 2
	// hello alice, from run 2 of the host
}
