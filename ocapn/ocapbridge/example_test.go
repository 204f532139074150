package ocapbridge_test

import (
	"context"
	"fmt"
	"log"
	"time"

	"github.com/bokbok-go/bokbok/ocap"
	"github.com/bokbok-go/bokbok/ocapn"
	"github.com/bokbok-go/bokbok/ocapn/ocapbridge"
	"github.com/bokbok-go/bokbok/ocapn/syrup"
)

type greeter struct{}

// Greet answers "Greet" and "greet".
func (greeter) Greet(name string) string { return "Hello, " + name + "!" }

// An ocap actor offered to OCapN peers: the message ['greet "Alice"] is
// the actor's Greet("Alice"). The same Ref could be bound on an ocap.Node
// too.
func Example() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	vat := ocap.NewVat("greeters")
	defer vat.Close()
	actor := vat.Spawn(greeter{})

	nl, err := ocapn.ListenTestingOnlyTCP("127.0.0.1:0") // INSECURE: for tests
	if err != nil {
		log.Fatal(err)
	}
	server := ocapn.NewNode(ocapn.Config{})
	defer server.Close()
	server.AddNetlayer(nl)
	server.Register([]byte("greeter"), ocapbridge.New(server, vat).Export(actor))

	nl2, err := ocapn.ListenTestingOnlyTCP("127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	client := ocapn.NewNode(ocapn.Config{})
	defer client.Close()
	client.AddNetlayer(nl2)
	g, err := client.Enliven(ocapn.Sturdyref{Peer: nl.Location(), Swiss: []byte("greeter")}).Wait(ctx)
	if err != nil {
		log.Fatal(err)
	}
	answer, err := client.Send(g, syrup.Symbol("greet"), "Alice").Wait(ctx)
	fmt.Println(answer, err)
	// Output: Hello, Alice! <nil>
}
