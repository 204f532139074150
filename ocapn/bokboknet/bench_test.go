package bokboknet_test

import (
	"context"
	"testing"
	"time"

	"github.com/bokbok-go/bokbok"
	"github.com/bokbok-go/bokbok/ocapn"
	"github.com/bokbok-go/bokbok/ocapn/bokboknet"
)

// BenchmarkSequentialCall: one OCapN call at a time between two nodes
// over the bokbok netlayer (secure) on loopback; compare the benchmark of
// the same name in package ocapn (tcp-testing-only).
func BenchmarkSequentialCall(b *testing.B) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	key, err := bokbok.GenerateKey()
	if err != nil {
		b.Fatal(err)
	}
	keys := func(string) []bokbok.Key { return []bokbok.Key{key} }
	var at ocapn.Peer
	nodes := make([]*ocapn.Node, 2)
	for i, name := range []string{"alice", "bob"} {
		nl, err := bokboknet.Listen("127.0.0.1:0", bokboknet.Config{Name: name, PeerKeys: keys})
		if err != nil {
			b.Fatal(err)
		}
		nodes[i] = ocapn.NewNode(ocapn.Config{})
		defer nodes[i].Close()
		nodes[i].AddNetlayer(nl)
		at = nl.Location()
	}
	nodes[1].Register([]byte("echo"), ocapn.ObjectFunc(func(args []any) (any, error) { return args[0], nil }))
	echo, err := nodes[0].Enliven(ocapn.Sturdyref{Peer: at, Swiss: []byte("echo")}).Wait(ctx)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := nodes[0].Send(echo, "hello").Wait(ctx); err != nil {
			b.Fatal(err)
		}
	}
}
