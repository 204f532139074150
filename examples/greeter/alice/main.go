// Command alice enlivens the sturdyref examples/greeter/bob printed and
// asks the greeter to greet her.
//
//	go run ./examples/greeter/alice 'bokbok://127.0.0.1:41235/s/ht0cY5JdpkJPTi8-Pv0kRU6Rxhq2WrjBwTbYVzsUHLw'
//	go run ./examples/greeter/alice -name Carol 'bokbok+unix:///home/me/bob.sock/s/ht0cY5Jd...'
//
// It prints the greeter's answer, "Hello Alice, my name is Bob!", on
// standard output and its log on standard error.
//
// Alice has no account on bob's server and needs none: the sturdyref is
// all she needs. ocap.Node.Enliven dials the address in the URI over a
// secure connection whose user and key are derived from the swiss number,
// asks bob's node for the object the swiss number names, and returns a
// live reference to it. A sturdyref that bob does not know (revoked,
// mistyped, or of a bob that was restarted without -store) ends alice
// with an error saying so and exit status 1.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"log/slog"
	"os"
	"syscall"
	"time"

	"github.com/bokbok-go/bokbok/ocap"
)

func main() {
	name := flag.String("name", "Alice", "the name to be greeted by")
	timeout := flag.Duration("timeout", 10*time.Second, "how long to wait for bob")
	verbose := flag.Bool("v", false, "log the library's debug records too")
	flag.Usage = func() {
		fmt.Fprint(flag.CommandLine.Output(), "usage: alice [flags] STURDYREF\n\nSTURDYREF is the URI examples/greeter/bob prints.\n\n")
		flag.PrintDefaults()
	}
	flag.Parse()
	log.SetFlags(log.Ltime)
	log.SetPrefix("alice: ")
	if *verbose {
		slog.SetLogLoggerLevel(slog.LevelDebug)
	}
	if flag.NArg() != 1 {
		flag.Usage()
		os.Exit(2)
	}
	sr, err := ocap.ParseSturdyref(flag.Arg(0))
	if err != nil {
		log.Printf("error: %v", err)
		os.Exit(2)
	}

	err = run(sr, *name, *timeout)
	switch {
	case err == nil:
		return
	case errors.Is(err, ocap.ErrUnknownSturdyref):
		log.Printf("error: %v; bob does not know this sturdyref (revoked, mistyped, or bob restarted without -store)", err)
	case errors.Is(err, syscall.ENOENT), errors.Is(err, syscall.ECONNREFUSED):
		log.Printf("error: %v; is bob running? (go run ./examples/greeter/bob)", err)
	default:
		log.Printf("error: %v", err)
	}
	os.Exit(1)
}

func run(sr ocap.Sturdyref, name string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()

	// A Node with nothing of its own to offer: it only enlivens.
	node := &ocap.Node{Logger: slog.Default()}
	defer node.Close()

	greeter, err := node.Enliven(ctx, sr)
	if err != nil {
		return err
	}
	log.Printf("enlivened the sturdyref: %v", greeter)

	r, err := greeter.Send("greet", name).Await(ctx)
	if err != nil {
		return fmt.Errorf("greet: %w", err)
	}
	var greeting string
	if err := r.Decode(&greeting); err != nil {
		return fmt.Errorf("greet: the answer: %w", err)
	}
	fmt.Println(greeting)

	// Close gracefully: what is in flight finishes first. (The deferred
	// node.Close would close at once.)
	for _, s := range node.Sessions() {
		if err := s.Shutdown(ctx); err != nil {
			log.Printf("closing the connection: %v", err)
		}
	}
	return nil
}
