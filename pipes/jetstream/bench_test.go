package jetstream

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bokbok-go/bokbok/pipes"
)

// BenchmarkCatchUp reads a pipeline of 100,000 packets of 100 bytes from
// the start, as a hub serves a node catching up: Read pages of 256
// packets, one batch direct get each.
func BenchmarkCatchUp(b *testing.B) {
	c := startCluster(b, 3)
	w, r := c.openLog(0), c.openLog(1)
	ctx := context.Background()
	const name, total = "catchup", 100_000
	if _, err := w.Create(ctx, pipes.PipelineSpec{Name: name, Persistent: true}); err != nil {
		b.Fatal(err)
	}
	data := make([]byte, 100)
	for n := uint64(1); n <= total; n += 250 {
		es := make([]pipes.Entry, 250)
		for i := range es {
			es[i] = pipes.Entry{N: n + uint64(i), Data: data}
		}
		if _, err := w.Append(ctx, name, sender("bench", 1), es); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	for b.Loop() {
		var after uint64
		reads := 0
		for after < total {
			res, err := r.Read(ctx, name, after, pipes.DefaultMaxBatch, pipes.DefaultMaxReadBytes)
			if err != nil {
				b.Fatal(err)
			}
			if len(res.Records) == 0 {
				b.Fatalf("nothing after %d", after)
			}
			after = res.Records[len(res.Records)-1].Seq
			reads++
		}
		b.ReportMetric(float64(reads), "reads/op")
	}
	b.ReportMetric(float64(total*b.N)/b.Elapsed().Seconds(), "packets/s")
}

// BenchmarkPersistentFanout is pipes' benchmark of the same name on a
// shared log: 3 JetStream servers, 2 hubs; 16 goroutines of one node on
// hub 0 put b.N packets of 1 KiB, and the listening nodes, spread over
// both hubs, each receive them all.
func BenchmarkPersistentFanout(b *testing.B) {
	for _, listeners := range []int{1, 10} {
		b.Run(fmt.Sprint("listeners=", listeners), func(b *testing.B) {
			benchFanout(b, listeners)
		})
	}
}

func benchFanout(b *testing.B, listeners int) {
	c := startCluster(b, 3)
	users := []string{"sender"}
	for i := range listeners {
		users = append(users, fmt.Sprint("l", i))
	}
	keys := newKeys(b, users...)
	hubs := []*testHub{startHub(b, keys, c.openLog(0), "hub0"), startHub(b, keys, c.openLog(1), "hub1")}
	ctx := context.Background()
	var got atomic.Int64
	done := make(chan struct{})
	var once sync.Once
	target := int64(b.N * listeners)
	for i, u := range users[1:] {
		n := openNode(b, keys, u, hubs[i%2].addr)
		p, err := n.Pipeline("B", &pipes.PipelineOptions{Persistent: true})
		if err != nil {
			b.Fatal(err)
		}
		p.Listen(func(pipes.Packet) {
			if got.Add(1) == target {
				once.Do(func() { close(done) })
			}
		})
	}
	sender := openNode(b, keys, "sender", hubs[0].addr)
	p, err := sender.Pipeline("B", &pipes.PipelineOptions{Persistent: true})
	if err != nil {
		b.Fatal(err)
	}
	data := make([]byte, 1024)
	b.ReportAllocs()
	b.SetBytes(int64(len(data)))
	b.ResetTimer()
	var next atomic.Int64
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			for next.Add(1) <= int64(b.N) {
				if _, err := p.Put(ctx, data); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	select {
	case <-done:
	case <-time.After(5 * time.Minute):
		b.Fatalf("delivered %d of %d", got.Load(), target)
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "packets/s")
}
