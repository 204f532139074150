package ocap_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/bokbok-go/bokbok"
	"github.com/bokbok-go/bokbok/ocap"
)

// counter is an actor: a value with exported methods. Its vat runs one
// message at a time, so it needs no lock.
type counter struct{ n int }

// Add answers "Add" and "add".
func (c *counter) Add(k int) int {
	c.n += k
	return c.n
}

// factory makes cars. A method may take the turn's context first, to
// spawn actors in its own vat.
type factory struct{}

// MakeCar answers "MakeCar" and "make-car".
func (factory) MakeCar(ctx context.Context, model, color string) (ocap.Ref, error) {
	return ocap.Spawn(ctx, &car{model, color})
}

type car struct{ model, color string }

func (c *car) Drive() string { return fmt.Sprintf("The %s %s goes vroom!", c.color, c.model) }

// An actor in a vat, sent messages from outside any vat. Await waits for
// an answer; sends through one reference arrive in the order they were
// made, so the second answer counts the first.
func ExampleVat_Spawn() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	vat := ocap.NewVat("example")
	defer vat.Close()

	c := vat.Spawn(&counter{})
	c.Send("add", 2) // the promise can be ignored
	r, err := c.Send("add", 40).Await(ctx)
	if err != nil {
		panic(err)
	}
	var n int
	if err := r.Decode(&n); err != nil {
		panic(err)
	}
	fmt.Println("count:", n)

	// An unknown method breaks the promise with a *bokbok.RemoteError.
	_, err = c.Send("subtract", 1).Await(ctx)
	var re *bokbok.RemoteError
	if errors.As(err, &re) {
		fmt.Println("subtract:", re.Code)
	}
	// Output:
	// count: 42
	// subtract: ocap.no_method
}

// The car factory of Spritely Goblins' CapTP, between two nodes connected
// in this process over the real protocol. The client sends "make-car" to
// the factory and "drive" to the car it will make before either answer
// exists: both messages (and the fetch of the factory) go out at once,
// and the answer comes back in one round trip.
func ExamplePipe() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	vat := ocap.NewVat("factory")
	defer vat.Close()
	var server, client ocap.Node
	server.Bind("factory", vat.Spawn(factory{}))

	cs, ss, err := ocap.Pipe(ctx, &client, &server)
	if err != nil {
		panic(err)
	}
	defer ss.Close()
	defer cs.Close()

	car := cs.Fetch("factory").Send("make-car", "Explorist", "blue")
	noise := car.Send("drive")
	r, err := noise.Await(ctx)
	if err != nil {
		panic(err)
	}
	var s string
	if err := r.Decode(&s); err != nil {
		panic(err)
	}
	fmt.Println(s)
	// Output: The blue Explorist goes vroom!
}

// listener runs in the client's vat; the server calls it back.
type listener struct{}

func (listener) Hear(news string) string {
	fmt.Println("listener heard:", news)
	return "thanks for " + news
}

// board is the server's actor. It gets a reference to the client's
// listener inside a message, and calls it back. Returning a promise
// chains: the caller's promise settles as this one does.
type board struct{}

func (board) Subscribe(l ocap.Ref) *ocap.Promise {
	fmt.Println("board got", l)
	return l.Send("hear", "the news")
}

// A reference passed inside a message: the client hands the server a
// reference to its own actor, and the server calls it back across the
// connection. A reference sent back to the side that exported it arrives
// as the original.
func ExampleRef_Send() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	serverVat, clientVat := ocap.NewVat("server"), ocap.NewVat("client")
	defer serverVat.Close()
	defer clientVat.Close()
	var server, client ocap.Node
	server.Bind("board", serverVat.Spawn(board{}))
	cs, ss, err := ocap.Pipe(ctx, &client, &server)
	if err != nil {
		panic(err)
	}
	defer ss.Close()
	defer cs.Close()

	l := clientVat.Spawn(listener{})
	r, err := cs.Fetch("board").Send("subscribe", l).Await(ctx)
	if err != nil {
		panic(err)
	}
	var answer string
	if err := r.Decode(&answer); err != nil {
		panic(err)
	}
	fmt.Println("the board answered:", answer)

	// An echo: the server's import of l comes back as l itself.
	echo := ocap.Methods{"echo": func(r ocap.Ref) ocap.Ref { return r }}
	server.Bind("echo", serverVat.Spawn(echo))
	r, err = cs.Fetch("echo").Send("echo", l).Await(ctx)
	if err != nil {
		panic(err)
	}
	back, err := r.Ref()
	if err != nil {
		panic(err)
	}
	fmt.Println("the same reference:", back == l)
	// Output:
	// board got ocap.Ref(import 1 from pipe)
	// listener heard: the news
	// the board answered: thanks for the news
	// the same reference: true
}

// Inside a vat, an actor must not block on a promise: On runs a callback
// in the vat, in a turn of its own, once the promise settles. Vat.Do is
// the way into a vat from outside.
func ExampleOn() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	a, b := ocap.NewVat("a"), ocap.NewVat("b")
	defer a.Close()
	defer b.Close()
	c := b.Spawn(&counter{})

	done := make(chan struct{})
	err := a.Do(ctx, func(ctx context.Context) {
		ocap.On(ctx, c.Send("add", 5), func(r ocap.Result) {
			var n int
			r.Decode(&n)
			fmt.Println("fulfilled, in vat", ocap.VatOf(ctx).Name()+":", n)
		}, nil)
		ocap.On(ctx, c.Send("divide", 0), nil, func(err error) {
			fmt.Println("broken:", err)
			close(done)
		})
		fmt.Println("On does not wait")
	})
	if err != nil {
		panic(err)
	}
	<-done
	// Output:
	// On does not wait
	// fulfilled, in vat a: 5
	// broken: bokbok: remote error [ocap.no_method]: no method "divide"
}

// A Node is a bokbok.Handler: set it as a server's handler, bind the
// actors clients may fetch by name, and dial with another Node. Nothing
// else on the server is reachable from the client.
func ExampleNode_Bind() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	vat := ocap.NewVat("server")
	defer vat.Close()

	var node ocap.Node
	node.Bind("counter", vat.Spawn(&counter{n: 100}))
	srv := &bokbok.Server{Config: bokbok.Config{Handler: &node}}
	ln, err := bokbok.Listen("127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	go srv.Serve(ln)
	defer srv.Shutdown(ctx)

	var client ocap.Node
	s, err := client.Dial(ctx, ln.Addr().String(), nil)
	if err != nil {
		panic(err)
	}
	defer s.Close()

	r, err := s.Fetch("counter").Send("add", 1).Await(ctx)
	if err != nil {
		panic(err)
	}
	n, _ := r.Value()
	fmt.Println("counter:", n)

	_, err = s.Fetch("admin").Await(ctx)
	fmt.Println(err)
	// Output:
	// counter: 101
	// bokbok: remote error [ocap.not_found]: nothing is bound to "admin"
}
