package ocapn_test

import (
	"context"
	"testing"
	"time"

	"github.com/bokbok-go/bokbok/ocapn"
)

// BenchmarkSequentialCall: one OCapN call at a time (op:deliver, its
// answer through the resolver, op:gc-answer) between two nodes over
// tcp-testing-only on loopback. Compare BenchmarkSequentialCall of
// packages ocap (bokbok's own capability protocol) and ocapn/bokboknet.
func BenchmarkSequentialCall(b *testing.B) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	nodes := make([]*ocapn.Node, 2)
	var at ocapn.Peer
	for i := range nodes {
		nl, err := ocapn.ListenTestingOnlyTCP("127.0.0.1:0")
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
