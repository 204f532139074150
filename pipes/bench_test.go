package pipes

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// BenchmarkPersistentFanout puts b.N packets of 1 KiB on a persistent
// pipeline from 16 goroutines of one node, and waits until each of 10
// listening nodes has them all: packets/s put to delivered. No fsync,
// so that it measures the code rather than the disk (bench/pipes measures
// both, against NATS JetStream).
func BenchmarkPersistentFanout(b *testing.B) {
	for _, listeners := range []int{1, 10} {
		b.Run(fmt.Sprint("listeners=", listeners), func(b *testing.B) {
			benchFanout(b, listeners)
		})
	}
}

func benchFanout(b *testing.B, listeners int) {
	users := []string{"sender"}
	for i := range listeners {
		users = append(users, fmt.Sprint("l", i))
	}
	keys := newTestKeys(users...)
	hub := startHub(b, HubConfig{UserKeys: keys.UserKeys, NoSync: true})
	ctx := context.Background()
	var wg sync.WaitGroup
	var got atomic.Int64
	done := make(chan struct{})
	var once sync.Once
	target := int64(b.N * listeners)
	for _, u := range users[1:] {
		n := openNode(b, keys, u, hub.addr, "", func(c *NodeConfig) { c.NoSync = true })
		p, err := n.Pipeline("B", &PipelineOptions{Persistent: true})
		if err != nil {
			b.Fatal(err)
		}
		p.Listen(func(Packet) {
			if got.Add(1) == target {
				once.Do(func() { close(done) })
			}
		})
	}
	sender := openNode(b, keys, "sender", hub.addr, "", func(c *NodeConfig) { c.NoSync = true })
	p, err := sender.Pipeline("B", &PipelineOptions{Persistent: true})
	if err != nil {
		b.Fatal(err)
	}
	data := make([]byte, 1024)
	b.ReportAllocs()
	b.SetBytes(int64(len(data)))
	b.ResetTimer()
	var next atomic.Int64
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
