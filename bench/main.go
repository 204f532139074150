// Command bench compares bokbok with other ways of making the same echo
// RPC over one TCP connection on 127.0.0.1, all in one process:
//
//	raw                hand-written length-prefixed multiplexed echo (the floor)
//	raw-secretbox      the same, every flushed write sealed with nacl/secretbox
//	netrpc             net/rpc with gob
//	grpc               google.golang.org/grpc unary, insecure, a binary codec
//	bokbok             bokbok, insecure
//	bokbok-secure      bokbok with a pre-shared key
//	bokbok-msgp        bokbok with a request/reply type whose MessagePack
//	                   methods tinylib/msgp generated
//	bokbok-bulk        bokbok with Data as a bokbok.Bulk (decoded without a copy)
//	bokbok-rcvbuf      bokbok with Config.SocketReceiveBuffer 256 KiB at both ends
//	bokbok-mux         bokbok through a Mux, a typed handler and a typed
//	                   call, with two pass-through interceptors and middlewares
//	bokbok-mux-bare    the same without interceptors or middleware
//	bokbok-mux-secure  bokbok-mux with a pre-shared key
//
// Scenarios: (a) sequential latency, (b) 64 callers on one connection,
// (c) 4 callers with 1 MiB messages, (d) memory per idle connection,
// (e) a small call's latency among 1 MiB calls on its connection (for
// information), (f) a small call's latency beside one caller echoing
// 2 MiB on its connection. Every reply is checked against its request
// byte for byte. See BENCHMARKS.md
// at the repository root for a recorded run.
//
//	go run .                 # full run: 3 runs of 3 s per scenario
//	go run . -quick          # a few seconds: checks that every system echoes
//	go run . -systems bokbok,raw -scenarios a,b
package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"runtime"
	"runtime/pprof"
	"slices"
	"strings"
	"syscall"
	"time"
)

// config is a parsed command line.
type config struct {
	options
	runs       int
	cpuprofile string
	systems    []system
	scenarios  []scenario
}

func parseFlags(args []string, stderr io.Writer) (*config, error) {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	quick := fs.Bool("quick", false, "very short runs (200 ms per scenario, -idle 50, 1 run) to check that every system works")
	duration := fs.Duration("duration", 3*time.Second, "measured time per timed scenario")
	warmup := fs.Duration("warmup", 500*time.Millisecond, "unmeasured warm-up before each timed scenario")
	runs := fs.Int("runs", 3, "runs of everything; each figure is the median of the runs")
	systems := fs.String("systems", "", "comma-separated systems to run (default all)")
	scenarios := fs.String("scenarios", "", "comma-separated scenarios to run, from a,b,c,d,e,f (default all)")
	idle := fs.Int("idle", 2000, "idle connections opened by scenario d")
	cpuprofile := fs.String("cpuprofile", "", "write a CPU profile of the whole run to this file (narrow it with -systems and -scenarios)")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments: %q", fs.Args())
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	cfg := &config{options: options{duration: *duration, warmup: *warmup, idle: *idle, grace: 20 * time.Second}, runs: *runs, cpuprofile: *cpuprofile}
	if *quick {
		cfg.grace = 10 * time.Second
		if !set["duration"] {
			cfg.duration = 200 * time.Millisecond
		}
		if !set["warmup"] {
			cfg.warmup = 50 * time.Millisecond
		}
		if !set["idle"] {
			cfg.idle = 50
		}
		if !set["runs"] {
			cfg.runs = 1
		}
	}
	if cfg.runs < 1 || cfg.idle < 1 || cfg.duration <= 0 || cfg.warmup < 0 {
		return nil, fmt.Errorf("want -runs >= 1, -idle >= 1, -duration > 0, -warmup >= 0")
	}

	all, err := allSystems()
	if err != nil {
		return nil, err
	}
	cfg.systems, err = pick(all, *systems, system.name)
	if err != nil {
		return nil, fmt.Errorf("-systems: %w", err)
	}
	cfg.scenarios, err = pick(allScenarios, *scenarios, func(s scenario) string { return s.id })
	if err != nil {
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
	var names []string
	for _, it := range items {
		names = append(names, name(it))
	}
	want := strings.Split(list, ",")
	for _, w := range want {
		if !slices.Contains(names, w) {
			return nil, fmt.Errorf("unknown %q (want some of %s)", w, strings.Join(names, ","))
		}
	}
	var out []T
	for _, it := range items {
		if slices.Contains(want, name(it)) {
			out = append(out, it)
		}
	}
	return out, nil
}

// runAll runs every scenario on every system, cfg.runs times, reporting
// progress to progress. Within a run the systems take turns, so slow drift
// of a noisy machine spreads over all of them.
func runAll(cfg *config, progress io.Writer) *results {
	res := newResults(cfg.systems)
	for run := 1; run <= cfg.runs; run++ {
		for _, sys := range cfg.systems {
			for _, sc := range cfg.scenarios {
				start := time.Now()
				m, err := runScenario(sc, sys, cfg.options)
				took := time.Since(start).Round(time.Millisecond)
				if err != nil {
					fmt.Fprintf(progress, "run %d/%d  %-17s (%s)  FAILED after %v: %v\n", run, cfg.runs, sys.name(), sc.id, took, err)
					res.fail(sys.name(), sc, run, err)
					continue
				}
				fmt.Fprintf(progress, "run %d/%d  %-17s (%s)  %v  %s\n", run, cfg.runs, sys.name(), sc.id, took, describe(m))
				res.add(sys.name(), m)
			}
		}
	}
	return res
}

func describe(m metrics) string {
	var parts []string
	for _, col := range columns {
		if v, ok := m[col]; ok {
			parts = append(parts, fmt.Sprintf("%s=%s", col[4:], format(col, v)))
		}
	}
	return strings.Join(parts, " ")
}

// raiseFileLimit raises the soft limit on open files to at least n.
func raiseFileLimit(n uint64) error {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return err
	}
	if rl.Cur >= n {
		return nil
	}
	rl.Cur = n
	rl.Max = max(rl.Max, n) // needs privilege if it grows
	return syscall.Setrlimit(syscall.RLIMIT_NOFILE, &rl)
}

func main() {
	cfg, err := parseFlags(os.Args[1:], os.Stderr)
	if err == flag.ErrHelp {
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(2)
	}
	if slices.ContainsFunc(cfg.scenarios, func(s scenario) bool { return s.id == "d" }) {
		// Both ends of every idle connection live in this process.
		if err := raiseFileLimit(uint64(2*cfg.idle + 256)); err != nil {
			fmt.Fprintf(os.Stderr, "bench: cannot raise the open-file limit for -idle %d: %v\n", cfg.idle, err)
		}
	}

	if cfg.cpuprofile != "" {
		f, err := os.Create(cfg.cpuprofile)
		if err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			os.Exit(2)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			fmt.Fprintln(os.Stderr, "bench:", err)
			os.Exit(2)
		}
	}
	res := runAll(cfg, os.Stderr)
	if cfg.cpuprofile != "" {
		pprof.StopCPUProfile()
	}

	fmt.Printf("\n%s %s/%s, GOMAXPROCS=%d; %d run(s), each figure the median; %v measured after %v warm-up per scenario; -idle %d\n\n",
		runtime.Version(), runtime.GOOS, runtime.GOARCH, runtime.GOMAXPROCS(0), cfg.runs, cfg.duration, cfg.warmup, cfg.idle)
	res.printTable(os.Stdout)
	if cfg.runs > 1 {
		fmt.Println("\nspread across runs, max/min - 1:")
		res.printSpread(os.Stdout)
	}
	fmt.Println()
	fmt.Println("(a) one caller, 64 B; (b) 64 callers, one connection, 64 B; (c) 4 callers, one connection, 1 MiB,")
	fmt.Println("MB/s = Data bytes both ways (2 MiB per call) / 10^6 / s; (d) HeapInuse+StackInuse growth per idle")
	fmt.Println("connection, both ends; (e) a 64 B caller's latency while 4 callers make 1 MiB calls on its connection,")
	fmt.Println("for information; (f) the same beside one caller making 2 MiB calls back to back.")
	fmt.Println()
	res.printRatios(os.Stdout)
	if len(res.errs) > 0 {
		fmt.Println("\nerrors:")
		for _, e := range res.errs {
			fmt.Println("  " + e)
		}
		os.Exit(1)
	}
}
