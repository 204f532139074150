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
	"path/filepath"
	"syscall"

	"github.com/bokbok-go/bokbok"
	"github.com/bokbok-go/bokbok/examples/internal/exampleutil"
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
	keys := exampleutil.ServerKeyFlags() // -insecure, -user, -key, -key-file, -realm
	verbose := flag.Bool("v", false, "log the library's debug records too (such as refused clients)")
	flag.Parse()

	exampleutil.SetupLog("server: ", *verbose)
	ctx, stop := exampleutil.SignalContext() // done at Ctrl-C or SIGTERM
	defer stop()

	// The vat and its one actor, bound under a name. The Node serves the
	// capability protocol: it is the connections' Handler.
	vat := ocap.NewVat("carfactory")
	defer vat.Close()
	node := &ocap.Node{Logger: slog.Default()}
	node.Bind("factory", vat.Spawn(&factory{}))

	// The connections are numbered #1, #2 and so on in the log, which
	// says when each opens and closes.
	conns := &exampleutil.ConnLog{}
	srv := &bokbok.Server{
		Config: bokbok.Config{
			Handler: node,
			OnClose: conns.Closed,
			Logger:  slog.Default(),
		},
		OnOpen: conns.Opened,
	}

	if !keys.Insecure {
		// One user, as in examples/server.
		srv.UserKey = keys.UserKey("./examples/carfactory/client", *addr, defaultAddr())
		srv.Realm = keys.Realm
	}

	ln, err := listen(*addr)
	if err != nil {
		log.Fatal(err)
	}
	log.Printf(`listening on %s (%s); the factory is bound as "factory"; Ctrl-C to stop`, ln.Addr(), keys.Mode())
	// Serve until Ctrl-C or SIGTERM, then shut down gracefully and close
	// the vat.
	if err := exampleutil.ServeNode(ctx, srv, ln, node, vat); err != nil {
		log.Fatal(err)
	}
}

// defaultAddr is the socket in the temporary directory, written so that
// bokbok reads it as a Unix socket path. examples/carfactory/client dials
// it unless given another.
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
