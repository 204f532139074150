package main

import (
	"context"
	"math/rand/v2"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bokbok-go/bokbok"
)

// loadRow returns the value column of the summary row named name, or
// fails the test.
func loadRow(t *testing.T, out, name string) string {
	t.Helper()
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + `  +(.*)$`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no %q row in the summary", name)
	}
	return m[1]
}

// loadErrs returns the count of the error kind in the summary, or 0.
func loadErrs(t *testing.T, out, kind string) int {
	t.Helper()
	m := regexp.MustCompile(`(?m)^ {13} *(\d+)  ` + regexp.QuoteMeta(kind) + `$`).FindStringSubmatch(out)
	if m == nil {
		return 0
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

// loadCalls returns the number of calls in the summary.
func loadCalls(t *testing.T, out string) int {
	t.Helper()
	f := strings.Fields(loadRow(t, out, "calls"))
	n, err := strconv.Atoi(f[0])
	if err != nil {
		t.Fatalf("calls row: %v", err)
	}
	return n
}

// checkLatencyRows checks that the latency rows are there and ordered.
func checkLatencyRows(t *testing.T, out string) {
	t.Helper()
	prev := 0.0
	for _, q := range []string{"min", "p50", "p90", "p99", "max"} {
		v := loadRow(t, out, "latency "+q)
		f, err := strconv.ParseFloat(strings.TrimSuffix(v, "ms"), 64)
		if err != nil || !strings.HasSuffix(v, "ms") {
			t.Errorf("latency %s is %q", q, v)
		}
		if f < prev {
			t.Errorf("latency %s is %v, less than the one before, %v", q, f, prev)
		}
		prev = f
	}
}

func TestLoadInsecure(t *testing.T) {
	plNoLeaks(t)
	p := plStart(t, false, nil)
	start := time.Now()
	code, out, errOut := plRun(t.Context(), t, "load", p.addr, "--insecure", "--duration", "500ms", "--concurrency", "4")
	if d := time.Since(start); d < 500*time.Millisecond || d > 10*time.Second { // generous: a loaded machine
		t.Errorf("a 500ms run took %v", d)
	}
	if code != exitOK {
		t.Fatalf("exit %d, want %d", code, exitOK)
	}
	if errOut != "" {
		t.Errorf("stderr %q, want nothing in a run under a second", errOut)
	}
	if !strings.HasPrefix(out, "--- bokbok load "+p.addr+": 4 callers on 1 connection, echo of 64 bytes ---\n") {
		t.Errorf("summary header is wrong")
	}
	if n := loadCalls(t, out); n == 0 {
		t.Errorf("no calls")
	}
	if v := loadRow(t, out, "errors"); v != "0" {
		t.Errorf("errors %q, want 0", v)
	}
	if v := loadRow(t, out, "calls/s"); !regexp.MustCompile(`^\d+\.\d$`).MatchString(v) || v == "0.0" {
		t.Errorf("calls/s %q", v)
	}
	checkLatencyRows(t, out)
}

// TestLoadSecure runs over two secure connections with large messages,
// long enough for progress lines.
func TestLoadSecure(t *testing.T) {
	plNoLeaks(t)
	p := plStart(t, true, nil)
	code, out, errOut := plRun(t.Context(), t, "load", p.addr, "--user", "alice", "--key-file", p.keyFile,
		"--duration", "1200ms", "--concurrency", "5", "--connections", "2", "--size", "100000")
	if code != exitOK {
		t.Fatalf("exit %d, want %d", code, exitOK)
	}
	if !strings.Contains(out, ": 5 callers on 2 connections, echo of 100000 bytes ---") {
		t.Errorf("summary header is wrong")
	}
	if loadCalls(t, out) == 0 || loadRow(t, out, "errors") != "0" {
		t.Errorf("want calls and no errors")
	}
	checkLatencyRows(t, out)
	// stderr is not a terminal: plain progress lines, about one a second.
	if strings.Contains(errOut, "\r") {
		t.Errorf("carriage return in progress lines to a non-terminal")
	}
	lines := strings.Split(strings.TrimSuffix(errOut, "\n"), "\n")
	progress := regexp.MustCompile(`^\[ +1s\] \d+ calls/s, 0 errors, p50 \d+\.\d{3}ms, p99 \d+\.\d{3}ms \(total \d+ calls, 0 errors\)$`)
	if len(lines) != 1 || !progress.MatchString(lines[0]) {
		t.Errorf("want one progress line, got %q", errOut)
	}
}

func TestLoadMessage(t *testing.T) {
	plNoLeaks(t)
	p := plStart(t, false, nil)
	t.Run("echo", func(t *testing.T) {
		code, out, _ := plRun(t.Context(), t, "load", p.addr, "--insecure", "--duration", "200ms", "--concurrency", "2", "--timeout", "0",
			"--message", `{"method":"echo","params":{"n":[1,-2,2.5,18446744073709551615,"x",true,null],"m":{}}}`)
		if code != exitOK {
			t.Errorf("exit %d, want %d", code, exitOK)
		}
		if !strings.Contains(out, "callers on 1 connection, --message (echo) ---") || loadCalls(t, out) == 0 || loadRow(t, out, "errors") != "0" {
			t.Errorf("want calls without errors")
		}
	})
	t.Run("remote errors", func(t *testing.T) {
		code, out, _ := plRun(t.Context(), t, "load", p.addr, "--insecure", "--duration", "200ms", "--concurrency", "2",
			"--message", `{"method":"nope"}`)
		if code != exitRemote {
			t.Errorf("exit %d, want %d", code, exitRemote)
		}
		calls := loadCalls(t, out)
		want := strconv.Itoa(calls) + " (100.00%), of which:"
		if v := loadRow(t, out, "errors"); v != want {
			t.Errorf("errors %q, want %q", v, want)
		}
		if n := loadErrs(t, out, "remote error [test.no_method]"); n != calls {
			t.Errorf("%d remote errors, want %d", n, calls)
		}
		if v := loadRow(t, out, "latency"); v != "- (no successful call)" {
			t.Errorf("want no latency without a successful call")
		}
	})
	t.Run("not an echo", func(t *testing.T) {
		// Any reply that is not an error counts.
		code, out, _ := plRun(t.Context(), t, "load", p.addr, "--insecure", "--duration", "100ms", "--concurrency", "1",
			"--message", `{"method":"echo","params":"x","extra":1}`)
		if code != exitOK || !strings.Contains(out, ": 1 caller on 1 connection, --message ---") {
			t.Errorf("exit %d, want %d, with the message not checked as an echo", code, exitOK)
		}
	})
}

// TestLoadWrongReplies checks that replies that are not the echo of the
// message count as errors.
func TestLoadWrongReplies(t *testing.T) {
	plNoLeaks(t)
	var n atomic.Int64
	p := plStart(t, false, func(ctx context.Context, req *bokbok.Request) (any, error) {
		var m map[string]any
		if err := req.Decode(&m); err != nil {
			return nil, err
		}
		if n.Add(1)%3 == 0 {
			b := []byte(m["params"].(string)) // bokbok decodes bin into any as a string
			b[len(b)-1] ^= 1
			return b, nil
		}
		return m["params"], nil
	})
	code, out, _ := plRun(t.Context(), t, "load", p.addr, "--insecure", "--duration", "300ms", "--concurrency", "3")
	if code != exitRemote {
		t.Errorf("exit %d, want %d", code, exitRemote)
	}
	calls := loadCalls(t, out)
	wrong := loadErrs(t, out, "wrong reply (not the echo of the message)")
	if wrong == 0 || wrong < calls/3-3 || wrong > calls/3+3 {
		t.Errorf("%d wrong replies in %d calls, want a third", wrong, calls)
	}
	checkLatencyRows(t, out) // of the calls that succeeded
}

// TestLoadCrossedReplies checks that a reply meant for another caller
// is caught: every call's payload differs.
func TestLoadCrossedReplies(t *testing.T) {
	plNoLeaks(t)
	var last atomic.Value
	p := plStart(t, false, func(ctx context.Context, req *bokbok.Request) (any, error) {
		var m map[string]any
		if err := req.Decode(&m); err != nil {
			return nil, err
		}
		prev := last.Swap(m["params"])
		if prev == nil || rand.IntN(2) == 0 {
			return m["params"], nil
		}
		return prev, nil // the previous request's params
	})
	code, out, _ := plRun(t.Context(), t, "load", p.addr, "--insecure", "--duration", "200ms", "--concurrency", "1", "--size", "8")
	if code != exitRemote || loadErrs(t, out, "wrong reply (not the echo of the message)") == 0 {
		t.Errorf("exit %d, want %d with wrong replies", code, exitRemote)
	}
}

func TestLoadTimeouts(t *testing.T) {
	plNoLeaks(t)
	p := plStart(t, false, func(ctx context.Context, req *bokbok.Request) (any, error) {
		<-ctx.Done()
		return nil, ctx.Err()
	})
	code, out, _ := plRun(t.Context(), t, "load", p.addr, "--insecure", "--duration", "200ms", "--concurrency", "2", "--timeout", "50ms")
	if code != exitRemote {
		t.Errorf("exit %d, want %d", code, exitRemote)
	}
	calls := loadCalls(t, out)
	if n := loadErrs(t, out, "timeout (--timeout)"); calls < 4 || n != calls {
		t.Errorf("%d timeouts in %d calls, want all of them, at least 4", n, calls)
	}
}

func TestLoadConnectFailures(t *testing.T) {
	plNoLeaks(t)
	p := plStart(t, true, nil)
	other, err := bokbok.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	code, out, errOut := plRun(t.Context(), t, "load", p.addr, "--user", "alice", "--key-file", plKeyFile(t, other), "--duration", "100ms")
	if code != exitConnect || out != "" {
		t.Errorf("wrong key: exit %d, want %d and no summary", code, exitConnect)
	}
	plWantOneLine(t, errOut, "bokbok load: cannot connect to "+p.addr, "authentication failed", "check --user, --key-file and --realm")

	code, out, errOut = plRun(t.Context(), t, "load", plClosedAddr(t), "--insecure", "--duration", "100ms", "--connections", "3")
	if code != exitConnect || out != "" {
		t.Errorf("closed port: exit %d, want %d and no summary", code, exitConnect)
	}
	plWantOneLine(t, errOut, "bokbok load: cannot connect to 127.0.0.1:", "connection refused")
}

// TestLoadConnectionLost checks a server that goes away during the run.
func TestLoadConnectionLost(t *testing.T) {
	plNoLeaks(t)
	p := plStart(t, false, nil)
	go func() {
		time.Sleep(200 * time.Millisecond)
		p.srv.Close()
	}()
	start := time.Now()
	code, out, errOut := plRun(t.Context(), t, "load", p.addr, "--insecure", "--duration", "10s", "--concurrency", "4", "--connections", "2")
	if d := time.Since(start); d > 8*time.Second { // well short of --duration, generous for a loaded machine
		t.Errorf("the run went on for %v after the server closed", d)
	}
	if code != exitConnect {
		t.Errorf("exit %d, want %d", code, exitConnect)
	}
	for _, want := range []string{"connection 1 of 2 to " + p.addr + " lost: ", "connection 2 of 2 to " + p.addr + " lost: "} {
		if !strings.Contains(errOut, want) {
			t.Errorf("want %q on stderr", want)
		}
	}
	if loadCalls(t, out) == 0 {
		t.Errorf("no calls before the server closed")
	}
}

// TestLoadInterrupted checks that ctx ending (Ctrl-C) stops the run,
// which still prints its summary.
func TestLoadInterrupted(t *testing.T) {
	plNoLeaks(t)
	p := plStart(t, false, nil)
	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	code, out, _ := plRun(ctx, t, "load", p.addr, "--insecure", "--duration", "1m", "--concurrency", "8")
	if d := time.Since(start); d > 20*time.Second { // well short of --duration, generous for a loaded machine
		t.Errorf("load took %v to stop", d)
	}
	if code != exitOK {
		t.Errorf("exit %d, want %d", code, exitOK)
	}
	if !strings.Contains(loadRow(t, out, "calls"), "(interrupted)") || loadRow(t, out, "errors") != "0" {
		t.Errorf("want an interrupted run without errors")
	}
}

func TestLoadUsage(t *testing.T) {
	for _, args := range [][]string{
		{"load"},
		{"load", "127.0.0.1:1", "--insecure", "--concurrency", "0"},
		{"load", "127.0.0.1:1", "--insecure", "--connections", "0"},
		{"load", "127.0.0.1:1", "--insecure", "--connections", "3", "--concurrency", "2"},
		{"load", "127.0.0.1:1", "--insecure", "--duration", "0s"},
		{"load", "127.0.0.1:1", "--insecure", "--size", "-1"},
		{"load", "127.0.0.1:1", "--insecure", "--size", "10", "--message", "{}"},
		{"load", "127.0.0.1:1", "--insecure", "--message", "{"},
		{"load", "127.0.0.1:1", "--insecure", "--message", "1 2"},
		{"load", "127.0.0.1:1", "--insecure", "--timeout", "-1s"},
		{"load", "127.0.0.1:1"},
	} {
		code, out, errOut := plRun(t.Context(), t, args...)
		if code != exitUsage {
			t.Errorf("%q: exit %d, want %d", args, code, exitUsage)
		}
		if out != "" || errOut == "" {
			t.Errorf("%q: want a complaint on stderr only", args)
		}
	}
	code, _, errOut := plRun(t.Context(), t, "load", "--help")
	if code != exitOK || !strings.Contains(errOut, "Exit status") || !strings.Contains(errOut, `{"method":"echo","params":BYTES}`) {
		t.Errorf("--help: exit %d, want 0 and the usage with the default message", code)
	}
}

func TestLoadHistogram(t *testing.T) {
	// Every value lands in a bucket whose middle is within 1% of it, and
	// buckets are in order.
	prev := -1
	check := func(d time.Duration) {
		i := histIndex(d)
		if i < 0 || i >= histBuckets {
			t.Fatalf("histIndex(%d) = %d, out of range", d, i)
		}
		if d < 1<<histMaxBits {
			if m := histMiddle(i); float64(absDur(m-d)) > 0.01*float64(d)+1 {
				t.Fatalf("%d lands in bucket %d, whose middle is %d", d, i, m)
			}
		}
	}
	for d := time.Duration(0); d < 100000; d++ {
		check(d)
		if i := histIndex(d); i < prev {
			t.Fatalf("histIndex(%d) = %d < histIndex(%d) = %d", d, i, d-1, prev)
		} else {
			prev = i
		}
	}
	r := rand.New(rand.NewPCG(1, 2))
	for range 100000 {
		check(time.Duration(r.Int64N(1 << (histMaxBits + 2))))
	}
	if histIndex(1<<histMaxBits-1) != histBuckets-1 || histIndex(time.Hour) != histBuckets-1 {
		t.Errorf("the top does not reach the last bucket")
	}

	var c loadCounts
	if c.quantile(0.5) != 0 {
		t.Errorf("quantile of nothing")
	}
	for i := 1; i <= 1000; i++ {
		d := time.Duration(i) * time.Microsecond
		if c.succeeded == 0 || d < c.min {
			c.min = d
		}
		c.max = max(c.max, d)
		c.succeeded++
		c.hist.add(d)
	}
	for _, q := range []struct {
		q    float64
		want time.Duration
	}{{0, time.Microsecond}, {0.5, 500 * time.Microsecond}, {0.9, 900 * time.Microsecond}, {0.99, 990 * time.Microsecond}, {1, time.Millisecond}} {
		if got := c.quantile(q.q); float64(absDur(got-q.want)) > 0.01*float64(q.want) {
			t.Errorf("quantile(%v) = %v, want %v within 1%%", q.q, got, q.want)
		}
	}
	var merged loadCounts
	merged.merge(&c)
	merged.merge(&c)
	if merged.succeeded != 2000 || merged.hist.n != 2000 || merged.min != time.Microsecond || merged.max != time.Millisecond {
		t.Errorf("merge: %d calls, %d in the histogram, min %v, max %v", merged.succeeded, merged.hist.n, merged.min, merged.max)
	}
}

func TestLoadErrorKinds(t *testing.T) {
	var c loadCounts
	for i := range maxErrKinds + 5 {
		c.addErr("kind "+strconv.Itoa(i), 1)
	}
	if len(c.errs) != maxErrKinds+1 || c.errs["other"] != 5 || c.failed != maxErrKinds+5 {
		t.Errorf("%d kinds, %d other, %d failed", len(c.errs), c.errs["other"], c.failed)
	}
}

func absDur(d time.Duration) time.Duration {
	if d < 0 {
		return -d
	}
	return d
}

// TestLoadProgressTerminal checks the progress line on a terminal: one
// line, rewritten in place with "\r", ended with a newline.
func TestLoadProgressTerminal(t *testing.T) {
	plNoLeaks(t)
	defer func(d time.Duration) { loadProgressEvery = d }(loadProgressEvery)
	loadProgressEvery = 20 * time.Millisecond

	lr := newLoadRun(1, 3)
	done, fed := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(fed)
		for i := 0; ; i++ {
			select {
			case <-done:
				return
			case <-time.After(time.Millisecond):
			}
			if i%10 == 9 {
				lr.shards[i%3].fail("test")
			} else {
				lr.shards[i%3].ok(time.Duration(i) * time.Microsecond)
			}
		}
	}()
	time.AfterFunc(150*time.Millisecond, func() { close(done) })
	var buf strings.Builder
	lr.report(&buf, true, time.Now(), done)
	<-fed
	out := buf.String()
	t.Logf("%q", out)
	if !strings.HasPrefix(out, "\r") || !strings.HasSuffix(out, "\n") || strings.Count(out, "\n") != 1 {
		t.Fatalf("want \\r-separated updates ending in one newline, got %q", out)
	}
	updates := strings.Split(strings.TrimSuffix(out, "\n"), "\r")[1:]
	if len(updates) < 3 {
		t.Errorf("%d updates in 150ms at 20ms intervals", len(updates))
	}
	width := 0
	for _, u := range updates {
		if len(u) < width {
			t.Errorf("update %q is shorter than the one before, which it does not cover", u)
		}
		width = max(width, len(strings.TrimRight(u, " ")))
		if !strings.Contains(u, " calls/s, ") {
			t.Errorf("update %q", u)
		}
	}
	lr.collect()
	if c := lr.total.succeeded + lr.total.failed; c == 0 || lr.total.errs["test"] == 0 {
		t.Errorf("total %d calls, %d errors", c, lr.total.errs["test"])
	}
}
