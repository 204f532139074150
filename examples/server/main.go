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
	addr := flag.String("addr", defaultAddr, `address to listen on: "host:port", or a Unix socket path such as "./bokbok.sock"`)
	insecure := flag.Bool("insecure", false, "accept insecure clients only: no keys, nothing encrypted")
	user := flag.String("user", defaultUser, "the user name clients authenticate as")
	keyText := flag.String("key", "", "the user's key, in its text form (44 characters of base64); see -key-file")
	keyFile := flag.String("key-file", "", "a file holding the user's key in its text form; without -key or -key-file, a new key is generated and printed")
	realm := flag.String("realm", defaultRealm, "the realm: a name for this server that clients must use too")
	verbose := flag.Bool("v", false, "log the library's debug records too (such as refused clients)")
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
			if c.User() != "" {
				log.Printf("connection %s opened from %s, authenticated as user %q", name(c), peerAddr(c), c.User())
			} else {
				log.Printf("connection %s opened from %s (insecure)", name(c), peerAddr(c))
			}
			return nil
		},
	}

	if !*insecure {
		if *user == "" || len(*user) > 255 {
			log.Fatalf("-user must be 1 to 255 bytes")
		}
		if len(*realm) > 255 {
			log.Fatalf("-realm must be at most 255 bytes")
		}
		key, generated, err := loadKey(*keyText, *keyFile)
		if err != nil {
			log.Fatal(err)
		}
		if generated {
			printClientCommand(key, *addr, *user, *realm)
		}
		// One user. A real server would look users up in its own store;
		// it returns false for an unknown user, and the client then gets
		// the same error as one with a wrong key.
		knownUser := *user
		srv.UserKey = func(user string) (bokbok.Key, bool) {
			if user != knownUser {
				return bokbok.Key{}, false
			}
			return key, true
		}
		srv.Realm = *realm
	}

	ln, err := bokbok.Listen(*addr)
	if err != nil {
		log.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	if *insecure {
		log.Printf("listening on %s (insecure); Ctrl-C to stop", ln.Addr())
	} else {
		log.Printf("listening on %s (secure: user %q, realm %q); Ctrl-C to stop", ln.Addr(), *user, *realm)
	}

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

// The defaults, which examples/client shares.
const (
	defaultAddr  = "localhost:7070"
	defaultUser  = "demo"
	defaultRealm = "bokbok-example"
)

// loadKey returns the key given by -key or -key-file or, if neither was
// given, a new one (generated is then true).
func loadKey(text, file string) (key bokbok.Key, generated bool, err error) {
	switch {
	case text != "" && file != "":
		return key, false, errors.New("give -key or -key-file, not both")
	case file != "":
		b, err := os.ReadFile(file)
		if err != nil {
			return key, false, fmt.Errorf("reading the key: %w", err)
		}
		// A key file is the key's text form, perhaps with a newline.
		key, err = bokbok.ParseKey(strings.TrimSpace(string(b)))
		if err != nil {
			return key, false, fmt.Errorf("%s: %w", file, err)
		}
		return key, false, nil
	case text != "":
		key, err = bokbok.ParseKey(text)
		return key, false, err
	}
	key, err = bokbok.GenerateKey()
	return key, true, err
}

// printClientCommand prints a generated key and how to run the client
// with it.
func printClientCommand(key bokbok.Key, addr, user, realm string) {
	text, err := key.MarshalText()
	if err != nil {
		log.Fatal(err)
	}
	args := []string{"go", "run", "./examples/client"}
	if addr != defaultAddr {
		args = append(args, "-addr", shellQuote(addr))
	}
	args = append(args, "-user", shellQuote(user))
	if realm != defaultRealm {
		args = append(args, "-realm", shellQuote(realm))
	}
	args = append(args, "-key", string(text))
	log.Printf("no -key or -key-file given: generated a key for user %q:", user)
	log.Printf("    %s", text)
	log.Printf("run the client with it:")
	log.Printf("    %s", strings.Join(args, " "))
	log.Printf("(or save the key in a file, and give -key-file FILE to both)")
}

// shellQuote quotes s for a POSIX shell if it needs it.
func shellQuote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./:@+=,") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
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
