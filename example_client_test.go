package bokbok_test

import (
	"context"
	"fmt"
	"time"

	"github.com/bokbok-go/bokbok"
)

// A Client keeps a connection to an address: it dials on first use,
// reconnects after a loss (here, a server restarted on the same port),
// and runs OnConnect on every new connection.
func ExampleClient() {
	ctx := context.Background()
	mux := bokbok.NewMux()
	bokbok.Handle(mux, "greet", func(ctx context.Context, name string) (string, error) {
		return "hello, " + name, nil
	})
	serve := func(addr string) (*bokbok.Server, chan error) {
		ln, err := bokbok.Listen(addr)
		if err != nil {
			panic(err)
		}
		srv := &bokbok.Server{Config: bokbok.Config{Handler: mux}}
		ran := make(chan error, 1)
		go func() { ran <- srv.Run(ctx, ln, time.Second) }()
		return srv, ran
	}
	ln, err := bokbok.Listen("127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	srv, _ := serve(addr)

	client, err := bokbok.NewClient(addr, &bokbok.ClientConfig{
		OnConnect: func(ctx context.Context, c *bokbok.Conn) error {
			fmt.Println("connected")
			return nil
		},
	})
	if err != nil {
		panic(err)
	}
	defer client.Close()
	greet := bokbok.Method[string, string]("greet")

	reply, err := greet.Call(ctx, client, "alice")
	fmt.Println(reply, err)

	srv.Shutdown(ctx) // the server stops gracefully, and starts again
	srv, _ = serve(addr)
	defer srv.Shutdown(ctx)

	reply, err = greet.Call(ctx, client, "bob")
	fmt.Println(reply, err)
	// Output:
	// connected
	// hello, alice <nil>
	// connected
	// hello, bob <nil>
}

// Idempotent marks calls that may run twice without harm: a Client sends
// them again when their connection is lost after they were sent, where it
// would otherwise return the error, since the call may have run.
func ExampleIdempotent() {
	ctx := bokbok.Idempotent(context.Background())
	fmt.Println(bokbok.IsIdempotent(ctx))
	// Output: true
}
