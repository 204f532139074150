// Command pipes compares bokbok's persistent pipelines (package pipes)
// with NATS JetStream, both on 127.0.0.1 and in this one process:
//
//	bokbok-pipes  a pipes hub with its log in a temporary directory, one
//	              sender node and 10 listener nodes (each with its own
//	              directory) on one persistent pipeline
//	jetstream     an embedded nats-server with JetStream, its store in a
//	              temporary directory, a file-backed stream, one publishing
//	              connection and 10 durable pull consumers, one
//	              connection each
//
// Both run in two modes: "fsync", where bokbok fsyncs (its default) and
// the NATS server runs with SyncAlways, and "no-fsync", where bokbok's hub
// and nodes run with NoSync and the NATS server with its default sync
// interval. Scenarios, with 1 KiB packets:
//
//	throughput  -n packets as fast as the sender can, until every listener
//	            has every one
//	latency     -rate packets/s for -latency-duration while all listeners
//	            are online; put-to-delivered latency over all listeners
//	catchup     -catchup packets put while one listener is offline, then
//	            the time it takes to receive them all once back
//
// Every listener checks that it got every packet exactly once, with the
// system's sequence numbers consecutive; any other outcome fails the run.
//
//	go run ./pipes                 # full run (a few minutes)
//	go run ./pipes -md             # the same, as Markdown for BENCHMARKS.md
//	go run ./pipes -modes no-fsync -scenarios latency
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime/pprof"
	"strings"
	"time"
)

// config is a parsed command line.
type config struct {
	options
	md         bool
	cpuprofile string
	args       []string
	systems    []system
	modes      []mode
	scenarios  []scenario
}

func parseFlags(args []string, stderr io.Writer) (*config, error) {
	fs := flag.NewFlagSet("pipes", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfg := &config{args: args}
	fs.IntVar(&cfg.n, "n", 20000, "packets of the throughput scenario")
	fs.IntVar(&cfg.catchup, "catchup", 100000, "packets put while a listener is offline, in the catch-up scenario")
	fs.IntVar(&cfg.rate, "rate", 500, "packets per second in the latency scenario")
	fs.DurationVar(&cfg.latDuration, "latency-duration", 5*time.Second, "how long the latency scenario puts packets")
	fs.IntVar(&cfg.size, "size", 1024, "bytes per packet (at least 16)")
	fs.IntVar(&cfg.listeners, "listeners", 10, "listener nodes (JetStream: durable consumers)")
	fs.IntVar(&cfg.putGoroutines, "put-goroutines", 16, "bokbok: goroutines calling Put concurrently (Put is group-committed)")
	fs.IntVar(&cfg.jsWindow, "js-window", 1024, "JetStream: async publishes awaiting their ack at most")
	fs.StringVar(&cfg.jsAck, "js-ack", "all", `JetStream consumers' ack policy: "all" (AckAll, an ack every -js-ack-every messages) or "explicit" (AckExplicit, an ack per message)`)
	fs.IntVar(&cfg.jsAckEvery, "js-ack-every", 100, `JetStream with -js-ack all: ack every this many messages (below the consumer's MaxAckPending, 1000)`)
	fs.DurationVar(&cfg.timeout, "timeout", 5*time.Minute, "bound on each scenario of each system")
	systems := fs.String("systems", "", "comma-separated systems to run (default all)")
	modes := fs.String("modes", "", "comma-separated modes to run, from fsync,no-fsync (default both)")
	scenarios := fs.String("scenarios", "", "comma-separated scenarios to run, from throughput,latency,catchup (default all)")
	fs.BoolVar(&cfg.md, "md", false, "print the results as Markdown for BENCHMARKS.md")
	fs.StringVar(&cfg.cpuprofile, "cpuprofile", "", "write a CPU profile of the whole run to this file")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	o := &cfg.options
	switch {
	case o.n < 1, o.catchup < 1, o.rate < 1, o.latDuration <= 0, o.listeners < 1, o.putGoroutines < 1, o.jsWindow < 1, o.jsAckEvery < 1, o.timeout <= 0:
		return nil, fmt.Errorf("want -n, -catchup, -rate, -listeners, -put-goroutines, -js-window, -js-ack-every >= 1 and -latency-duration, -timeout > 0")
	case o.size < 16:
		return nil, fmt.Errorf("-size %d: want at least 16 (id and timestamp)", o.size)
	case o.jsAck != "all" && o.jsAck != "explicit":
		return nil, fmt.Errorf(`-js-ack %q: want "all" or "explicit"`, o.jsAck)
	}
	var err error
	if cfg.systems, err = pick(allSystems, *systems, func(s system) string { return s.name }); err != nil {
		return nil, fmt.Errorf("-systems: %w", err)
	}
	if cfg.modes, err = pick(allModes, *modes, func(m mode) string { return m.name }); err != nil {
		return nil, fmt.Errorf("-modes: %w", err)
	}
	if cfg.scenarios, err = pick(allScenarios, *scenarios, func(s scenario) string { return s.id }); err != nil {
		return nil, fmt.Errorf("-scenarios: %w", err)
	}
	return cfg, nil
}

// pick returns the items named in the comma-separated list (all if it is
// empty), in their original order.
func pick[T any](items []T, list string, name func(T) string) ([]T, error) {
	if list == "" {
		return items, nil
	}
	want := map[string]bool{}
	for _, w := range strings.Split(list, ",") {
		want[w] = true
	}
	var out, names []string
	var picked []T
	for _, it := range items {
		names = append(names, name(it))
		if want[name(it)] {
			picked = append(picked, it)
			out = append(out, name(it))
			delete(want, name(it))
		}
	}
	for w := range want {
		return nil, fmt.Errorf("unknown %q (want some of %s)", w, strings.Join(names, ","))
	}
	return picked, nil
}

// runAll runs every scenario in every mode on every system, reporting
// progress. The systems take turns within each scenario, so slow drift of
// a noisy machine spreads over both.
func runAll(cfg *config, progress io.Writer) *results {
	res := newResults(cfg)
	for _, m := range cfg.modes {
		for _, sc := range cfg.scenarios {
			for _, sys := range cfg.systems {
				ctx, cancel := context.WithTimeout(context.Background(), cfg.timeout)
				start := time.Now()
				figs, err := sc.run(ctx, sys, m, &cfg.options)
				cancel()
				took := time.Since(start).Round(time.Millisecond)
				if err != nil {
					fmt.Fprintf(progress, "%-8s  %-10s  %-12s  FAILED after %v: %v\n", m.name, sc.id, sys.name, took, err)
					res.fail(sys.name, m, sc, err)
					continue
				}
				var parts []string
				for _, f := range sc.figures {
					if v, ok := figs[f.name]; ok {
						parts = append(parts, fmt.Sprintf("%s=%s %s", f.name, formatValue(v, f.unit), f.unit))
					}
				}
				fmt.Fprintf(progress, "%-8s  %-10s  %-12s  %v  %s\n", m.name, sc.id, sys.name, took, strings.Join(parts, ", "))
				res.add(sys.name, m, sc, figs)
			}
		}
	}
	return res
}

func main() {
	cfg, err := parseFlags(os.Args[1:], os.Stderr)
	if err == flag.ErrHelp {
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "pipes:", err)
		os.Exit(2)
	}
	if cfg.cpuprofile != "" {
		f, err := os.Create(cfg.cpuprofile)
		if err == nil {
			err = pprof.StartCPUProfile(f)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, "pipes:", err)
			os.Exit(2)
		}
	}
	started := time.Now()
	res := runAll(cfg, os.Stderr)
	if cfg.cpuprofile != "" {
		pprof.StopCPUProfile()
	}
	if cfg.md {
		res.printMarkdown(os.Stdout, started)
	} else {
		res.printText(os.Stdout, started)
	}
	if len(res.errs) > 0 {
		os.Exit(1)
	}
}
