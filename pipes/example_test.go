package pipes_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/bokbok-go/bokbok"
	"github.com/bokbok-go/bokbok/pipes"
)

// A hub and two nodes: alice puts a message on the persistent pipeline
// CHAT, and both nodes' listeners get it, alice's marked as her own.
func Example() {
	dir, _ := os.MkdirTemp("", "pipes-example")
	defer os.RemoveAll(dir)
	aliceKey, _ := bokbok.GenerateKey()
	bobKey, _ := bokbok.GenerateKey()
	keys := map[string]bokbok.Key{"alice": aliceKey, "bob": bobKey}

	// The hub: a secure bokbok server that keeps the pipelines' logs.
	hub, err := pipes.NewHub(pipes.HubConfig{
		Dir: filepath.Join(dir, "hub"),
		UserKeys: func(user string) []bokbok.Key {
			if k, ok := keys[user]; ok {
				return []bokbok.Key{k}
			}
			return nil
		},
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer hub.Close()
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	go hub.Serve(ln)

	// Two nodes, each with its own directory.
	got := make(chan string, 2)
	for _, user := range []string{"alice", "bob"} {
		node, err := pipes.OpenNode(pipes.NodeConfig{Dir: filepath.Join(dir, user), Hub: ln.Addr().String(), User: user, Key: keys[user]})
		if err != nil {
			fmt.Println(err)
			return
		}
		defer node.Close()
		chat, err := node.Pipeline("CHAT", &pipes.PipelineOptions{Persistent: true})
		if err != nil {
			fmt.Println(err)
			return
		}
		chat.Listen(func(p pipes.Packet) {
			got <- fmt.Sprintf("%s got #%d from %s (own: %v): %s", user, p.Seq, p.Sender, p.Own, p.Data)
		})
		if user == "alice" {
			// Put returns once the packet is on alice's disk; the node
			// sends it when connected.
			if _, err := chat.Put(context.Background(), []byte("hello")); err != nil {
				fmt.Println(err)
				return
			}
		}
	}
	lines := map[string]bool{}
	for range 2 {
		select {
		case l := <-got:
			lines[l] = true
		case <-time.After(30 * time.Second):
			fmt.Println("timed out")
			return
		}
	}
	fmt.Println(lines["alice got #1 from alice (own: true): hello"])
	fmt.Println(lines["bob got #1 from alice (own: false): hello"])
	// Output:
	// true
	// true
}

// A node opened while the hub is unreachable still takes packets on a
// persistent pipeline: they wait in its outbox, on disk, for the next
// connection (and for the next run of the program, if it stops first).
func ExamplePipeline_Put_offline() {
	dir, _ := os.MkdirTemp("", "pipes-example")
	defer os.RemoveAll(dir)
	key, _ := bokbok.GenerateKey()
	node, err := pipes.OpenNode(pipes.NodeConfig{Dir: dir, Hub: "127.0.0.1:1", User: "alice", Key: key})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer node.Close()
	chat, _ := node.Pipeline("CHAT", &pipes.PipelineOptions{Persistent: true})
	for _, text := range []string{"first", "second"} {
		if _, err := chat.Put(context.Background(), []byte(text)); err != nil {
			fmt.Println(err)
			return
		}
	}
	packets, bytes := node.Outbox()
	fmt.Println(packets, "packets,", bytes, "bytes waiting")
	// Output: 2 packets, 11 bytes waiting
}

// Gaps: a node that comes back after the hub's retention dropped packets
// it never read is told which, before it gets the rest.
func ExamplePipelineOptions_onGap() {
	opts := &pipes.PipelineOptions{
		Persistent: true,
		OnGap: func(g pipes.Gap) {
			fmt.Printf("missed %d packets of %s (%d to %d): %s\n", g.Count(), g.Pipeline, g.From, g.To, g.Reason)
		},
	}
	opts.OnGap(pipes.Gap{Pipeline: "CHAT", From: 1, To: 40, Reason: pipes.GapRetention})
	// Output: missed 40 packets of CHAT (1 to 40): retention
}
