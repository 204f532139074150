package main

import (
	"context"
	"runtime"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// processCPU returns the user and system CPU time this process has used,
// which other work on a shared machine disturbs less than wall time.
func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkEcho makes the 64 B echo through the harness's client of each
// bokbok system, sequentially and from parallel callers, so the mux
// systems can be compared with plain bokbok with -benchmem and -cpuprofile
// (both ends of the connection are in this process, so allocs/op and
// cpu-ns/op, the process's CPU time per call, count client and server):
//
//	go test -run XXX -bench Echo -benchmem -count 5
func BenchmarkEcho(b *testing.B) {
	all, err := allSystems()
	if err != nil {
		b.Fatal(err)
	}
	for _, sys := range all {
		switch sys.(type) {
		case *bokbokSystem, *bokbokMsgpSystem, *bokbokMuxSystem:
		default:
			continue
		}
		for _, par := range []bool{false, true} {
			mode := "seq"
			if par {
				mode = "par"
			}
			b.Run(sys.name()+"/"+mode, func(b *testing.B) {
				ctx := context.Background()
				addr, stop, err := sys.start()
				if err != nil {
					b.Fatal(err)
				}
				defer stop()
				c, err := sys.dial(ctx, addr)
				if err != nil {
					b.Fatal(err)
				}
				defer c.close()
				if err := newCaller(c, 0, smallSize).echo(ctx); err != nil {
					b.Fatal(err)
				}
				b.ReportAllocs()
				cpu0 := processCPU(b)
				defer func() {
					b.ReportMetric(float64(processCPU(b)-cpu0)/float64(b.N), "cpu-ns/op")
				}()
				b.ResetTimer()
				if !par {
					cl := newCaller(c, 0, smallSize)
					for i := 0; i < b.N; i++ {
						if err := cl.echo(ctx); err != nil {
							b.Fatal(err)
						}
					}
					return
				}
				// About manyCalls callers, as in scenario (b).
				b.SetParallelism(max(1, manyCalls/runtime.GOMAXPROCS(0)))
				var id atomic.Int64
				b.RunParallel(func(pb *testing.PB) {
					cl := newCaller(c, int(id.Add(1)), smallSize)
					for pb.Next() {
						if err := cl.echo(ctx); err != nil {
							b.Error(err)
							return
						}
					}
				})
			})
		}
	}
}
