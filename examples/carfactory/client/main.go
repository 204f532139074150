// Command client drives a car from examples/carfactory/server, with promise
// pipelining: it fetches the server's factory, asks it to make a car, and
// tells that car to drive, all before any answer has come back. The three
// messages leave together and the car's noise comes back in one round
// trip, where waiting for each answer before the next message would take
// three.
//
//	go run ./examples/carfactory/client -key KEY               # as the server printed it
//	go run ./examples/carfactory/client -key-file demo.key -addr ./cars.sock
//	go run ./examples/carfactory/client -insecure -model Roadster -color red
//
// It prints what the car answers, such as "The blue Explorist goes vroom!",
// on standard output, and its log on standard error.
//
// It connects in secure mode as -user (default "demo") with that user's
// key, given with -key (the key's text form, as the server prints it) or
// -key-file (a file holding it). With -insecure it connects in insecure
// mode and needs no key. A wrong key or an unknown user ends it with "authentication failed"
// and exit status 1; so does an order the factory refuses (an empty -model
// or -color): the error breaks the promise for the car, and with it the
// promise for the noise.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"log/slog"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/bokbok-go/bokbok"
	"github.com/bokbok-go/bokbok/ocap"
)

// realm is the server's realm, as examples/carfactory/server has it.
const realm = "bokbok-carfactory"

func main() {
	addr := flag.String("addr", defaultAddr(), `address of the server: a Unix socket path such as "./cars.sock" (or "host:port")`)
	model := flag.String("model", "Explorist", "the model of car to order")
	color := flag.String("color", "blue", "the color of car to order")
	insecure := flag.Bool("insecure", false, "connect in insecure mode: no key, nothing encrypted")
	user := flag.String("user", "demo", "the user name to authenticate as")
	keyText := flag.String("key", "", "the user's key, in its text form (as the server prints it)")
	keyFile := flag.String("key-file", "", "a file holding the user's key in its text form")
	timeout := flag.Duration("timeout", 10*time.Second, "how long to wait for the server")
	verbose := flag.Bool("v", false, "log the library's debug records too")
	flag.Parse()
	log.SetFlags(log.Ltime)
	log.SetPrefix("client: ")
	if *verbose {
		slog.SetLogLoggerLevel(slog.LevelDebug)
	}

	cfg := &bokbok.Config{Logger: slog.Default()}
	if !*insecure {
		var key bokbok.Key
		var err error
		switch {
		case *keyFile != "":
			key, err = bokbok.ReadKeyFile(*keyFile)
		case *keyText != "":
			key, err = bokbok.ParseKey(*keyText)
		default:
			err = errors.New("no key: give -key KEY or -key-file FILE (examples/carfactory/server prints a key when it starts without one), or -insecure")
		}
		if err != nil {
			log.Printf("error: %v", err)
			os.Exit(2)
		}
		cfg.Key, cfg.User, cfg.Realm = &key, *user, realm
	}

	err := run(*addr, *model, *color, *timeout, cfg)
	var re *bokbok.RemoteError
	switch {
	case err == nil:
		return
	case errors.Is(err, syscall.ENOENT), errors.Is(err, syscall.ECONNREFUSED):
		log.Printf("error: %v; is the server running? (go run ./examples/carfactory/server)", err)
	case errors.As(err, &re):
		log.Printf("error: the server says [%s]: %s", re.Code, re.Message)
	default:
		log.Printf("error: %v", err) // such as bokbok.ErrAuth, for a wrong key or an unknown user
	}
	os.Exit(1)
}

// defaultAddr is examples/carfactory/server's default socket.
func defaultAddr() string {
	return filepath.ToSlash(filepath.Join(os.TempDir(), "bokbok-carfactory.sock"))
}

func run(addr, model, color string, timeout time.Duration, cfg *bokbok.Config) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()

	// A Node with nothing bound: this side only asks. Dial makes the node
	// the connection's Handler and returns the capability session.
	var node ocap.Node
	session, err := node.Dial(ctx, addr, cfg)
	if err != nil {
		return err
	}
	defer session.Close() // if something fails; after Shutdown it does nothing
	if u := session.Conn().User(); u != "" {
		log.Printf("connected to %s, authenticated as user %q", addr, u)
	} else {
		log.Printf("connected to %s (insecure)", addr)
	}

	// Nothing here waits: each Send returns a promise at once, and a
	// message sent to a promise whose answer lives on the server goes out
	// at once too, addressed to that answer.
	factory := session.Fetch("factory")
	car := factory.Send("make-car", model, color)
	noise := car.Send("drive")
	log.Printf(`sent fetch ["factory"], make-car [%s %s] and drive [], without waiting for an answer`, model, color)

	answer, err := await(ctx, noise)
	if err == nil {
		log.Printf("drive -> %q (one round trip for all three messages)", answer)
		fmt.Println(answer)
	}

	// Graceful close, also after an error from the server: what is in
	// flight both ways finishes, then the connection closes, and the
	// session ends with it.
	if serr := session.Conn().Shutdown(ctx); serr != nil && err == nil {
		return serr
	}
	<-session.Done()
	log.Printf("shut down: %v", session.Conn().Err())
	return err
}

// await waits for a promise of a string. A promise breaks with the
// server's error, as a *bokbok.RemoteError, or with an error matching
// ocap.ErrDisconnected if the connection was lost.
func await(ctx context.Context, p *ocap.Promise) (string, error) {
	r, err := p.Await(ctx)
	if err != nil {
		return "", err
	}
	var s string
	if err := r.Decode(&s); err != nil {
		return "", fmt.Errorf("the car's answer: %w", err)
	}
	return s, nil
}
