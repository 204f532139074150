// Command client talks to examples/server: it makes a few calls, answers
// the server's call back ("name"), sends a notification, and shuts the
// connection down gracefully.
//
//	go run ./examples/client -key KEY                                  # localhost:7070
//	go run ./examples/client -key-file demo.key -addr ./bokbok.sock    # a Unix socket
//	go run ./examples/client -insecure                                 # an insecure server
//
// It connects in secure mode as -user (default "demo") with that user's
// key, given with -key (the key's text form, as examples/server prints it)
// or -key-file (a file holding it), in -realm (default "bokbok-example",
// as the server's). With -insecure it connects in insecure mode and needs
// no key; a secure server refuses it, as an insecure server refuses a
// secure client. A wrong key or an unknown user ends it with
// "authentication failed" and exit status 1.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"log/slog"
	"os"
	"sync"
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
	addr := flag.String("addr", "localhost:7070", `address of the server: "host:port", or a Unix socket path such as "./bokbok.sock"`)
	name := flag.String("name", "bokbok-client", "the name to give when the server asks")
	keys := exampleutil.ClientKeyFlags() // -insecure, -user, -key, -key-file, -realm
	verbose := flag.Bool("v", false, "log the library's debug records too")
	flag.Parse()

	exampleutil.SetupLog("client: ", *verbose)

	// Key, User and Realm from the flags, or none with -insecure.
	cfg := keys.Config("examples/server")
	cfg.Logger = slog.Default()
	if err := run(*addr, *name, cfg); err != nil {
		// A wrong key or an unknown user fails with bokbok.ErrAuth, a
		// server of the other mode with bokbok.ErrMode: Hint says what to
		// check.
		if hint := keys.Hint(err); hint != "" {
			log.Printf("error: %v; %s", err, hint)
		} else {
			log.Printf("error: %v", err)
		}
		os.Exit(1)
	}
}

func run(addr, name string, cfg *bokbok.Config) error {
	ctx := context.Background()

	// The client serves requests too: the server calls back to ask our name.
	handler := bokbok.HandlerFunc(func(ctx context.Context, req *bokbok.Request) (any, error) {
		var m Msg
		if err := req.Decode(&m); err != nil {
			return nil, err
		}
		if m.Method == "name" {
			log.Printf("the server asks for my name; answering %q", name)
			return name, nil
		}
		return nil, bokbok.Errorf("no_such_method", "the client has no method %q", m.Method)
	})

	dialCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	cfg.Handler = handler
	conn, err := bokbok.Dial(dialCtx, addr, cfg)
	if err != nil {
		return err
	}
	defer conn.Close() // if something fails; after Shutdown it does nothing
	if conn.User() != "" {
		log.Printf("connected to %s, authenticated as user %q", addr, conn.User())
	} else {
		log.Printf("connected to %s (insecure)", addr)
	}

	// A notification: no reply, and Notify returns once it is queued.
	if err := conn.Notify(ctx, Msg{"log", []any{"hello from " + name}}); err != nil {
		return err
	}
	log.Printf("sent a notification")

	call := func(ctx context.Context, m Msg) (any, error) {
		var reply any
		err := conn.Call(ctx, m, &reply)
		if err != nil {
			log.Printf("%s %v -> %v", m.Method, m.Args, err)
		} else {
			log.Printf("%s %v -> %#v", m.Method, m.Args, reply)
		}
		return reply, err
	}
	if _, err := call(ctx, Msg{"add", []any{2, 3, 4}}); err != nil {
		return err
	}
	if _, err := call(ctx, Msg{"upper", []any{"hello, bokbok"}}); err != nil {
		return err
	}
	// The server calls us back during this one.
	if _, err := call(ctx, Msg{Method: "greet"}); err != nil {
		return err
	}

	// An error from the server's handler arrives as a *RemoteError.
	err = conn.Call(ctx, Msg{Method: "divide", Args: []any{1, 0}}, nil)
	var re *bokbok.RemoteError
	if !errors.As(err, &re) {
		return fmt.Errorf("divide: want a remote error, got %v", err)
	}
	log.Printf("divide [1 0] -> remote error, code %q: %s", re.Code, re.Message)

	// A deadline travels with the request: the server's handler sees its
	// context end when the deadline passes. The error is ctx's own or, if
	// the handler's reply won the race, a *RemoteError saying so.
	shortCtx, cancelShort := context.WithTimeout(ctx, 200*time.Millisecond)
	_, err = call(shortCtx, Msg{"sleep", []any{5000}})
	cancelShort()
	if !errors.Is(err, context.DeadlineExceeded) && !errors.As(err, &re) {
		return fmt.Errorf("sleep 5000 with a 200ms deadline: want a timeout, got %v", err)
	}

	// Calls from several goroutines share the connection; replies come
	// back as they are ready, not in the order the calls were made.
	var wg sync.WaitGroup
	errs := make(chan error, 3)
	for _, ms := range []int{300, 200, 100} {
		wg.Go(func() {
			if _, err := call(ctx, Msg{"sleep", []any{ms}}); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return err
	}

	// Graceful close: calls in flight both ways finish, then the
	// connection closes.
	shutdownCtx, cancelShutdown := context.WithTimeout(ctx, 5*time.Second)
	defer cancelShutdown()
	if err := conn.Shutdown(shutdownCtx); err != nil {
		return err
	}
	log.Printf("shut down: %v", conn.Err())
	return nil
}
