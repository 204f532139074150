package bokboknet_test

import (
	"context"
	"fmt"
	"log"
	"time"

	"github.com/bokbok-go/bokbok"
	"github.com/bokbok-go/bokbok/ocapn"
	"github.com/bokbok-go/bokbok/ocapn/bokboknet"
)

// Two nodes on loopback, alice and bob, that share one pre-shared key:
// bob serves a greeter under a swiss number, alice reaches it through its
// sturdyref and sends it a message, over an authenticated, encrypted
// bokbok connection.
func Example() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	// One key for the pair; each node finds it under the other's name.
	// (In a real deployment: bokbok keygen, and a keys file per node,
	// whose UserKeys method fits PeerKeys.)
	key, err := bokbok.GenerateKey()
	if err != nil {
		log.Fatal(err)
	}
	keyFor := func(peer string) func(string) []bokbok.Key {
		return func(name string) []bokbok.Key {
			if name == peer {
				return []bokbok.Key{key}
			}
			return nil // an unknown peer can neither dial us nor be dialed
		}
	}

	// Bob, the serving node.
	bobNet, err := bokboknet.Listen("127.0.0.1:0", bokboknet.Config{Name: "bob", PeerKeys: keyFor("alice")})
	if err != nil {
		log.Fatal(err)
	}
	bob := ocapn.NewNode(ocapn.Config{})
	defer bob.Close()
	bob.AddNetlayer(bobNet)
	bob.Register([]byte("greeter"), ocapn.ObjectFunc(func(args []any) (any, error) {
		return fmt.Sprintf("Hello, %v!", args[0]), nil
	}))
	// ocapn://bob.bokbok/s/greeter?addr=tcp%3A%2F%2F127.0.0.1%3APORT
	uri := ocapn.Sturdyref{Peer: bobNet.Location(), Swiss: []byte("greeter")}.String()

	// Alice, who dials bob as the user "alice" with the key they share.
	aliceNet, err := bokboknet.Listen("127.0.0.1:0", bokboknet.Config{Name: "alice", PeerKeys: keyFor("bob")})
	if err != nil {
		log.Fatal(err)
	}
	alice := ocapn.NewNode(ocapn.Config{})
	defer alice.Close()
	alice.AddNetlayer(aliceNet)

	sr, err := ocapn.ParseSturdyref(uri)
	if err != nil {
		log.Fatal(err)
	}
	greeter, err := alice.Enliven(sr).Wait(ctx)
	if err != nil {
		log.Fatal(err)
	}
	answer, err := alice.Send(greeter, "Alice").Wait(ctx)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(greeter.(*ocapn.Ref).Peer().Designator, "says:", answer)
	// Output: bob says: Hello, Alice!
}
