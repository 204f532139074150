// Command ocapn-carfactory is the car factory of Spritely Goblins' CapTP
// chapter (Racket Goblins, "CapTP usage example": captp-uds-server.rkt
// serves Fork Motors' ^car-factory, captp-uds-client.rkt orders a car and
// drives it with promise pipelining) translated to Go with package ocapn.
// It speaks OCapN, so it is meant to interoperate with Spritely Goblins
// (Racket or Guile) over the tcp-testing-only netlayer, the one the OCapN
// test suite and Goblins' interoperability testing use.
//
// tcp-testing-only is NOT SECURE: nothing is encrypted or authenticated,
// and a peer is whoever it claims to be. Use it for testing only, on a
// machine or network you trust. (The seed program wires CapTP by hand
// over a Unix socket, the factory being the connection's bootstrap
// object; OCapN reaches it by sturdyref instead.)
//
// The server serves a car factory and prints its sturdyref alone on the
// first line of standard output:
//
//	go run ./examples/ocapn-carfactory -serve
//	go run ./examples/ocapn-carfactory -serve -listen 127.0.0.1:22047 -company Fork
//
// The client orders a car and drives it, and prints what it hears:
//
//	go run ./examples/ocapn-carfactory -sturdyref 'ocapn://...tcp-testing-only/s/...?host=127.0.0.1&port=...'
//	We hear: *Vroom vroom!* You drive your blue Fork Explorist!
//
//	go run ./examples/ocapn-carfactory -sturdyref '...' -model Roadster -color red
//
// As in the seed, the factory is invoked with a model and a color (two
// strings) and answers with a new car; the car is invoked with no
// arguments and answers with the noise of driving it. The client does not
// wait for the car before driving it: it sends "make a car" to the
// promised factory, then at once sends "drive" (a message with no
// arguments) to the promised car, and only then waits, for the noise.
// That is promise pipelining; the seed's client does the same:
//
//	(define car-vow (<- car-factory-vow "Explorist" "blue"))
//	(define drive-noise-vow (<- car-vow))
//
// Both this client and a Goblins one send the second message on the wire
// at once, to the first one's answer position, and this server takes such
// pipelined messages: the fetch of the factory, the order and the drive
// leave together, in one round trip. To drive a car from Goblins, enliven the
// printed sturdyref from a Goblins program or REPL that has a
// tcp-testing-only netlayer, and send it the two messages above; the Go
// client can likewise order from a Goblins car factory whose sturdyref a
// Goblins program printed.
//
// Ctrl-C (or SIGTERM) stops the server: it closes its node, ending its
// sessions, and exits with status 0. A client whose order fails prints
// "UHOH!!! Something went wrong: ..." and exits with status 1; bad flags
// exit with status 2.
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
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/bokbok-go/bokbok/ocapn"
	"github.com/bokbok-go/bokbok/ocapn/syrup"
)

func main() {
	serve := flag.Bool("serve", false, "serve a car factory and print its sturdyref; without it, order a car from the factory -sturdyref names and drive it")
	listen := flag.String("listen", "127.0.0.1:0", "host:port of this node's tcp-testing-only netlayer (port 0 picks a free one); the sturdyref carries it")
	company := flag.String("company", "Fork", "with -serve: the car company's name")
	sturdyref := flag.String("sturdyref", "", "the car factory's sturdyref, ocapn://DESIGNATOR.tcp-testing-only/s/SWISS?host=...&port=... (as -serve prints it)")
	model := flag.String("model", "Explorist", "the model of car to order")
	color := flag.String("color", "blue", "the car's color")
	timeout := flag.Duration("timeout", 30*time.Second, "how long the client waits for the driving noise")
	verbose := flag.Bool("v", false, "log why OCapN sessions end")
	flag.Usage = func() {
		out := flag.CommandLine.Output()
		fmt.Fprint(out, `ocapn-carfactory: the car factory of Goblins' CapTP chapter, with promise
pipelining, over OCapN's INSECURE tcp-testing-only netlayer (for testing only).

usage:
  ocapn-carfactory -serve [-listen HOST:PORT] [-company NAME]      # prints the sturdyref
  ocapn-carfactory -sturdyref URI [-model MODEL] [-color COLOR]    # prints "We hear: ..."

flags:
`)
		flag.PrintDefaults()
	}
	flag.Parse()
	log.SetFlags(0)
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

	switch {
	case *serve && *sturdyref != "":
		usageError("give -serve or -sturdyref, not both")
	case *serve:
		if err := runServer(ctx, *listen, *company, logger); err != nil {
			log.Printf("error: %v", err)
			os.Exit(1)
		}
	case *sturdyref != "":
		sr, err := ocapn.ParseSturdyref(*sturdyref)
		if err != nil {
			usageError("%v", err)
		}
		if err := runClient(ctx, *listen, sr, *model, *color, *timeout, logger); err != nil {
			log.Printf("UHOH!!! Something went wrong: %v", err)
			os.Exit(1)
		}
	default:
		usageError("give -serve to serve a car factory, or -sturdyref URI to order a car from one")
	}
}

// usageError reports a mistake in the command line and exits with status
// 2.
func usageError(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "ocapn-carfactory: "+format+"\n(ocapn-carfactory -h for help)\n", args...)
	os.Exit(2)
}

// carFactory is the seed's ^car-factory: invoked with a model and a
// color, it makes a car. It runs on the node's event loop, one message at
// a time, so the count needs no lock.
type carFactory struct {
	company string
	made    int
}

func (f *carFactory) Deliver(args []any) (any, error) {
	if len(args) != 2 {
		return nil, fmt.Errorf("the car factory takes a model and a color; got %d arguments", len(args))
	}
	model, ok1 := text(args[0])
	color, ok2 := text(args[1])
	if !ok1 || !ok2 {
		return nil, fmt.Errorf("the car factory takes a model and a color, two strings, not %T and %T", args[0], args[1])
	}
	if model == "" || color == "" {
		return nil, fmt.Errorf("a car needs a model and a color, got model %q and color %q", model, color)
	}
	f.made++
	n := f.made
	log.Printf("factory: made car #%d, a %s %s %s", n, color, f.company, model)
	// The seed's ^car: invoked with no arguments, it is driven. It is a
	// new object, exported to the client when the factory's answer goes
	// back (or, to a pipelining client, before it has even seen it).
	company := f.company
	return ocapn.ObjectFunc(func(args []any) (any, error) {
		if len(args) != 0 {
			return nil, fmt.Errorf("a car is driven with no arguments; got %d", len(args))
		}
		noise := fmt.Sprintf("*Vroom vroom!* You drive your %s %s %s!", color, company, model)
		log.Printf("car #%d: %s", n, noise)
		return noise, nil
	}), nil
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

// announcing is the server's netlayer: tcp-testing-only, saying so when a
// connection arrives, as the seed's server does. Any Netlayer can be
// wrapped like this.
type announcing struct{ *ocapn.TestingOnlyTCP }

func (a announcing) Accept() (net.Conn, error) {
	c, err := a.TestingOnlyTCP.Accept()
	if err == nil {
		log.Print("*** New connection!")
	}
	return c, err
}

// runServer serves a car factory until ctx is done.
func runServer(ctx context.Context, listen, company string, logger *slog.Logger) error {
	nl, err := ocapn.ListenTestingOnlyTCP(listen) // INSECURE: for testing only
	if err != nil {
		return err
	}
	node := ocapn.NewNode(ocapn.Config{Logger: logger})
	defer node.Close()
	node.AddNetlayer(announcing{nl}) // node.Close closes it

	// A swiss number is a bearer secret: 32 random bytes, written as
	// unpadded base64url so that it goes into a URI as is.
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return err
	}
	swiss := []byte(base64.RawURLEncoding.EncodeToString(b))
	node.Register(swiss, &carFactory{company: company})
	sr := ocapn.Sturdyref{Peer: nl.Location(), Swiss: swiss}
	fmt.Println(sr) // alone on the first line of standard output, for copying
	log.Printf("*** Server up and running! %s Motors' car factory is at the sturdyref above; order a car with:", company)
	log.Printf("    go run ./examples/ocapn-carfactory -sturdyref '%s'", sr)
	log.Print("tcp-testing-only is INSECURE: for testing only. Ctrl-C stops.")

	<-ctx.Done()
	log.Print("shutting down")
	node.Close()
	log.Print("stopped")
	return nil
}

// runClient orders a car and drives it, with promise pipelining.
func runClient(ctx context.Context, listen string, sr ocapn.Sturdyref, model, color string, timeout time.Duration, logger *slog.Logger) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	// A node needs a netlayer of a transport to dial peers on it.
	nl, err := ocapn.ListenTestingOnlyTCP(listen) // INSECURE: for testing only
	if err != nil {
		return err
	}
	node := ocapn.NewNode(ocapn.Config{Logger: logger})
	defer node.Close()
	node.AddNetlayer(nl)

	// A promise for the factory, which a session to its node will
	// resolve.
	carFactoryVow := node.Enliven(sr)
	carFactoryVow.Then(func(_ any, err error) { // on the node's event loop
		if err == nil {
			log.Print("*** Connected to server")
		}
	})
	// Get a promise to get a new car...
	carVow := node.Send(carFactoryVow, model, color)
	// ...and pipeline a message to it, with no arguments: drive it. No
	// answer has come back yet.
	driveNoiseVow := node.Send(carVow)

	// Now wait for the driving noise, the answer to the pipelined message.
	driveNoise, err := driveNoiseVow.Wait(ctx)
	if err != nil {
		return explain(err)
	}
	fmt.Printf("We hear: %v\n", driveNoise)
	return nil
}

// explain adds a hint to err.
func explain(err error) error {
	var broken *ocapn.BrokenError
	switch {
	case errors.As(err, &broken):
		return fmt.Errorf("the car factory's node refused: %v", broken.Reason)
	case errors.Is(err, context.DeadlineExceeded):
		return errors.New("no answer in time (is the server running? go run ./examples/ocapn-carfactory -serve)")
	case errors.Is(err, context.Canceled):
		return errors.New("interrupted")
	case errors.Is(err, ocapn.ErrSessionEnded):
		return fmt.Errorf("%w (is the server running? go run ./examples/ocapn-carfactory -serve)", err)
	}
	return err
}
