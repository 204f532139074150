// Command server is the car factory of Spritely Goblins' CapTP, served over
// bokbok with the capability layer (package ocap), for
// examples/carfactory/client.
//
//	go run ./examples/carfactory/server                        # listens on $TMPDIR/bokbok-carfactory.sock
//	go run ./examples/carfactory/server -addr ./cars.sock -key-file demo.key
//	go run ./examples/carfactory/server -insecure              # no keys, nothing encrypted
//
// It runs one vat holding one actor, a factory, bound under the name
// "factory": a client fetches it through its connection's bootstrap object,
// and can reach nothing else on this server until the factory hands it
// something. The factory answers
//
//	make-car [model color]   spawns a car actor in the same vat and
//	                         answers a reference to it
//
// and each car answers
//
//	drive []                 what the car sounds like
//
// The vat runs its actors one message at a time, so the factory counts the
// cars it made without a lock.
//
// It runs in secure mode like examples/server: it knows one user (-user,
// default "demo") and that user's key, given with -key (the key's text
// form) or -key-file (a file holding it). Without either, it generates a
// key and prints the command that runs the client with it. Clients must
// use the same -realm. With -insecure it accepts only insecure clients,
// with no keys at all.
//
// Ctrl-C (SIGINT) or SIGTERM stops the server gracefully and removes its
// socket. A socket left behind by a server that was killed is removed at
// the next start, if nothing answers on it.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/bokbok-go/bokbok"
	"github.com/bokbok-go/bokbok/ocap"
)

// factory makes cars. It is an actor: each exported method answers to its
// Go name and to its kebab-case form (MakeCar to "make-car").
type factory struct {
	made int // cars made so far; only the factory's vat touches it
}

// MakeCar spawns a car in the factory's own vat (ctx is the turn's
// context) and answers a reference to it. A reference travels inside the
// answer: the client gets a Ref through which it can send to the car.
func (f *factory) MakeCar(ctx context.Context, model, color string) (ocap.Ref, error) {
	if model == "" || color == "" {
		log.Printf("factory: make-car [%s %s]: refused", model, color)
		return ocap.Ref{}, bokbok.Errorf("carfactory.bad_order", "a car needs a model and a color, got model %q and color %q", model, color)
	}
	f.made++
	log.Printf("factory: make-car [%s %s]: made car #%d", model, color, f.made)
	return ocap.Spawn(ctx, &car{n: f.made, model: model, color: color})
}

// car is an actor the factory spawns.
type car struct {
	n            int
	model, color string
}

// Drive answers "Drive" and "drive".
func (c *car) Drive() string {
	noise := fmt.Sprintf("The %s %s goes vroom!", c.color, c.model)
	log.Printf("car #%d: drive -> %q", c.n, noise)
	return noise
}

func main() {
	addr := flag.String("addr", defaultAddr(), `address to listen on: a Unix socket path such as "./cars.sock" (or "host:port" for TCP)`)
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

	// The vat and its one actor, bound under a name. The Node serves the
	// capability protocol: it is the connections' Handler.
	vat := ocap.NewVat("carfactory")
	defer vat.Close()
	node := &ocap.Node{Logger: slog.Default()}
	node.Bind("factory", vat.Spawn(&factory{}))

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
			Handler: node,
			OnClose: func(c *bokbok.Conn, reason error) {
				log.Printf("connection %s closed: %v", name(c), reason)
				ids.Delete(c)
			},
			Logger: slog.Default(),
		},
		OnOpen: func(c *bokbok.Conn) error {
			ids.Store(c, nextID.Add(1))
			if c.User() != "" {
				log.Printf("connection %s opened, authenticated as user %q", name(c), c.User())
			} else {
				log.Printf("connection %s opened (insecure)", name(c))
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
		knownUser := *user
		srv.UserKey = func(user string) (bokbok.Key, bool) {
			if user != knownUser {
				return bokbok.Key{}, false
			}
			return key, true
		}
		srv.Realm = *realm
	}

	ln, err := listen(*addr)
	if err != nil {
		log.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	if *insecure {
		log.Printf(`listening on %s (insecure); the factory is bound as "factory"; Ctrl-C to stop`, ln.Addr())
	} else {
		log.Printf(`listening on %s (secure: user %q, realm %q); the factory is bound as "factory"; Ctrl-C to stop`, ln.Addr(), *user, *realm)
	}

	select {
	case <-ctx.Done():
	case err := <-served:
		log.Fatalf("serve: %v", err)
	}
	stop() // a second Ctrl-C kills the process at once
	log.Printf("shutting down")
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		log.Printf("shutdown: %v (closed the remaining connections)", err)
	}
	if err := <-served; !errors.Is(err, bokbok.ErrServerClosed) {
		log.Fatalf("serve: %v", err)
	}
	vat.Close()
	<-vat.Done()
	log.Printf("stopped")
}

// The defaults, which examples/carfactory/client shares.
const (
	defaultUser  = "demo"
	defaultRealm = "bokbok-example"
)

// defaultAddr is the socket in the temporary directory, written so that
// bokbok reads it as a Unix socket path.
func defaultAddr() string {
	return filepath.ToSlash(filepath.Join(os.TempDir(), "bokbok-carfactory.sock"))
}

// listen listens on addr. If a Unix socket is already there and nothing
// answers on it, it is a leftover of a server that was killed: listen
// removes it and tries again.
func listen(addr string) (net.Listener, error) {
	ln, err := bokbok.Listen(addr)
	if err == nil || !errors.Is(err, syscall.EADDRINUSE) {
		return ln, err
	}
	a, perr := bokbok.ParseAddr(addr)
	if perr != nil || a.Network != "unix" {
		return nil, err
	}
	if c, derr := net.Dial("unix", a.Address); derr == nil {
		c.Close()
		return nil, fmt.Errorf("%w: another server is running on %s", err, a.Address)
	} else if !errors.Is(derr, syscall.ECONNREFUSED) {
		return nil, err
	}
	if fi, serr := os.Lstat(a.Address); serr != nil || fi.Mode()&os.ModeSocket == 0 {
		return nil, err
	}
	if rerr := os.Remove(a.Address); rerr != nil {
		return nil, fmt.Errorf("%w (removing the stale socket: %v)", err, rerr)
	}
	log.Printf("removed the stale socket %s, which nothing answered on", a.Address)
	return bokbok.Listen(addr)
}

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
	args := []string{"go", "run", "./examples/carfactory/client"}
	if addr != defaultAddr() {
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
