package main

import (
	"context"
	"encoding/binary"
	"fmt"
	"sync"
	"time"
)

// base is the clock every payload's timestamp counts from (monotonic, in
// this process).
var base = time.Now()

// payload returns a packet of size bytes (at least 16): id, then the
// nanoseconds since base when it was put, then filler.
func payload(buf []byte, id uint64) []byte {
	binary.BigEndian.PutUint64(buf[0:8], id)
	binary.BigEndian.PutUint64(buf[8:16], uint64(time.Since(base)))
	return buf
}

// checker is one listener's record of what it was given. Every listener
// of a scenario expects the warm-up packet (id 0) first, then ids 1..n
// each exactly once, with the system's sequence numbers strictly
// consecutive: anything else fails the run.
type checker struct {
	name       string
	n          int
	size       int
	recordLat  bool
	warm, done chan struct{}
	failed     chan struct{}

	mu      sync.Mutex
	lastSeq uint64
	warmed  bool
	seen    []bool
	count   int
	doneAt  time.Duration // since base, when the last id arrived
	err     error
	lat     []time.Duration
}

func newChecker(name string, n, size int, recordLat bool) *checker {
	c := &checker{name: name, n: n, size: size, recordLat: recordLat, warm: make(chan struct{}), done: make(chan struct{}), failed: make(chan struct{}), seen: make([]bool, n+1)}
	if recordLat {
		c.lat = make([]time.Duration, 0, n)
	}
	return c
}

// got records a packet with the system's sequence number seq.
func (c *checker) got(seq uint64, data []byte) {
	now := time.Since(base)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.err != nil {
		return
	}
	if seq != c.lastSeq+1 {
		c.failLocked(fmt.Errorf("sequence %d after %d", seq, c.lastSeq))
		return
	}
	c.lastSeq = seq
	if len(data) != c.size {
		c.failLocked(fmt.Errorf("sequence %d: %d bytes, want %d", seq, len(data), c.size))
		return
	}
	id := binary.BigEndian.Uint64(data[0:8])
	switch {
	case id == 0 && c.warmed:
		c.failLocked(fmt.Errorf("sequence %d: the warm-up packet again", seq))
	case id == 0:
		c.warmed = true
		close(c.warm)
	case !c.warmed:
		c.failLocked(fmt.Errorf("sequence %d: packet %d before the warm-up packet", seq, id))
	case id > uint64(c.n):
		c.failLocked(fmt.Errorf("sequence %d: packet %d out of range 1..%d", seq, id, c.n))
	case c.seen[id]:
		c.failLocked(fmt.Errorf("sequence %d: packet %d again", seq, id))
	default:
		c.seen[id] = true
		c.count++
		if c.recordLat {
			c.lat = append(c.lat, now-time.Duration(binary.BigEndian.Uint64(data[8:16])))
		}
		if c.count == c.n {
			c.doneAt = now
			close(c.done)
		}
	}
}

// fail records an error reported by the system's client (a refused
// pipeline, a consumer error).
func (c *checker) fail(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.failLocked(err)
}

func (c *checker) failLocked(err error) {
	if c.err == nil {
		c.err = fmt.Errorf("listener %s: %w", c.name, err)
		close(c.failed)
	}
}

func (c *checker) state() (count int, lastSeq uint64, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.count, c.lastSeq, c.err
}

// wait waits for ch (c.warm or c.done), failing early if the listener
// saw something wrong.
func (c *checker) wait(ctx context.Context, ch chan struct{}, what string) error {
	select {
	case <-ch:
		return nil
	case <-c.failed:
		_, _, err := c.state()
		return err
	case <-ctx.Done():
		count, last, _ := c.state()
		return fmt.Errorf("listener %s: waiting for %s: %w (it has %d of %d packets, last sequence %d)", c.name, what, ctx.Err(), count, c.n, last)
	}
}

// waitAll waits for ch of every checker, ch chosen by pick.
func waitAll(ctx context.Context, cs []*checker, what string, pick func(*checker) chan struct{}) error {
	for _, c := range cs {
		if err := c.wait(ctx, pick(c), what); err != nil {
			return err
		}
	}
	return nil
}

func warmOf(c *checker) chan struct{} { return c.warm }
func doneOf(c *checker) chan struct{} { return c.done }
