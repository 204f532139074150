package pipes

import (
	"context"
	"testing"
	"time"

	"github.com/bokbok-go/bokbok"
	"github.com/bokbok-go/bokbok/internal/msgpackcheck"
	"github.com/vmihailenco/msgpack/v5"
)

// fuzzSetup makes one hub (small limits, no fsync) and one node whose
// pipeline decodes replies, shared by every input, closed at the end.
func fuzzSetup(f *testing.F) (*Hub, *Node, *Pipeline) {
	dir := f.TempDir()
	hub, err := NewHub(HubConfig{Dir: dir + "/hub", NoSync: true, UserKeys: func(string) []bokbok.Key { return nil },
		MaxPipelines: 8, MaxBatch: 8, MaxPacketSize: 512, MaxReadBytes: 2048, MaxWait: time.Millisecond,
		TransientMemory: 8192, Retention: Retention{MaxPackets: 64}})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { hub.Close() })
	key, _ := bokbok.GenerateKey()
	node, err := OpenNode(NodeConfig{Dir: dir + "/node", Hub: "127.0.0.1:1", User: "fuzz", Key: key, NoSync: true})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { node.Close() })
	p, err := node.Pipeline("P", &PipelineOptions{Persistent: true})
	if err != nil {
		f.Fatal(err)
	}
	return hub, node, p
}

// FuzzHubRequests feeds the hub's request decoders and handlers, and the
// node's reply decoding, with arbitrary bodies: the first byte picks the
// message, the rest is its MessagePack body, checked as bokbok checks
// every message before decoding. Nothing may panic, and replies keep
// their promises.
func FuzzHubRequests(f *testing.F) {
	enc := func(kind byte, v any) []byte {
		b, err := msgpack.Marshal(v)
		if err != nil {
			f.Fatal(err)
		}
		return append([]byte{kind}, b...)
	}
	node := make([]byte, 16)
	f.Add(enc(0, openRequest{Name: "P", Persistent: true, Create: true}))
	f.Add(enc(0, openRequest{Name: "T", Create: true}))
	f.Add(enc(1, putRequest{Pipeline: "P", Node: node, Packets: []wirePacket{{N: 1, Data: []byte("a")}, {N: 2}}}))
	f.Add(enc(1, putRequest{Pipeline: "T", Node: node, Packets: []wirePacket{{N: 7, Data: make([]byte, 600)}}}))
	f.Add(enc(2, readRequest{Pipeline: "P", After: 0, Max: 3, WaitMillis: 5}))
	f.Add(enc(2, readRequest{Pipeline: "T", After: 1 << 62, Max: -1}))
	f.Add(enc(3, readReply{Packets: []storedPacket{{Seq: 1, Node: []byte{1, 2}, Data: []byte("x")}}, Gap: &wireGap{From: 3, To: 1}}))
	f.Add(enc(4, openReply{Name: "P", Persistent: true, Epoch: []byte{1}, Last: 1 << 63, MaxPacket: -5}))
	fuzzHub, fuzzNode, fuzzPipe := fuzzSetup(f)
	f.Add(enc(5, historyRequest{Pipeline: "P", From: 2, To: 1, Since: 1, Until: -1, Max: 3, Newest: true}))
	f.Add(enc(5, historyRequest{Pipeline: "P", Since: 1 << 62}))
	f.Fuzz(func(t *testing.T, in []byte) {
		if len(in) == 0 {
			return
		}
		body := in[1:]
		if _, err := msgpackcheck.Check(body); err != nil {
			return // bokbok refuses it before any handler sees it
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		switch in[0] % 6 {
		case 0:
			var req openRequest
			if msgpack.Unmarshal(body, &req) == nil {
				fuzzHub.serveOpen(ctx, "fuzz", req)
			}
		case 1:
			var req putRequest
			if msgpack.Unmarshal(body, &req) == nil {
				if reply, err := fuzzHub.servePut(ctx, "fuzz", req); err == nil && len(reply.Acks) > len(req.Packets) {
					t.Fatalf("%d acks for %d packets", len(reply.Acks), len(req.Packets))
				}
			}
		case 2:
			var req readRequest
			if msgpack.Unmarshal(body, &req) == nil {
				out, err := fuzzHub.serveRead(ctx, t, nil, "fuzz", req)
				if err != nil {
					return
				}
				var reply readReply // as the node decodes it
				b, err := msgpack.Marshal(out)
				if err != nil {
					t.Fatal(err)
				}
				if err := msgpack.Unmarshal(b, &reply); err != nil {
					t.Fatalf("the reply does not decode: %v", err)
				}
				if len(reply.Packets) > fuzzHub.cfg.MaxBatch {
					t.Fatalf("read returned %d packets, limit %d", len(reply.Packets), fuzzHub.cfg.MaxBatch)
				}
				for i := 1; i < len(reply.Packets); i++ {
					if reply.Packets[i].Seq <= reply.Packets[i-1].Seq {
						t.Fatalf("read out of order")
					}
				}
			}
		case 3:
			var reply readReply
			if msgpack.Unmarshal(body, &reply) == nil {
				for _, sp := range reply.Packets {
					fuzzPipe.packet(sp)
				}
			}
		case 5:
			var req historyRequest
			if msgpack.Unmarshal(body, &req) == nil {
				reply, err := fuzzHub.serveHistory(ctx, "fuzz", req)
				if err == nil {
					if len(reply.Packets) > fuzzHub.cfg.MaxBatch {
						t.Fatalf("history returned %d packets", len(reply.Packets))
					}
					for i := 1; i < len(reply.Packets); i++ {
						if reply.Packets[i].Seq <= reply.Packets[i-1].Seq {
							t.Fatalf("history out of order")
						}
					}
				}
			}
		case 4:
			var reply openReply
			if msgpack.Unmarshal(body, &reply) == nil {
				p := newPipeline(fuzzNode, "F", pipelineKind{Persistent: true})
				p.hubOpened(reply)
			}
		}
	})
}
