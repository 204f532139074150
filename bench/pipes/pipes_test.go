package main

import (
	"io"
	"strings"
	"testing"
	"time"
)

// tiny are flags that make every scenario a fraction of a second.
var tiny = []string{"-n", "300", "-catchup", "500", "-rate", "200", "-latency-duration", "300ms", "-listeners", "3", "-timeout", "1m"}

// TestTiny runs every scenario in both modes on both systems, tiny: each
// must measure every figure, with every listener getting every packet
// once and in order.
func TestTiny(t *testing.T) {
	cfg, err := parseFlags(tiny, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	var progress strings.Builder
	start := time.Now()
	res := runAll(cfg, &progress)
	t.Log("\n" + progress.String())
	for _, e := range res.errs {
		t.Error(e)
	}
	for _, row := range res.rows {
		for _, sys := range cfg.systems {
			if row.fig.only != "" && row.fig.only != sys.name {
				continue
			}
			if v, _, ok := res.value(row, sys.name); !ok || v <= 0 {
				t.Errorf("%s %s %s %s: no figure (%v, %v)", row.mode, row.scenario, row.fig.name, sys.name, v, ok)
			}
		}
		if q, _ := res.ratio(row); q == "-" && row.fig.only == "" {
			t.Errorf("%s %s %s: no ratio", row.mode, row.scenario, row.fig.name)
		}
	}
	var text, md strings.Builder
	res.printText(&text, start)
	res.printMarkdown(&md, start)
	for _, want := range []string{"bokbok-pipes", "jetstream", "catch-up of 1 listener", "NumCPU"} {
		if !strings.Contains(text.String(), want) || !strings.Contains(md.String(), want) {
			t.Errorf("output lacks %q", want)
		}
	}
	if !strings.Contains(md.String(), "| mode | scenario |") {
		t.Errorf("Markdown lacks the table:\n%s", md.String())
	}
}

// TestTinyAckExplicit runs JetStream with an ack per message.
func TestTinyAckExplicit(t *testing.T) {
	cfg, err := parseFlags(append(tiny, "-systems", "jetstream", "-modes", "no-fsync", "-scenarios", "throughput,catchup", "-js-ack", "explicit"), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	res := runAll(cfg, io.Discard)
	for _, e := range res.errs {
		t.Error(e)
	}
}

// TestCheckerCatches checks that a listener fails on a duplicate, a
// skipped sequence number, a missing warm-up packet and a wrong size.
func TestCheckerCatches(t *testing.T) {
	pk := func(id uint64) []byte { return payload(make([]byte, 32), id) }
	for name, feed := range map[string]func(c *checker){
		"duplicate":  func(c *checker) { c.got(1, pk(0)); c.got(2, pk(1)); c.got(3, pk(1)) },
		"skipped":    func(c *checker) { c.got(1, pk(0)); c.got(3, pk(1)) },
		"repeated":   func(c *checker) { c.got(1, pk(0)); c.got(2, pk(1)); c.got(2, pk(2)) },
		"no warm-up": func(c *checker) { c.got(1, pk(1)) },
		"range":      func(c *checker) { c.got(1, pk(0)); c.got(2, pk(9)) },
		"size":       func(c *checker) { c.got(1, make([]byte, 31)) },
	} {
		c := newChecker(name, 3, 32, false)
		feed(c)
		if _, _, err := c.state(); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
	c := newChecker("good", 3, 32, true)
	for i, id := range []uint64{0, 2, 3, 1} {
		c.got(uint64(i+1), pk(id))
	}
	select {
	case <-c.done:
	default:
		t.Error("good: not done")
	}
	if _, _, err := c.state(); err != nil || len(c.lat) != 3 {
		t.Errorf("good: %v, %d latencies", err, len(c.lat))
	}
}

func TestFlags(t *testing.T) {
	for _, args := range [][]string{{"-systems", "nope"}, {"-modes", "fsync,x"}, {"-scenarios", "latency,y"}, {"-js-ack", "some"}, {"-size", "8"}, {"-n", "0"}, {"extra"}} {
		if _, err := parseFlags(args, io.Discard); err == nil {
			t.Errorf("%q: no error", args)
		}
	}
	cfg, err := parseFlags([]string{"-modes", "no-fsync,fsync", "-scenarios", "catchup,throughput"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.modes) != 2 || cfg.modes[0].name != "fsync" || len(cfg.scenarios) != 2 || cfg.scenarios[0].id != "throughput" {
		t.Errorf("picked %v, %v: not in table order", cfg.modes, cfg.scenarios)
	}
}
