// Command bob hosts a greeter and hands out a sturdyref to it: a URI that
// anyone can enliven into a live reference, from any process, with
// examples/greeter/alice.
//
//	go run ./examples/greeter/bob                         # TCP on 127.0.0.1, a free port
//	go run ./examples/greeter/bob -addr 127.0.0.1:7000    # a fixed port
//	go run ./examples/greeter/bob -addr ./bob.sock        # a Unix socket
//	go run ./examples/greeter/bob -addr ./bob.sock -store bob.json   # the same sturdyref after a restart
//
// It spawns one actor, a greeter, in a vat, registers it with the
// capability node (ocap.Node.Register) and prints the sturdyref, such as
//
//	bokbok://127.0.0.1:41235/s/ht0cY5JdpkJPTi8-Pv0kRU6Rxhq2WrjBwTbYVzsUHLw
//
// alone on the first line of standard output; its log goes to standard
// error. The greeter answers
//
//	greet [who]   "Hello WHO, my name is Bob!"
//
// The sturdyref is a bearer secret: whoever holds it can greet, and do
// nothing else here. Enlivening it opens a secure connection whose user
// and key are derived from the swiss number in the URI, so bob needs no
// accounts: the server's UserKey comes from Node.UserKey.
//
// With -store FILE the swiss number is kept in FILE (created readable by
// its owner only), and bob serves the same sturdyref after a restart, as
// long as it listens on the same address. Ctrl-C (SIGINT) or SIGTERM
// stops it gracefully and removes its socket.
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/bokbok-go/bokbok"
	"github.com/bokbok-go/bokbok/ocap"
)

// greeter is the actor: its exported method answers "Greet" and "greet".
// It runs in its vat's goroutine, one message at a time.
type greeter struct {
	name   string
	greets int // only the greeter's vat touches it
}

// Greet greets who.
func (g *greeter) Greet(who string) string {
	g.greets++
	log.Printf("greet #%d: %q", g.greets, who)
	return fmt.Sprintf("Hello %s, my name is %s!", who, g.name)
}

func main() {
	addr := flag.String("addr", "127.0.0.1:0", `address to listen on: "host:port" (port 0 picks a free one), or a Unix socket path such as "./bob.sock"`)
	public := flag.String("public", "", `the address written into the sturdyref, if others must dial another one than -addr (say "example.com:7000")`)
	name := flag.String("name", "Bob", "the greeter's name")
	store := flag.String("store", "", "a file that keeps the sturdyref's swiss number, so a restarted bob serves the same sturdyref")
	verbose := flag.Bool("v", false, "log the library's debug records too (such as refused connections)")
	flag.Parse()

	log.SetFlags(log.Ltime)
	log.SetPrefix("bob: ")
	if *verbose {
		slog.SetLogLoggerLevel(slog.LevelDebug)
	}
	if flag.NArg() != 0 {
		log.Printf("error: unexpected arguments %q", flag.Args())
		os.Exit(2)
	}
	if err := run(*addr, *public, *name, *store); err != nil {
		log.Printf("error: %v", err)
		os.Exit(1)
	}
}

func run(addr, public, name, storeFile string) error {
	// ctx is done at Ctrl-C or SIGTERM; a second one kills bob at once.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	context.AfterFunc(ctx, func() {
		stop()
		log.Print("shutting down")
	})

	vat := ocap.NewVat("bob")
	defer vat.Close()
	// The sturdyrefs carry the address to dial, node.Addr: -public if
	// given, or else the one node.Listen sets, with the real port when
	// -addr asked for a free one, or the absolute path of a Unix socket.
	node := &ocap.Node{Addr: public, Logger: slog.Default()}
	if storeFile != "" {
		st, err := ocap.OpenStore(storeFile)
		if err != nil {
			return err
		}
		node.Store = st
	}
	ln, err := node.Listen(addr)
	if err != nil {
		return err
	}
	defer ln.Close() // if registering fails; Run closes it too

	g := vat.Spawn(&greeter{name: name})
	var sr ocap.Sturdyref
	if node.Store != nil {
		sr, err = node.RegisterAs("greeter", g) // the same swiss number after a restart
	} else {
		sr, err = node.Register(g) // a fresh swiss number
	}
	if err != nil {
		return err
	}

	// No accounts: the only users this server knows are those of
	// connections opened to enliven the node's sturdyrefs.
	srv := &bokbok.Server{
		Config: bokbok.Config{
			Handler: node,
			OnClose: func(c *bokbok.Conn, reason error) {
				log.Printf("a connection closed: %v", reason)
			},
			Logger: slog.Default(),
		},
		UserKey: node.UserKey(nil),
		OnOpen: func(c *bokbok.Conn) error {
			log.Printf("a connection opened, to enliven a sturdyref")
			return nil
		},
	}

	fmt.Println(sr) // the URI, alone on the first line of standard output
	log.Printf("listening on %s; the greeter's sturdyref is on standard output; Ctrl-C to stop", ln.Addr())
	// Serve until Ctrl-C or SIGTERM, then shut down gracefully, and close
	// the vat once no connection is left for the greeter to answer.
	if err := srv.Run(ctx, ln, 10*time.Second); err != nil {
		return err
	}
	vat.Close()
	<-vat.Done()
	log.Print("stopped")
	return nil
}
