// Command server is a bokbok server to try with examples/client.
//
//	go run ./examples/server                       # listens on localhost:7070
//	go run ./examples/server -addr ./bokbok.sock   # or on a Unix socket
//
// It runs in secure mode: it knows one user (-user, default "demo") and
// that user's key, given with -key (the key's text form) or -key-file (a
// file holding it). Without either, it generates a key and prints the
// command that runs the client with it. Clients must use the same -realm.
// With -insecure it accepts only insecure clients, with no keys at all.
// Run it with -v to see refused clients (wrong key, unknown user, wrong
// mode) in its log.
//
// It serves the methods of examples/internal/exampleapi, routed by a
// bokbok.Mux to typed handlers:
//
//	add [numbers...]   the sum of the numbers
//	upper [text]       the text in upper case
//	greet []           asks the client for its name (a call back into the
//	                   client's "name" method, made while serving the
//	                   request) and greets it
//	sleep [ms]         waits ms milliseconds, or until the caller cancels
//
// and the notification "log". A middleware logs every request and
// notification; any other method gets an error matching
// bokbok.ErrNoMethod. Ctrl-C (SIGINT) or SIGTERM stops the server
// gracefully: requests in flight finish, then the connections close.
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"log/slog"
	"strings"
	"time"

	"github.com/bokbok-go/bokbok"
	"github.com/bokbok-go/bokbok/examples/internal/exampleapi"
	"github.com/bokbok-go/bokbok/examples/internal/exampleutil"
)

func main() {
	addr := flag.String("addr", defaultAddr, `address to listen on: "host:port", or a Unix socket path such as "./bokbok.sock"`)
	keys := exampleutil.ServerKeyFlags() // -insecure, -user, -key, -key-file, -realm
	verbose := flag.Bool("v", false, "log the library's debug records too (such as refused clients)")
	flag.Parse()

	exampleutil.SetupLog("server: ", *verbose)
	ctx, stop := exampleutil.SignalContext() // done at Ctrl-C or SIGTERM
	defer stop()

	// The connections are numbered #1, #2 and so on in the log, which
	// says when each opens and closes.
	conns := &exampleutil.ConnLog{From: peerAddr}
	srv := &bokbok.Server{
		Config: bokbok.Config{
			Handler: logRequests(conns)(newMux(conns)),
			OnClose: conns.Closed,
			// The library's own records (panics, protocol errors) go to
			// the standard logger, like ours.
			Logger: slog.Default(),
		},
		OnOpen: conns.Opened,
	}

	if !keys.Insecure {
		// One user, -user, with the key from -key or -key-file (without
		// either, a new key, printed with the command that runs the
		// client). A real server would look users up in its own store;
		// UserKey returns false for an unknown user, and the client then
		// gets the same error as one with a wrong key.
		srv.UserKey = keys.UserKey("./examples/client", *addr, defaultAddr)
		srv.Realm = keys.Realm
	}

	ln, err := bokbok.Listen(*addr)
	if err != nil {
		log.Fatal(err)
	}
	log.Printf("listening on %s (%s); Ctrl-C to stop", ln.Addr(), keys.Mode())
	// Serve until Ctrl-C or SIGTERM, then shut down gracefully: requests
	// in flight finish (for up to 10 seconds), then the connections close.
	if err := exampleutil.Serve(ctx, srv, ln, "shutting down: letting requests in flight finish"); err != nil {
		log.Fatal(err)
	}
	log.Printf("stopped")
}

// defaultAddr is the address the server listens on and examples/client
// dials, unless given another.
const defaultAddr = "localhost:7070"

// newMux returns the server's methods: each handler takes its request,
// and returns its reply, as Go values.
func newMux(conns *exampleutil.ConnLog) *bokbok.Mux {
	mux := bokbok.NewMux()
	exampleapi.Add.Handle(mux, func(ctx context.Context, nums []int64) (int64, error) {
		var sum int64
		for _, n := range nums {
			sum += n
		}
		return sum, nil
	})
	exampleapi.Upper.Handle(mux, func(ctx context.Context, s string) (string, error) {
		return strings.ToUpper(s), nil
	})
	exampleapi.Greet.Handle(mux, func(ctx context.Context, _ struct{}) (string, error) {
		// Call back into the client while its request waits, on the
		// connection the request came on. ctx is the request's context,
		// so if the client gives up on greet, this call is cancelled too.
		conn := bokbok.RequestFromContext(ctx).Conn()
		name, err := exampleapi.Name.Call(ctx, conn, struct{}{})
		if err != nil {
			return "", fmt.Errorf("asking for your name: %w", err)
		}
		log.Printf("%s: the client says its name is %q", conns.Name(conn), name)
		return "Hello, " + name + "!", nil
	})
	exampleapi.Sleep.Handle(mux, func(ctx context.Context, ms int64) (string, error) {
		if ms <= 0 {
			return "", bokbok.Errorf("bad_args", "sleep takes a positive number of milliseconds")
		}
		select {
		case <-time.After(time.Duration(ms) * time.Millisecond):
			return fmt.Sprintf("slept %dms", ms), nil
		case <-ctx.Done():
			// The caller cancelled, or its deadline passed: the reply
			// would go unread, so stop working on it.
			log.Printf("%s: sleep %dms stopped early: %v", conns.Name(bokbok.RequestFromContext(ctx).Conn()), ms, ctx.Err())
			return "", ctx.Err()
		}
	})
	bokbok.HandleNotification(mux, exampleapi.Log, func(ctx context.Context, text string) error {
		return nil // logRequests has logged it: nothing more to do
	})
	return mux
}

// logRequests is a middleware that logs each request and notification,
// with its method and arguments, before serving it.
func logRequests(conns *exampleutil.ConnLog) bokbok.Middleware {
	return func(next bokbok.Handler) bokbok.Handler {
		return bokbok.HandlerFunc(func(ctx context.Context, req *bokbok.Request) (any, error) {
			var args any
			_ = req.Decode(&args) // for the log only; the handler decodes it into its own type
			kind := "request"
			if req.IsNotification() {
				kind = "notification"
			}
			log.Printf("%s: %s: %s %s", conns.Name(req.Conn()), kind, req.Method(), exampleapi.Args(args))
			return next.ServeBokbok(ctx, req)
		})
	}
}

// peerAddr describes where a connection comes from. A client on a Unix
// socket usually has no address of its own.
func peerAddr(c *bokbok.Conn) string {
	if a := c.RemoteAddr().String(); a != "" && a != "@" {
		return a
	}
	return "a client on the Unix socket"
}
