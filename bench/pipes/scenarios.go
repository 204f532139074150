package main

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"
)

// options are the settings every scenario reads.
type options struct {
	n             int           // packets of the throughput scenario
	catchup       int           // packets of the catch-up scenario
	rate          int           // packets per second of the latency scenario
	latDuration   time.Duration // how long the latency scenario puts
	size          int           // bytes per packet
	listeners     int           // listener nodes / consumers
	putGoroutines int           // bokbok: goroutines calling Put in putAll
	jsWindow      int           // jetstream: publishes awaiting their ack at most
	jsAck         string        // jetstream: "all" or "explicit"
	jsAckEvery    int           // jetstream with "all": ack every this many messages
	timeout       time.Duration // bound on each scenario
}

// A figDef is one figure a scenario reports.
type figDef struct {
	name   string
	unit   string
	higher bool // a higher value is better
	only   string
}

// A scenario measures one system in one mode.
type scenario struct {
	id      string
	title   string
	figures []figDef
	run     func(ctx context.Context, sys system, m mode, o *options) (map[string]float64, error)
}

const (
	figDelivered = "put-to-delivered"
	figAcked     = "publish, server-acked"
	figPut       = "Put returned (in outbox, on disk)"
	figP50       = "put-to-delivered p50"
	figP99       = "put-to-delivered p99"
	figCatchup   = "catch-up of 1 listener"
)

var allScenarios = []scenario{
	{"throughput", "N packets as fast as the sender can, until all listeners have all", []figDef{
		{figDelivered, "pkts/s", true, ""},
		{figAcked, "pkts/s", true, ""},
		{figPut, "pkts/s", true, "bokbok-pipes"},
	}, throughput},
	{"latency", "a fixed rate while all listeners are online", []figDef{
		{figP50, "ms", false, ""},
		{figP99, "ms", false, ""},
	}, latency},
	{"catchup", "packets put while one listener is offline, then it reconnects", []figDef{
		{figCatchup, "pkts/s", true, ""},
	}, catchup},
}

// setup starts a cluster whose listeners expect n packets (after the
// warm-up packet), and gets the warm-up packet to every listener.
func setup(ctx context.Context, sys system, m mode, o *options, n int, lat bool) (cluster, []*checker, error) {
	cs := make([]*checker, o.listeners)
	for i := range cs {
		cs[i] = newChecker(fmt.Sprintf("%d", i), n, o.size, lat)
	}
	c, err := sys.start(ctx, m, o, cs)
	if err != nil {
		return nil, nil, err
	}
	c.putAsync(ctx, 0)
	err = c.waitPuts(ctx)
	if err == nil {
		err = c.flush(ctx)
	}
	if err == nil {
		err = waitAll(ctx, cs, "the warm-up packet", warmOf)
	}
	if err != nil {
		return nil, nil, errors.Join(fmt.Errorf("warm-up: %w", err), c.close())
	}
	return c, cs, nil
}

// closing closes c when a scenario ends, adding its error to *err.
func closing(c cluster, err *error) {
	if cerr := c.close(); cerr != nil {
		*err = errors.Join(*err, fmt.Errorf("close: %w", cerr))
	}
}

func rate(n int, d time.Duration) float64 { return float64(n) / d.Seconds() }

func throughput(ctx context.Context, sys system, m mode, o *options) (_ map[string]float64, err error) {
	c, cs, err := setup(ctx, sys, m, o, o.n, false)
	if err != nil {
		return nil, err
	}
	defer closing(c, &err)
	t0 := time.Since(base)
	if err := c.putAll(ctx, o.n); err != nil {
		return nil, err
	}
	tPut := time.Since(base)
	if err := c.flush(ctx); err != nil {
		return nil, err
	}
	tAck := time.Since(base)
	if err := waitAll(ctx, cs, "every packet", doneOf); err != nil {
		return nil, err
	}
	var last time.Duration
	for _, ch := range cs {
		last = max(last, ch.doneAt)
	}
	res := map[string]float64{
		figDelivered: rate(o.n, last-t0),
		figAcked:     rate(o.n, tAck-t0),
	}
	if sys.name == "bokbok-pipes" {
		res[figPut] = rate(o.n, tPut-t0)
	}
	return res, nil
}

func latency(ctx context.Context, sys system, m mode, o *options) (_ map[string]float64, err error) {
	n := max(1, int(float64(o.rate)*o.latDuration.Seconds()))
	c, cs, err := setup(ctx, sys, m, o, n, true)
	if err != nil {
		return nil, err
	}
	defer closing(c, &err)
	interval := time.Second / time.Duration(o.rate)
	start := time.Now()
	for i := 1; i <= n; i++ {
		if d := time.Until(start.Add(time.Duration(i-1) * interval)); d > 0 {
			time.Sleep(d)
		}
		c.putAsync(ctx, uint64(i))
	}
	if err := c.waitPuts(ctx); err != nil {
		return nil, err
	}
	if err := c.flush(ctx); err != nil {
		return nil, err
	}
	if err := waitAll(ctx, cs, "every packet", doneOf); err != nil {
		return nil, err
	}
	var all []time.Duration
	for _, ch := range cs {
		all = append(all, ch.lat...)
	}
	slices.Sort(all)
	ms := func(q float64) float64 {
		return float64(all[min(len(all)-1, int(q*float64(len(all))))]) / float64(time.Millisecond)
	}
	return map[string]float64{figP50: ms(0.50), figP99: ms(0.99)}, nil
}

func catchup(ctx context.Context, sys system, m mode, o *options) (_ map[string]float64, err error) {
	c, cs, err := setup(ctx, sys, m, o, o.catchup, false)
	if err != nil {
		return nil, err
	}
	defer closing(c, &err)
	off := len(cs) - 1
	if err := c.stopListener(ctx, off); err != nil {
		return nil, fmt.Errorf("taking listener %d offline: %w", off, err)
	}
	if err := c.putAll(ctx, o.catchup); err != nil {
		return nil, err
	}
	if err := c.flush(ctx); err != nil {
		return nil, err
	}
	if err := waitAll(ctx, cs[:off], "every packet", doneOf); err != nil {
		return nil, err
	}
	t0 := time.Since(base)
	if err := c.startListener(ctx, off); err != nil {
		return nil, fmt.Errorf("bringing listener %d back: %w", off, err)
	}
	if err := cs[off].wait(ctx, cs[off].done, "every packet"); err != nil {
		return nil, err
	}
	return map[string]float64{figCatchup: rate(o.catchup, cs[off].doneAt-t0)}, nil
}
