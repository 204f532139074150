package jetstream_test

import (
	"context"
	"log"
	"net"

	"github.com/bokbok-go/bokbok"
	"github.com/bokbok-go/bokbok/pipes"
	"github.com/bokbok-go/bokbok/pipes/jetstream"
)

// A hub whose logs are on a JetStream cluster. Start as many as you like,
// each with its own listener; nodes list them all in NodeConfig.Hubs.
func Example() {
	ctx := context.Background()
	l, err := jetstream.Open(ctx, jetstream.Config{URL: "nats://127.0.0.1:4222,nats://127.0.0.1:4223,nats://127.0.0.1:4224"})
	if err != nil {
		log.Fatal(err)
	}
	defer l.Close()
	keys, err := bokbok.OpenKeysFile("keys.txt")
	if err != nil {
		log.Fatal(err)
	}
	hub, err := pipes.NewHub(pipes.HubConfig{Log: l, Dir: "hub-index", UserKeys: keys.UserKeys})
	if err != nil {
		log.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:7400")
	if err != nil {
		log.Fatal(err)
	}
	log.Fatal(hub.Serve(ln))
}
