// Command server is a bokbok server to try with examples/client.
//
//	go run ./examples/server                       # listens on localhost:7070
//	go run ./examples/server -addr ./bokbok.sock   # or on a Unix socket
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
	"errors"
	"flag"
	"fmt"
	"log"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/bokbok-go/bokbok"
)

// Msg is the message the examples send: a method name and its arguments.
type Msg struct {
	Method string `msgpack:"method"`
	Args   []any  `msgpack:"args,omitempty"`
}

func main() {
	addr := flag.String("addr", "localhost:7070", `address to listen on: "host:port", or a Unix socket path such as "./bokbok.sock"`)
	verbose := flag.Bool("v", false, "log the library's debug records too")
	flag.Parse()

	log.SetFlags(log.Ltime)
	log.SetPrefix("server: ")
	if *verbose {
		slog.SetLogLoggerLevel(slog.LevelDebug)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	var (
		nextID atomic.Int64
		ids    sync.Map // *bokbok.Conn -> connection number, for the log
	)
	name := func(c *bokbok.Conn) string {
		id, _ := ids.Load(c)
		return fmt.Sprintf("#%v", id)
	}
	srv := &bokbok.Server{
		Config: bokbok.Config{
			Handler: bokbok.HandlerFunc(func(ctx context.Context, req *bokbok.Request) (any, error) {
				return serve(ctx, name(req.Conn()), req)
			}),
			OnClose: func(c *bokbok.Conn, reason error) {
				log.Printf("connection %s closed: %v", name(c), reason)
				ids.Delete(c)
			},
			// The library's own records (panics, protocol errors) go to
			// the standard logger, like ours.
			Logger: slog.Default(),
		},
		OnOpen: func(c *bokbok.Conn) error {
			ids.Store(c, nextID.Add(1))
			log.Printf("connection %s opened from %s", name(c), peerAddr(c))
			return nil
		},
	}

	ln, err := bokbok.Listen(*addr)
	if err != nil {
		log.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	log.Printf("listening on %s; Ctrl-C to stop", ln.Addr())

	select {
	case <-ctx.Done():
	case err := <-served:
		log.Fatalf("serve: %v", err)
	}
	stop() // a second Ctrl-C kills the process at once
	log.Printf("shutting down: letting requests in flight finish")
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		log.Printf("shutdown: %v (closed the remaining connections)", err)
	}
	if err := <-served; !errors.Is(err, bokbok.ErrServerClosed) {
		log.Fatalf("serve: %v", err)
	}
	log.Printf("stopped")
}

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
