// Command ocapn-testnode is an OCapN peer serving the objects the OCapN
// test suite (github.com/ocapn/ocapn-test-suite) expects, at the swiss
// numbers its README names, on the tcp-testing-only netlayer (which is not
// secure: use it for testing only). It prints its locator; give that to
// the suite:
//
//	go run ./examples/ocapn-testnode -listen 127.0.0.1:22045
//	python3 test_runner.py 'ocapn://....tcp-testing-only?host=127.0.0.1&port=22045'
package main

import (
	"errors"
	"flag"
	"fmt"
	"log"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"syscall"
	"time"

	"github.com/bokbok-go/bokbok/ocapn"
	"github.com/bokbok-go/bokbok/ocapn/syrup"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "host:port to listen on")
	flag.Parse()

	nl, err := ocapn.ListenTestingOnlyTCP(*listen)
	if err != nil {
		log.Fatal(err)
	}
	node := ocapn.NewNode(ocapn.Config{Logger: slog.New(slog.NewTextHandler(os.Stderr, nil))})
	node.AddNetlayer(nl)
	register(node)
	fmt.Println(nl.Location())

	stop := make(chan os.Signal, 1)
	signal.Notify(stop, os.Interrupt, syscall.SIGTERM)
	<-stop
	node.Close()
}

// register puts the suite's objects at their swiss numbers.
func register(node *ocapn.Node) {
	node.Register([]byte("JadQ0++RzsD4M+40uLxTWVaVqM10DcBJ"), ocapn.ObjectFunc(carFactoryBuilder))
	node.Register([]byte("IO58l1laTyhcrgDKbEzFOO32MDd6zE5w"), ocapn.ObjectFunc(echo))
	node.Register([]byte("VMDDd1voKWarCe2GvgLbxbVFysNzRPzx"), ocapn.ObjectFunc(func(args []any) (any, error) {
		return greet(node, args)
	}))
	node.Register([]byte("IokCxYmMj04nos2JN1TDoY1bT8dXh6Lr"), ocapn.ObjectFunc(func(args []any) (any, error) {
		p, r := node.NewPromise()
		return []any{p, resolver{r}}, nil
	}))
	node.Register([]byte("gi02I1qghIwPiKGKleCQAOhpy3ZtYRpB"), ocapn.ObjectFunc(func(args []any) (any, error) {
		if len(args) != 1 {
			return nil, errors.New("the enlivener takes one sturdyref")
		}
		sr, err := ocapn.SturdyrefFromValue(args[0])
		if err != nil {
			return nil, err
		}
		return node.Enliven(sr), nil
	}))
}

// carFactoryBuilder returns a car factory.
func carFactoryBuilder(args []any) (any, error) {
	return ocapn.ObjectFunc(carFactory), nil
}

// carFactory makes a car for each [color model] it is given (one car for
// one, a list of cars for several).
func carFactory(args []any) (any, error) {
	var cars []any
	for _, a := range args {
		spec, ok := a.([]any)
		if !ok || len(spec) != 2 {
			return nil, fmt.Errorf("a car is [color model], not %v", a)
		}
		color, ok1 := spec[0].(syrup.Symbol)
		model, ok2 := spec[1].(syrup.Symbol)
		if !ok1 || !ok2 {
			return nil, fmt.Errorf("a car's color and model are symbols, not %v", a)
		}
		cars = append(cars, ocapn.ObjectFunc(func([]any) (any, error) {
			return fmt.Sprintf("Vroom! I am a %s %s car!", color, model), nil
		}))
	}
	if len(cars) == 1 {
		return cars[0], nil
	}
	return cars, nil
}

// echo returns its arguments, and has the garbage collector run soon
// after, so that references it was sent are given back.
func echo(args []any) (any, error) {
	gcSoon()
	return args, nil
}

// gcSoon runs Go's garbage collector once the current message is
// handled, so that the suite sees references dropped (op:gc-export).
func gcSoon() { time.AfterFunc(20*time.Millisecond, runtime.GC) }

// greet sends "Hello" to the object it is given (a reference, or a
// promise for one a third party handed off), as an op:deliver whose
// promise it drops.
func greet(node *ocapn.Node, args []any) (any, error) {
	if len(args) != 1 {
		return nil, errors.New("the greeter takes one reference")
	}
	node.Send(args[0], "Hello").Then(func(any, error) { gcSoon() })
	gcSoon()
	return nil, nil
}

// resolver settles a promise: fulfill VALUE or break ERROR.
type resolver struct{ r *ocapn.Resolver }

func (o resolver) Deliver(args []any) (any, error) {
	if len(args) != 2 {
		return nil, errors.New("a resolver takes fulfill or break and one value")
	}
	switch args[0] {
	case syrup.Symbol("fulfill"):
		o.r.Fulfill(args[1])
	case syrup.Symbol("break"):
		o.r.Break(&ocapn.BrokenError{Reason: args[1]}) // the reason goes back as it came
	default:
		return nil, fmt.Errorf("a resolver has no method %v", args[0])
	}
	return nil, nil
}
