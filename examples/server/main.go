// Command server is a bokbok server to try with examples/client.
//
//	go run ./examples/server                       # listens on localhost:7070
//	go run ./examples/server -addr ./bokbok.sock   # or on a Unix socket
//
// It runs in secure mode: it knows one user (-user, default "demo") and
// that user's key, read from -key-file (a file holding the key's text
// form). Without -key-file, it generates a key and prints the command that
// runs the client with it. With -insecure it accepts only insecure
// clients, with no keys at all. Run it with -v to see refused clients
// (wrong key, unknown user, wrong mode) in its log.
//
// It serves the methods of examples/echoapi, routed by a bokbok.Mux to
// typed handlers:
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
// gracefully: requests in flight finish, then the connections close, and
// a Unix socket's file is removed. A second Ctrl-C stops it at once.
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/bokbok-go/bokbok"
	"github.com/bokbok-go/bokbok/examples/echoapi"
)

func main() {
	addr := flag.String("addr", "localhost:7070", `address to listen on: "host:port", or a Unix socket path such as "./bokbok.sock"`)
	insecure := flag.Bool("insecure", false, "accept insecure clients only: no keys, nothing encrypted")
	user := flag.String("user", "demo", "the user name clients authenticate as")
	keyFile := flag.String("key-file", "", "a file holding the user's key in its text form; without it, a new key is generated and printed")
	verbose := flag.Bool("v", false, "log the library's debug records too (such as refused clients)")
	flag.Parse()

	log.SetFlags(log.Ltime)
	log.SetPrefix("server: ")
	if *verbose {
		slog.SetLogLoggerLevel(slog.LevelDebug) // slog.Default() writes to the standard logger
	}

	// ctx is done at Ctrl-C or SIGTERM. From then on the signals are no
	// longer caught, so a second Ctrl-C kills the server at once.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	context.AfterFunc(ctx, func() {
		stop()
		log.Print("shutting down: letting requests in flight finish")
	})

	// The connections are numbered #1, #2 and so on in the log, which
	// says when each opens and closes.
	conns := &connLog{ids: map[*bokbok.Conn]int{}}
	srv := &bokbok.Server{
		Config: bokbok.Config{
			Handler: logRequests(conns)(newMux(conns)),
			OnClose: conns.closed,
			// The library's own records (panics, protocol errors) go to
			// the standard logger, like ours.
			Logger: slog.Default(),
		},
		OnOpen: conns.opened,
	}
	mode := "insecure"
	if !*insecure {
		key, err := userKey(*keyFile, *user, *addr)
		if err != nil {
			log.Fatal(err)
		}
		// One user. A real server would look users up in its own store.
		// For any other user UserKey returns false, and the client gets
		// the same error as one with a wrong key.
		srv.UserKey = func(name string) (bokbok.Key, bool) { return key, name == *user }
		srv.Realm = echoapi.Realm
		mode = fmt.Sprintf("secure: user %q", *user)
	}

	ln, err := bokbok.Listen(*addr)
	if err != nil {
		log.Fatal(err) // for a Unix socket, it says whether a stale file is in the way
	}
	log.Printf("listening on %s (%s); Ctrl-C to stop", ln.Addr(), mode)
	// Serve until Ctrl-C or SIGTERM, then shut down gracefully: requests
	// in flight finish (for up to 10 seconds), then the connections close.
	if err := srv.Run(ctx, ln, 10*time.Second); err != nil {
		log.Fatal(err)
	}
	log.Print("stopped")
}

// userKey returns the user's key: read from keyFile or, without one, a
// new key, logged with the command that runs examples/client with it.
func userKey(keyFile, user, addr string) (bokbok.Key, error) {
	if keyFile != "" {
		return bokbok.ReadKeyFile(keyFile)
	}
	key, err := bokbok.GenerateKey()
	if err != nil {
		return key, err
	}
	text, err := key.MarshalText()
	log.Printf("no -key-file given: generated a key for user %q; run the client with it:", user)
	log.Printf("    go run ./examples/client -addr %s -user %s -key %s", addr, user, text)
	log.Print("(or save the key in a file, and give -key-file FILE to both)")
	return key, err
}

// newMux returns the server's methods: each handler takes its request,
// and returns its reply, as Go values.
func newMux(conns *connLog) *bokbok.Mux {
	mux := bokbok.NewMux()
	echoapi.Add.Handle(mux, func(ctx context.Context, nums []int64) (int64, error) {
		var sum int64
		for _, n := range nums {
			sum += n
		}
		return sum, nil
	})
	echoapi.Upper.Handle(mux, func(ctx context.Context, s string) (string, error) {
		return strings.ToUpper(s), nil
	})
	echoapi.Greet.Handle(mux, func(ctx context.Context, _ struct{}) (string, error) {
		// Call back into the client while its request waits, on the
		// connection the request came on. ctx is the request's context,
		// so if the client gives up on greet, this call is cancelled too.
		conn := bokbok.RequestFromContext(ctx).Conn()
		name, err := echoapi.Name.Call(ctx, conn, struct{}{})
		if err != nil {
			return "", fmt.Errorf("asking for your name: %w", err)
		}
		log.Printf("%s: the client says its name is %q", conns.name(conn), name)
		return "Hello, " + name + "!", nil
	})
	echoapi.Sleep.Handle(mux, func(ctx context.Context, ms int64) (string, error) {
		if ms <= 0 {
			return "", bokbok.Errorf("bad_args", "sleep takes a positive number of milliseconds")
		}
		select {
		case <-time.After(time.Duration(ms) * time.Millisecond):
			return fmt.Sprintf("slept %dms", ms), nil
		case <-ctx.Done():
			// The caller cancelled, or its deadline passed: the reply
			// would go unread, so stop working on it.
			log.Printf("%s: sleep %dms stopped early: %v", conns.name(bokbok.RequestFromContext(ctx).Conn()), ms, ctx.Err())
			return "", ctx.Err()
		}
	})
	bokbok.HandleNotification(mux, echoapi.Log, func(ctx context.Context, text string) error {
		return nil // logRequests has logged it: nothing more to do
	})
	return mux
}

// logRequests is a middleware that logs each request and notification,
// with its method and arguments, before serving it.
func logRequests(conns *connLog) bokbok.Middleware {
	return func(next bokbok.Handler) bokbok.Handler {
		return bokbok.HandlerFunc(func(ctx context.Context, req *bokbok.Request) (any, error) {
			var args any
			_ = req.Decode(&args) // for the log only; the handler decodes it into its own type
			kind := "request"
			if req.IsNotification() {
				kind = "notification"
			}
			log.Printf("%s: %s: %s %s", conns.name(req.Conn()), kind, req.Method(), echoapi.Args(args))
			return next.ServeBokbok(ctx, req)
		})
	}
}

// connLog numbers the server's connections in the order they open, and
// logs each one's opening and closing: its methods opened and closed are
// the server's OnOpen and OnClose.
type connLog struct {
	mu   sync.Mutex
	last int
	ids  map[*bokbok.Conn]int
}

// opened gives c the next number and logs where it comes from and the
// user it authenticated as. It accepts every connection.
func (l *connLog) opened(c *bokbok.Conn) error {
	l.mu.Lock()
	l.last++
	l.ids[c] = l.last
	l.mu.Unlock()
	from := c.RemoteAddr().String()
	if from == "" || from == "@" {
		from = "a client on the Unix socket" // which usually has no address of its own
	}
	who := " (insecure)"
	if c.User() != "" {
		who = fmt.Sprintf(", authenticated as user %q", c.User())
	}
	log.Printf("connection %s opened from %s%s", l.name(c), from, who)
	return nil
}

// closed logs why c closed, and forgets it.
func (l *connLog) closed(c *bokbok.Conn, reason error) {
	log.Printf("connection %s closed: %v", l.name(c), reason)
	l.mu.Lock()
	delete(l.ids, c)
	l.mu.Unlock()
}

// name returns c's number for the log, such as "#1".
func (l *connLog) name(c *bokbok.Conn) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return fmt.Sprintf("#%d", l.ids[c])
}
