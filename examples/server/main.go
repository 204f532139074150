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
// It serves these methods, each a message {method, args}:
//
//	add [numbers...]   the sum of the numbers
//	upper [text]       the text in upper case
//	greet []           asks the client for its name (a call back into the
//	                   client, made while serving the request) and greets it
//	sleep [ms]         waits ms milliseconds, or until the caller cancels
//
// Notifications are logged. Ctrl-C (SIGINT) or SIGTERM stops the server
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
	"github.com/bokbok-go/bokbok/examples/internal/exampleutil"
)

// Msg is the message the examples send: a method name and its arguments.
type Msg struct {
	Method string `msgpack:"method"`
	Args   []any  `msgpack:"args,omitempty"`
}

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
			Handler: bokbok.HandlerFunc(func(ctx context.Context, req *bokbok.Request) (any, error) {
				return serve(ctx, conns.Name(req.Conn()), req)
			}),
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

// serve handles one request or notification from connection conn.
func serve(ctx context.Context, conn string, req *bokbok.Request) (any, error) {
	var m Msg
	if err := req.Decode(&m); err != nil {
		return nil, bokbok.Errorf("bad_request", "want a message {method, args}: %v", err)
	}
	if req.IsNotification() {
		log.Printf("%s: notification: %s %v", conn, m.Method, m.Args)
		return nil, nil // the result of a notification goes nowhere
	}
	log.Printf("%s: request: %s %v", conn, m.Method, m.Args)
	switch m.Method {
	case "add":
		var sum int64
		for i, a := range m.Args {
			n, ok := toInt(a)
			if !ok {
				return nil, bokbok.Errorf("bad_args", "argument %d is %v, not an integer", i+1, a)
			}
			sum += n
		}
		return sum, nil
	case "upper":
		if len(m.Args) != 1 {
			return nil, bokbok.Errorf("bad_args", "upper takes one string")
		}
		s, ok := m.Args[0].(string)
		if !ok {
			return nil, bokbok.Errorf("bad_args", "upper takes a string, not %v", m.Args[0])
		}
		return strings.ToUpper(s), nil
	case "greet":
		// Call back into the client while its request waits. ctx is the
		// request's context, so if the client gives up on greet, this
		// call is cancelled too.
		var name string
		if err := req.Conn().Call(ctx, Msg{Method: "name"}, &name); err != nil {
			return nil, fmt.Errorf("asking for your name: %w", err)
		}
		log.Printf("%s: the client says its name is %q", conn, name)
		return "Hello, " + name + "!", nil
	case "sleep":
		var ms int64
		if len(m.Args) == 1 {
			ms, _ = toInt(m.Args[0])
		}
		if ms <= 0 {
			return nil, bokbok.Errorf("bad_args", "sleep takes a positive number of milliseconds")
		}
		select {
		case <-time.After(time.Duration(ms) * time.Millisecond):
			return fmt.Sprintf("slept %dms", ms), nil
		case <-ctx.Done():
			// The caller cancelled, or its deadline passed: the reply
			// would go unread, so stop working on it.
			log.Printf("%s: sleep %dms stopped early: %v", conn, ms, ctx.Err())
			return nil, ctx.Err()
		}
	}
	return nil, bokbok.Errorf("no_such_method", "no method %q (try add, upper, greet or sleep)", m.Method)
}

// toInt converts a decoded MessagePack integer.
func toInt(v any) (int64, bool) {
	switch n := v.(type) {
	case int64:
		return n, true
	case uint64:
		return int64(n), true
	}
	return 0, false
}

// peerAddr describes where a connection comes from. A client on a Unix
// socket usually has no address of its own.
func peerAddr(c *bokbok.Conn) string {
	if a := c.RemoteAddr().String(); a != "" && a != "@" {
		return a
	}
	return "a client on the Unix socket"
}
