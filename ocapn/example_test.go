package ocapn_test

import (
	"context"
	"fmt"
	"log"
	"time"

	"github.com/bokbok-go/bokbok/ocapn"
)

// Two nodes on loopback: one serves a greeter under a swiss number, the
// other reaches it through its sturdyref and sends it a message.
func Example() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	// The serving node. tcp-testing-only is INSECURE: for tests only.
	nl, err := ocapn.ListenTestingOnlyTCP("127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	server := ocapn.NewNode(ocapn.Config{})
	defer server.Close()
	server.AddNetlayer(nl)
	server.Register([]byte("greeter"), ocapn.ObjectFunc(func(args []any) (any, error) {
		return fmt.Sprintf("Hello, %v!", args[0]), nil
	}))
	uri := ocapn.Sturdyref{Peer: nl.Location(), Swiss: []byte("greeter")}.String()

	// The other node needs a netlayer of the same transport to dial.
	nl2, err := ocapn.ListenTestingOnlyTCP("127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	client := ocapn.NewNode(ocapn.Config{})
	defer client.Close()
	client.AddNetlayer(nl2)

	sr, err := ocapn.ParseSturdyref(uri)
	if err != nil {
		log.Fatal(err)
	}
	greeter, err := client.Enliven(sr).Wait(ctx)
	if err != nil {
		log.Fatal(err)
	}
	answer, err := client.Send(greeter, "Alice").Wait(ctx)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(answer)
	// Output: Hello, Alice!
}

// A promise the object hands out before it knows the value: messages
// sent to it wait for its resolution (promise pipelining).
func ExampleNode_NewPromise() {
	node := ocapn.NewNode(ocapn.Config{})
	defer node.Close()
	p, r := node.NewPromise()
	doubled := node.Send(p, 21) // waits for p
	r.Fulfill(ocapn.ObjectFunc(func(args []any) (any, error) { return args[0].(int) * 2, nil }))
	v, err := doubled.Wait(context.Background())
	fmt.Println(v, err)
	// Output: 42 <nil>
}
