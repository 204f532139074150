// Command ocapn-greeter is the greeter of Spritely Goblins' CapTP
// chapter (Racket Goblins, "Two Goblins programs chatting over CapTP":
// captp-bob.rkt serves a greeter and prints its sturdyref, captp-alice.rkt
// enlivens the sturdyref and sends it a name) translated to Go with
// package ocapn. It speaks OCapN, so either side may be a Goblins program
// (Guile or Racket) instead: it is meant to interoperate with Spritely
// Goblins over the tcp-testing-only netlayer, the one the OCapN test
// suite and Goblins' interoperability testing use.
//
// tcp-testing-only is NOT SECURE: nothing is encrypted or authenticated,
// and a peer is whoever it claims to be. Use it for testing only, on a
// machine or network you trust. (The seed program uses Tor onion
// services; this package's other netlayers are not Goblins', so the
// translation uses the one netlayer both sides have.)
//
// Bob, the server, serves a greeter and prints its sturdyref alone on the
// first line of standard output:
//
//	go run ./examples/ocapn-greeter -serve
//	go run ./examples/ocapn-greeter -serve -listen 127.0.0.1:22046 -my-name Robert
//
// Alice, the client, enlivens it, sends her name and prints what she heard
// back, then exits with status 0:
//
//	go run ./examples/ocapn-greeter -sturdyref 'ocapn://...tcp-testing-only/s/...?host=127.0.0.1&port=...' -name Alice
//	Alice heard back: Hello Alice, my name is Bob!
//
// As in the seed, the greeter is invoked with one argument, the caller's
// name (a string), and answers "Hello NAME, my name is MY-NAME!". So a
// Goblins Alice can enliven the printed sturdyref from a Goblins program
// or REPL that has a tcp-testing-only netlayer, and send it a name as the
// seed's captp-alice.rkt does, (<- alice-vow "Alice"); and this client
// can greet a Goblins greeter: give it the sturdyref the Goblins side
// prints, and it prints whatever that greeter answers.
//
// Ctrl-C (or SIGTERM) stops the server: it closes its node, ending its
// sessions, and exits with status 0. Errors go to standard error with exit
// status 1; bad flags exit with status 2.
package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"log"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/bokbok-go/bokbok/ocapn"
	"github.com/bokbok-go/bokbok/ocapn/syrup"
)

func main() {
	serve := flag.Bool("serve", false, "serve a greeter and print its sturdyref (Bob); without it, greet the one -sturdyref names (Alice)")
	listen := flag.String("listen", "127.0.0.1:0", "host:port of this node's tcp-testing-only netlayer (port 0 picks a free one); the sturdyref carries it. The client listens too: OCapN peers can be called back")
	myName := flag.String("my-name", "Bob", "with -serve: the greeter's name")
	sturdyref := flag.String("sturdyref", "", "the greeter's sturdyref, ocapn://DESIGNATOR.tcp-testing-only/s/SWISS?host=...&port=... (as -serve prints it)")
	name := flag.String("name", "Alice", "the name to be greeted by")
	timeout := flag.Duration("timeout", 30*time.Second, "how long the client waits for the greeter's answer")
	verbose := flag.Bool("v", false, "log why OCapN sessions end")
	flag.Usage = func() {
		out := flag.CommandLine.Output()
		fmt.Fprint(out, `ocapn-greeter: the greeter of Goblins' CapTP chapter, over OCapN's
INSECURE tcp-testing-only netlayer (for testing only).

usage:
  ocapn-greeter -serve [-listen HOST:PORT] [-my-name NAME]    # prints the sturdyref
  ocapn-greeter -sturdyref URI [-name NAME]                   # prints "NAME heard back: ..."

flags:
`)
		flag.PrintDefaults()
	}
	flag.Parse()
	log.SetFlags(log.Ltime)
	if flag.NArg() != 0 {
		usageError("unexpected arguments %q", flag.Args())
	}
	var logger *slog.Logger
	if *verbose {
		logger = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}

	// ctx is done at Ctrl-C or SIGTERM.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	var err error
	switch {
	case *serve && *sturdyref != "":
		usageError("give -serve or -sturdyref, not both")
	case *serve:
		log.SetPrefix("bob: ")
		err = runServer(ctx, *listen, *myName, logger)
	case *sturdyref != "":
		log.SetPrefix(*name + ": ")
		sr, perr := ocapn.ParseSturdyref(*sturdyref)
		if perr != nil {
			usageError("%v", perr)
		}
		err = runClient(ctx, *listen, sr, *name, *timeout, logger)
	default:
		usageError("give -serve to serve a greeter, or -sturdyref URI to greet one")
	}
	if err != nil {
		log.Printf("error: %v", err)
		os.Exit(1)
	}
}

// usageError reports a mistake in the command line and exits with status
// 2.
func usageError(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "ocapn-greeter: "+format+"\n(ocapn-greeter -h for help)\n", args...)
	os.Exit(2)
}

// newNode returns a node serving on a tcp-testing-only netlayer that
// listens on listen. A node needs a netlayer of a transport to dial peers
// on it, so the client has one too.
func newNode(listen string, logger *slog.Logger) (*ocapn.Node, *ocapn.TestingOnlyTCP, error) {
	nl, err := ocapn.ListenTestingOnlyTCP(listen) // INSECURE: for testing only
	if err != nil {
		return nil, nil, err
	}
	node := ocapn.NewNode(ocapn.Config{Logger: logger})
	node.AddNetlayer(nl) // node.Close closes it
	return node, nl, nil
}

// greeter is the seed's ^greeter: invoked with the caller's name, it
// answers with a greeting. Its Deliver runs on the node's event loop, one
// message at a time, so the count needs no lock.
type greeter struct {
	myName string
	greets int
}

func (g *greeter) Deliver(args []any) (any, error) {
	if len(args) != 1 {
		return nil, fmt.Errorf("the greeter takes one argument, your name; got %d", len(args))
	}
	yourName, ok := text(args[0])
	if !ok {
		return nil, fmt.Errorf("the greeter takes a name (a string), not %T", args[0])
	}
	g.greets++
	log.Printf("greet #%d: %q", g.greets, yourName)
	return fmt.Sprintf("Hello %s, my name is %s!", yourName, g.myName), nil
}

// text returns a string's or a symbol's text: Goblins programs may send
// either.
func text(v any) (string, bool) {
	switch x := v.(type) {
	case string:
		return x, true
	case syrup.Symbol:
		return string(x), true
	}
	return "", false
}

// newSwiss returns a fresh swiss number: 32 random bytes, written as
// unpadded base64url so that it goes into a URI as is. Whoever knows it
// can reach the object, so it must be unguessable.
func newSwiss() ([]byte, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return nil, err
	}
	return []byte(base64.RawURLEncoding.EncodeToString(b)), nil
}

// runServer is Bob: it serves a greeter until ctx is done.
func runServer(ctx context.Context, listen, myName string, logger *slog.Logger) error {
	node, nl, err := newNode(listen, logger)
	if err != nil {
		return err
	}
	defer node.Close()

	swiss, err := newSwiss()
	if err != nil {
		return err
	}
	node.Register(swiss, &greeter{myName: myName})
	sr := ocapn.Sturdyref{Peer: nl.Location(), Swiss: swiss}
	fmt.Println(sr) // alone on the first line of standard output, for copying
	log.Printf("%s's sturdyref is on standard output; greet with: go run ./examples/ocapn-greeter -sturdyref '%s' -name Alice", myName, sr)
	log.Print("tcp-testing-only is INSECURE: for testing only. Ctrl-C stops.")

	<-ctx.Done()
	log.Print("shutting down")
	node.Close()
	log.Print("stopped")
	return nil
}

// runClient is Alice: she enlivens the greeter's sturdyref, sends it her
// name and prints what she hears back.
func runClient(ctx context.Context, listen string, sr ocapn.Sturdyref, name string, timeout time.Duration, logger *slog.Logger) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	node, _, err := newNode(listen, logger)
	if err != nil {
		return err
	}
	defer node.Close()

	// Enliven opens a session to the greeter's node and fetches the object
	// the swiss number names. The message to it could be sent to the
	// promise at once (node.Send waits for it); waiting first gives a
	// clearer error when the greeter cannot be reached.
	greeter, err := node.Enliven(sr).Wait(ctx)
	if err != nil {
		return explain(err, "enlivening the sturdyref")
	}
	heardBack, err := node.Send(greeter, name).Wait(ctx)
	if err != nil {
		return explain(err, "greeting")
	}
	fmt.Printf("%s heard back: %v\n", name, heardBack)
	return nil
}

// explain adds what the client was doing, and a hint, to err.
func explain(err error, doing string) error {
	var broken *ocapn.BrokenError
	switch {
	case errors.As(err, &broken):
		return fmt.Errorf("%s: the greeter's node refused: %v", doing, broken.Reason)
	case errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("%s: no answer in time (is the server running? go run ./examples/ocapn-greeter -serve)", doing)
	case errors.Is(err, context.Canceled):
		return fmt.Errorf("%s: interrupted", doing)
	case errors.Is(err, ocapn.ErrSessionEnded):
		return fmt.Errorf("%s: %w (is the server running? go run ./examples/ocapn-greeter -serve)", doing, err)
	}
	return fmt.Errorf("%s: %w", doing, err)
}
