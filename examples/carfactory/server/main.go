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
// default "demo") and that user's key, read from -key-file (a file holding
// the key's text form). Without -key-file, it generates a key and prints
// the command that runs the client with it. With -insecure it accepts only
// insecure clients, with no keys at all.
//
// Ctrl-C (SIGINT) or SIGTERM stops the server gracefully and removes its
// socket. A server that was killed leaves its socket behind; the next one
// then fails to listen, saying that the socket file is stale and can be
// removed.
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/bokbok-go/bokbok"
	"github.com/bokbok-go/bokbok/ocap"
)

// realm is the server's realm, which its clients must use too: it is
// bound into the secure handshake.
const realm = "bokbok-carfactory"

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
	user := flag.String("user", "demo", "the user name clients authenticate as")
	keyFile := flag.String("key-file", "", "a file holding the user's key in its text form; without it, a new key is generated and printed")
	verbose := flag.Bool("v", false, "log the library's debug records too (such as refused clients)")
	flag.Parse()
	log.SetFlags(log.Ltime)
	log.SetPrefix("server: ")
	if *verbose {
		slog.SetLogLoggerLevel(slog.LevelDebug)
	}

	// The vat and its one actor, bound under a name. The Node serves the
	// capability protocol: it is the connections' Handler.
	vat := ocap.NewVat("carfactory")
	defer vat.Close()
	node := &ocap.Node{Logger: slog.Default()}
	node.Bind("factory", vat.Spawn(&factory{}))

	srv := &bokbok.Server{
		Config: bokbok.Config{
			Handler: node,
			OnClose: func(c *bokbok.Conn, reason error) { log.Printf("connection closed: %v", reason) },
			Logger:  slog.Default(),
		},
		OnOpen: func(c *bokbok.Conn) error {
			if c.User() == "" {
				log.Print("connection opened (insecure)")
			} else {
				log.Printf("connection opened, authenticated as user %q", c.User())
			}
			return nil
		},
	}
	mode := "insecure"
	if !*insecure {
		// One user, as in examples/server.
		key, err := userKey(*keyFile, *user, *addr)
		if err != nil {
			log.Fatal(err)
		}
		srv.UserKey = func(name string) (bokbok.Key, bool) { return key, name == *user }
		srv.Realm = realm
		mode = fmt.Sprintf("secure: user %q", *user)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	context.AfterFunc(ctx, func() {
		stop() // a second Ctrl-C kills the server at once
		log.Print("shutting down")
	})
	ln, err := bokbok.Listen(*addr)
	if err != nil {
		log.Fatal(err)
	}
	log.Printf(`listening on %s (%s); the factory is bound as "factory"; Ctrl-C to stop`, ln.Addr(), mode)
	// Serve until Ctrl-C or SIGTERM, then shut down gracefully, and close
	// the vat once its actors have no connection left to answer.
	if err := srv.Run(ctx, ln, 10*time.Second); err != nil {
		log.Fatal(err)
	}
	vat.Close()
	<-vat.Done()
	log.Print("stopped")
}

// userKey returns the user's key, from keyFile or, without one, generated
// and logged with the command that runs examples/carfactory/client.
func userKey(keyFile, user, addr string) (bokbok.Key, error) {
	if keyFile != "" {
		return bokbok.ReadKeyFile(keyFile)
	}
	key, err := bokbok.GenerateKey()
	text, _ := key.MarshalText()
	if err == nil {
		log.Printf("no -key-file given: generated a key for user %q; run the client with it:", user)
		log.Printf("    go run ./examples/carfactory/client -addr %s -user %s -key %s", addr, user, text)
	}
	return key, err
}

// defaultAddr is the socket in the temporary directory, written so that
// bokbok reads it as a Unix socket path. examples/carfactory/client dials
// it unless given another.
func defaultAddr() string {
	return filepath.ToSlash(filepath.Join(os.TempDir(), "bokbok-carfactory.sock"))
}
