// Command client talks to examples/server: it makes a few typed calls to
// the methods of examples/echoapi, answers the server's call back
// ("name"), sends a notification, and shuts the connection down
// gracefully. A client interceptor logs every call it makes.
//
//	go run ./examples/client -key KEY                                  # localhost:7070
//	go run ./examples/client -key-file demo.key -addr ./bokbok.sock    # a Unix socket
//	go run ./examples/client -insecure                                 # an insecure server
//
// It connects in secure mode as -user (default "demo") with that user's
// key, given with -key (the key's text form, as examples/server prints it)
// or -key-file (a file holding it). With -insecure it connects in insecure
// mode and needs no key; a secure server refuses it, as an insecure server
// refuses a secure client. A wrong key or an unknown user ends it with
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
	"github.com/bokbok-go/bokbok/examples/echoapi"
)

func main() {
	addr := flag.String("addr", "localhost:7070", `address of the server: "host:port", or a Unix socket path such as "./bokbok.sock"`)
	name := flag.String("name", "bokbok-client", "the name to give when the server asks")
	insecure := flag.Bool("insecure", false, "connect in insecure mode: no key, nothing encrypted")
	user := flag.String("user", "demo", "the user name to authenticate as")
	keyText := flag.String("key", "", "the user's key, in its text form (as examples/server prints it)")
	keyFile := flag.String("key-file", "", "a file holding the user's key in its text form")
	verbose := flag.Bool("v", false, "log the library's debug records too")
	flag.Parse()

	log.SetFlags(log.Ltime)
	log.SetPrefix("client: ")
	if *verbose {
		slog.SetLogLoggerLevel(slog.LevelDebug) // slog.Default() writes to the standard logger
	}

	cfg := &bokbok.Config{Logger: slog.Default()}
	if !*insecure {
		// Secure mode: authenticate as -user with the key of -key or
		// -key-file, in the server's realm.
		key, err := bokbok.ParseKey(*keyText)
		switch {
		case *keyFile != "":
			key, err = bokbok.ReadKeyFile(*keyFile)
		case *keyText == "":
			err = errors.New("no key: give -key KEY or -key-file FILE (examples/server prints a key when it starts without one), or -insecure for an insecure server")
		}
		if err != nil {
			log.Printf("error: %v", err)
			os.Exit(2)
		}
		cfg.Key, cfg.User, cfg.Realm = &key, *user, echoapi.Realm
	}
	// A wrong key or an unknown user fails with an error matching
	// bokbok.ErrAuth, a server of the other mode with bokbok.ErrMode.
	if err := run(*addr, *name, cfg); err != nil {
		log.Printf("error: %v", err)
		os.Exit(1)
	}
}

func run(addr, name string, cfg *bokbok.Config) error {
	ctx := context.Background()

	// The client serves requests too: the server calls back to ask our name.
	mux := bokbok.NewMux()
	echoapi.Name.Handle(mux, func(ctx context.Context, _ struct{}) (string, error) {
		log.Printf("the server asks for my name; answering %q", name)
		return name, nil
	})
	cfg.Handler = mux
	cfg.Interceptors = []bokbok.Interceptor{logCalls}

	dialCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
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

	// A notification: no reply, and NotifyMethod returns once it is queued.
	if err := conn.NotifyMethod(ctx, echoapi.Log, "hello from "+name); err != nil {
		return err
	}
	log.Printf("sent a notification")

	// Typed calls: the request and reply types come with the method.
	if _, err := echoapi.Add.Call(ctx, conn, []int64{2, 3, 4}); err != nil {
		return err
	}
	if _, err := echoapi.Upper.Call(ctx, conn, "hello, bokbok"); err != nil {
		return err
	}
	// The server calls us back during this one.
	if _, err := echoapi.Greet.Call(ctx, conn, struct{}{}); err != nil {
		return err
	}

	// A method the server does not serve: the error arrives as a
	// *RemoteError, which matches bokbok.ErrNoMethod. bokbok.Invoke calls
	// any method by name, with the reply type given.
	_, err = bokbok.Invoke[int64](ctx, conn, "divide", []int64{1, 0})
	var re *bokbok.RemoteError
	if !errors.As(err, &re) || !errors.Is(err, bokbok.ErrNoMethod) {
		return fmt.Errorf("divide: want a remote error matching bokbok.ErrNoMethod, got %v", err)
	}
	log.Printf("(a remote error of code %q, matching bokbok.ErrNoMethod)", re.Code)

	// A deadline travels with the request: the server's handler sees its
	// context end when the deadline passes. The error is ctx's own or, if
	// the handler's reply won the race, a *RemoteError saying so; both
	// match context.DeadlineExceeded.
	shortCtx, cancelShort := context.WithTimeout(ctx, 200*time.Millisecond)
	_, err = echoapi.Sleep.Call(shortCtx, conn, 5000)
	cancelShort()
	if !errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("sleep 5000 with a 200ms deadline: want a timeout, got %v", err)
	}

	// Calls from several goroutines share the connection; replies come
	// back as they are ready, not in the order the calls were made.
	var wg sync.WaitGroup
	errs := make(chan error, 3)
	for _, ms := range []int64{300, 200, 100} {
		wg.Go(func() {
			if _, err := echoapi.Sleep.Call(ctx, conn, ms); err != nil {
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

// logCalls is a client interceptor: it sees every call this side makes,
// and logs each request with its reply or error, such as
// "add [2 3 4] -> 9".
func logCalls(ctx context.Context, o *bokbok.Outgoing, next bokbok.CallFunc) error {
	err := next(ctx, o)
	call := o.Method() + " " + echoapi.Args(o.Message())
	switch {
	case o.IsNotification():
	case err != nil:
		log.Printf("%s -> %v", call, err)
	default:
		var reply any
		o.Response().Decode(&reply) // for the log only; the caller decodes it into its own type
		log.Printf("%s -> %#v", call, reply)
	}
	return err
}
