package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// options are the settings every scenario reads.
type options struct {
	duration time.Duration // the measured window of a timed scenario
	warmup   time.Duration // before it, not measured
	idle     int           // connections opened by scenario d
	grace    time.Duration // how much longer than planned a scenario may take
}

// metrics maps a column of the table to its value.
type metrics map[string]float64

// The table's columns, in order.
const (
	colMean    = "(a) mean µs"
	colP50     = "(a) p50 µs"
	colP99     = "(a) p99 µs"
	colCalls   = "(b) calls/s"
	colMBps    = "(c) MB/s"
	colMem     = "(d) KiB/conn"
	colHOLp50  = "(e) p50 µs"
	colHOLp99  = "(e) p99 µs"
	colHugeP50 = "(f) p50 µs"
	colHugeP99 = "(f) p99 µs"
	smallSize  = 64
	bigSize    = 1 << 20
	hugeSize   = 2 << 20 // the one large caller's Data in scenario f
	manyCalls  = 64      // callers in scenario b
	bigCallers = 4       // callers in scenarios c and e
)

var columns = []string{colMean, colP50, colP99, colCalls, colMBps, colMem, colHOLp50, colHOLp99, colHugeP50, colHugeP99}

// A scenario measures one system.
type scenario struct {
	id    string // "a" to "f"
	title string
	run   func(ctx context.Context, sys system, o options) (metrics, error)
	// limit is how long the scenario may take before its calls are
	// cancelled and it fails.
	limit func(o options) time.Duration
}

func timedLimit(o options) time.Duration { return o.warmup + o.duration + o.grace }

var allScenarios = []scenario{
	{"a", "sequential latency, 1 caller, 64 B", latency, timedLimit},
	{"b", "64 callers sharing one connection, 64 B", throughput, timedLimit},
	{"c", "4 callers, 1 MiB, one connection", bulk, timedLimit},
	{"d", "memory per idle connection", idleMemory, func(o options) time.Duration {
		return o.grace + time.Duration(o.idle)*20*time.Millisecond
	}},
	{"e", "64 B call under 4 × 1 MiB callers, one connection", headOfLine(bigCallers, bigSize, colHOLp50, colHOLp99), timedLimit},
	{"f", "64 B call under one 2 MiB caller, one connection", headOfLine(1, hugeSize, colHugeP50, colHugeP99), timedLimit},
}

// runScenario runs sc on sys within its time limit. Calls get a context
// cancelled at the limit (not a deadline, so that no system pays for
// sending one); a scenario that still has not returned 10 s later is
// abandoned.
func runScenario(sc scenario, sys system, o options) (metrics, error) {
	limit := sc.limit(o)
	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	timer := time.AfterFunc(limit, func() {
		cancel(fmt.Errorf("scenario time limit of %v exceeded", limit))
	})
	defer timer.Stop()
	type outcome struct {
		m   metrics
		err error
	}
	done := make(chan outcome, 1)
	go func() {
		m, err := sc.run(ctx, sys, o)
		if err != nil && context.Cause(ctx) != nil && !errors.Is(err, context.Cause(ctx)) {
			err = fmt.Errorf("%w (%w)", err, context.Cause(ctx))
		}
		done <- outcome{m, err}
	}()
	select {
	case r := <-done:
		return r.m, r.err
	case <-time.After(limit + 10*time.Second):
		return nil, fmt.Errorf("abandoned: still running %v after its time limit", 10*time.Second)
	}
}

// withClient starts sys's server and one client connection to it, runs
// f, and tears both down.
func withClient(ctx context.Context, sys system, f func(c client) error) error {
	addr, stop, err := sys.start()
	if err != nil {
		return fmt.Errorf("start: %w", err)
	}
	defer stop()
	c, err := sys.dial(ctx, addr)
	if err != nil {
		return fmt.Errorf("dial: %w", err)
	}
	defer c.close()
	return f(c)
}

var errMismatch = errors.New("echo mismatch")

// caller makes echo calls with its own payload and sequence numbers and
// checks every reply byte for byte.
type caller struct {
	c   client
	req Msg
}

func newCaller(c client, id, size int) *caller {
	data := make([]byte, size)
	rand.NewChaCha8([32]byte{byte(id), byte(id >> 8), byte(size)}).Read(data)
	return &caller{c: c, req: Msg{Seq: int64(id) << 40, Data: data}}
}

// echo makes one call with the next Seq (also stamped into the first
// bytes of Data, so a reply meant for another call cannot pass) and
// checks that the reply equals the request.
func (cl *caller) echo(ctx context.Context) error {
	cl.req.Seq++
	if len(cl.req.Data) >= 8 {
		binary.BigEndian.PutUint64(cl.req.Data, uint64(cl.req.Seq))
	}
	resp, err := cl.c.call(ctx, &cl.req)
	if err != nil {
		return fmt.Errorf("call seq %d: %w", cl.req.Seq, err)
	}
	if resp.Seq != cl.req.Seq {
		return fmt.Errorf("%w: sent seq %d, got %d", errMismatch, cl.req.Seq, resp.Seq)
	}
	if !bytes.Equal(resp.Data, cl.req.Data) {
		return fmt.Errorf("%w: seq %d: sent %d bytes of data, got %d bytes that differ", errMismatch, cl.req.Seq, len(cl.req.Data), len(resp.Data))
	}
	return nil
}

// window tells workers which phase a load is in.
type window struct{ phase atomic.Int32 } // 0 warm-up, 1 measured, 2 over

func (w *window) running() bool   { return w.phase.Load() < 2 }
func (w *window) measuring() bool { return w.phase.Load() == 1 }

// load runs each worker on its own goroutine through o.warmup of warm-up
// and o.duration measured, then waits for them all. A worker loops while
// w.running() and counts only calls that finish while w.measuring(). The
// first error stops every worker and is returned. load returns the length
// of the measured window.
func load(ctx context.Context, o options, workers ...func(context.Context, *window) error) (time.Duration, error) {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var w window
	var wg sync.WaitGroup
	for _, f := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := f(ctx, &w); err != nil {
				cancel(err)
			}
		}()
	}
	sleep := func(d time.Duration) bool {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-t.C:
			return true
		case <-ctx.Done():
			return false
		}
	}
	var elapsed time.Duration
	if sleep(o.warmup) {
		start := time.Now()
		w.phase.Store(1)
		if sleep(o.duration) {
			elapsed = time.Since(start)
		}
	}
	w.phase.Store(2)
	wg.Wait()
	if err := context.Cause(ctx); err != nil {
		return 0, err
	}
	return elapsed, nil
}

// latencyWorker calls in a loop and appends each measured call's latency
// to *lats.
func latencyWorker(c client, id, size int, lats *[]time.Duration) func(context.Context, *window) error {
	cl := newCaller(c, id, size)
	return func(ctx context.Context, w *window) error {
		for w.running() {
			t := time.Now()
			if err := cl.echo(ctx); err != nil {
				return err
			}
			if w.measuring() {
				*lats = append(*lats, time.Since(t))
			}
		}
		return nil
	}
}

// countingWorker calls in a loop and adds each measured call to *n.
func countingWorker(c client, id, size int, n *atomic.Int64) func(context.Context, *window) error {
	cl := newCaller(c, id, size)
	return func(ctx context.Context, w *window) error {
		for w.running() {
			if err := cl.echo(ctx); err != nil {
				return err
			}
			if w.measuring() {
				n.Add(1)
			}
		}
		return nil
	}
}

// micros returns the mean, p50 and p99 of lats in microseconds.
func micros(lats []time.Duration) (mean, p50, p99 float64, err error) {
	if len(lats) == 0 {
		return 0, 0, 0, errors.New("no call completed in the measured window")
	}
	slices.Sort(lats)
	var sum time.Duration
	for _, d := range lats {
		sum += d
	}
	q := func(p float64) float64 {
		i := min(max(int(math.Ceil(p*float64(len(lats))))-1, 0), len(lats)-1)
		return float64(lats[i]) / 1e3
	}
	return float64(sum) / float64(len(lats)) / 1e3, q(0.50), q(0.99), nil
}

// (a) One caller, one call at a time.
func latency(ctx context.Context, sys system, o options) (metrics, error) {
	var lats []time.Duration
	err := withClient(ctx, sys, func(c client) error {
		_, err := load(ctx, o, latencyWorker(c, 0, smallSize, &lats))
		return err
	})
	if err != nil {
		return nil, err
	}
	mean, p50, p99, err := micros(lats)
	return metrics{colMean: mean, colP50: p50, colP99: p99}, err
}

// (b) Many callers sharing one connection.
func throughput(ctx context.Context, sys system, o options) (metrics, error) {
	var n atomic.Int64
	var elapsed time.Duration
	err := withClient(ctx, sys, func(c client) error {
		workers := make([]func(context.Context, *window) error, manyCalls)
		for i := range workers {
			workers[i] = countingWorker(c, i, smallSize, &n)
		}
		var err error
		elapsed, err = load(ctx, o, workers...)
		return err
	})
	if err != nil {
		return nil, err
	}
	return metrics{colCalls: float64(n.Load()) / elapsed.Seconds()}, nil
}

// (c) Large messages. MB/s counts the payload (Data) both ways: each
// call moves 2 × 1 MiB; MB is 10^6 bytes.
func bulk(ctx context.Context, sys system, o options) (metrics, error) {
	var n atomic.Int64
	var elapsed time.Duration
	err := retryLonger(o, func(o options) error {
		n.Store(0)
		return withClient(ctx, sys, func(c client) error {
			workers := make([]func(context.Context, *window) error, bigCallers)
			for i := range workers {
				workers[i] = countingWorker(c, i, bigSize, &n)
			}
			var err error
			elapsed, err = load(ctx, o, workers...)
			return err
		})
	}, func() bool { return n.Load() > 0 })
	if err != nil {
		return nil, err
	}
	return metrics{colMBps: float64(n.Load()) * 2 * bigSize / elapsed.Seconds() / 1e6}, nil
}

// retryLonger runs measure over the options' window and, while moved
// reports that no large call completed in it (a short window on a loaded
// machine), again over a window twice as long, three times at most.
func retryLonger(o options, measure func(options) error, moved func() bool) error {
	for try := 1; ; try++ {
		if err := measure(o); err != nil || moved() || try == 3 {
			return err
		}
		o.duration *= 2
	}
}

// (e) and (f) Head-of-line blocking: a small caller's latency while
// large calls share its connection. headOfLine returns the scenario in
// which callers goroutines make calls of size bytes back to back beside
// the small caller; the small calls' p50 and p99 go to colP50 and colP99.
//
// The small calls' latencies mean something only while large calls move:
// a window in which none completed is measured again (see retryLonger).
func headOfLine(callers, size int, colP50, colP99 string) func(context.Context, system, options) (metrics, error) {
	return func(ctx context.Context, sys system, o options) (metrics, error) {
		var lats []time.Duration
		var big atomic.Int64
		err := retryLonger(o, func(o options) error {
			lats = nil
			return withClient(ctx, sys, func(c client) error {
				workers := []func(context.Context, *window) error{latencyWorker(c, 0, smallSize, &lats)}
				for i := 1; i <= callers; i++ {
					workers = append(workers, countingWorker(c, i, size, &big))
				}
				_, err := load(ctx, o, workers...)
				return err
			})
		}, func() bool { return big.Load() > 0 })
		if err != nil {
			return nil, err
		}
		if big.Load() == 0 {
			return nil, errors.New("no large call completed in the measured window")
		}
		_, p50, p99, err := micros(lats)
		return metrics{colP50: p50, colP99: p99}, err
	}
}

// (d) Memory per idle connection: live heap and goroutine stacks, client
// and server ends both in this process, before and after opening o.idle
// connections that have each made one call. Kernel socket buffers are not
// counted.
func idleMemory(ctx context.Context, sys system, o options) (metrics, error) {
	addr, stop, err := sys.start()
	if err != nil {
		return nil, fmt.Errorf("start: %w", err)
	}
	defer stop()
	clients := make([]client, o.idle)
	defer parallel(len(clients), func(i int) error {
		if clients[i] != nil {
			clients[i].close()
		}
		return nil
	})
	before := liveBytes()
	err = parallel(len(clients), func(i int) error {
		c, err := sys.dial(ctx, addr)
		if err != nil {
			return fmt.Errorf("dial %d: %w", i, err)
		}
		clients[i] = c
		return newCaller(c, i, smallSize).echo(ctx)
	})
	if err != nil {
		return nil, err
	}
	time.Sleep(100 * time.Millisecond) // let the server side settle after the calls
	after := liveBytes()
	return metrics{colMem: (float64(after) - float64(before)) / float64(o.idle) / 1024}, nil
}

// liveBytes is HeapInuse + StackInuse after a full collection.
func liveBytes() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse + ms.StackInuse
}

// parallel runs f(0) … f(n-1) on 8 goroutines and returns the first error.
func parallel(n int, f func(i int) error) error {
	var next atomic.Int64
	var once sync.Once
	var first error
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				if err := f(i); err != nil {
					once.Do(func() { first = err })
					next.Store(int64(n)) // stop handing out work
				}
			}
		}()
	}
	wg.Wait()
	return first
}
