// Package examples_test builds the example programs and runs them as a
// user would, checking what they print.
package examples_test

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// build compiles the example commands named (directories under examples/)
// into a temporary directory and returns the path of each binary.
func build(t *testing.T, names ...string) map[string]string {
	t.Helper()
	gotool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go command in PATH:", err)
	}
	dir := t.TempDir()
	args := []string{"build", "-o", dir + string(filepath.Separator)}
	if raceEnabled() {
		// Check the examples for data races too; this also reuses the
		// race-built packages that compiling this test left in the cache.
		args = append(args, "-race")
	}
	bins := make(map[string]string)
	for _, n := range names {
		args = append(args, "./"+n)
		bins[n] = filepath.Join(dir, n)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, gotool, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("go %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return bins
}

// raceEnabled reports whether this test binary was built with -race.
func raceEnabled() bool {
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "-race" {
				return s.Value == "true"
			}
		}
	}
	return false
}

// syncBuffer collects a process's output while tests read it.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// waitFor polls until out contains s.
func waitFor(t *testing.T, out *syncBuffer, s string, exited <-chan struct{}) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !strings.Contains(out.String(), s) {
		select {
		case <-exited:
			t.Fatalf("the process exited before printing %q:\n%s", s, out)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %q:\n%s", s, out)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// checkContains reports each line of want missing from out.
func checkContains(t *testing.T, what, out string, want ...string) {
	t.Helper()
	for _, w := range want {
		if !strings.Contains(out, w) {
			t.Errorf("%s does not contain %q", what, w)
		}
	}
	if t.Failed() {
		t.Logf("%s:\n%s", what, out)
	}
}

// checkOrder reports whether the strings appear in out in the given order.
func checkOrder(t *testing.T, what, out string, in ...string) {
	t.Helper()
	last := -1
	for _, s := range in {
		i := strings.Index(out, s)
		if i < 0 || i < last {
			t.Errorf("%s: want %q in this order", what, in)
			return
		}
		last = i
	}
}

func TestDemo(t *testing.T) {
	bins := build(t, "demo")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	start := time.Now()
	out, err := exec.CommandContext(ctx, bins["demo"]).CombinedOutput()
	if err != nil {
		t.Fatalf("demo: %v\n%s", err, out)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("the demo took %v", d)
	}
	s := string(out)
	checkContains(t, "the demo's transcript", s,
		"client: connected to 127.0.0.1:",
		"server: accepted a connection from 127.0.0.1:",
		"client -> server: add [2 3]\nserver -> client: 5\n",
		"server -> client: upper [hello from the server]\nclient -> server: \"HELLO FROM THE SERVER\"\n",
		"client -> server: greet []\n    server -> client: name []\n    client -> server: \"demo-client\"\nserver -> client: \"Hello, demo-client!\"\n",
		"server: handled notification log [the client says hi]",
		`server -> client: remote error: code "division_by_zero", message "cannot divide 1 by zero"`,
		`server -> client: remote error: code "bokbok.panic", message "handler panicked: boom"`,
		"server: slow is running; its context carries the caller's deadline: true",
		"client: the call returned: context canceled",
		"server: the handler's context ended: context canceled",
		"client: refused before sending: bokbok: message too large",
		`code "bokbok.too_large"`,
		"client: a new call is refused: bokbok: connection shutting down",
		`server -> client: "finished" (the call in flight completed)`,
		"client: connection closed: bokbok: connection closed: bokbok: connection shutting down",
		"server: stopped; Serve returned: bokbok: server closed",
		"== all done",
	)
	checkOrder(t, "the demo's transcript", s, `"step 3 done"`, `"step 2 done"`, `"step 1 done"`)
}

func TestServerAndClient(t *testing.T) {
	bins := build(t, "server", "client")
	sock := filepath.Join(t.TempDir(), "bokbok.sock")

	var serverOut syncBuffer
	server := exec.Command(bins["server"], "-addr", sock)
	server.Stdout = &serverOut
	server.Stderr = &serverOut
	if err := server.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	var waitErr error
	go func() {
		waitErr = server.Wait()
		close(exited)
	}()
	t.Cleanup(func() {
		select {
		case <-exited:
		default:
			server.Process.Kill()
			<-exited
		}
	})
	waitFor(t, &serverOut, "listening on "+sock, exited)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	clientOut, err := exec.CommandContext(ctx, bins["client"], "-addr", sock, "-name", "tester").CombinedOutput()
	if err != nil {
		t.Fatalf("client: %v\nclient output:\n%s\nserver output:\n%s", err, clientOut, &serverOut)
	}
	checkContains(t, "the client's output", string(clientOut),
		"client: ",
		"connected to "+sock,
		"sent a notification",
		"add [2 3 4] -> 9",
		`upper [hello, bokbok] -> "HELLO, BOKBOK"`,
		`the server asks for my name; answering "tester"`,
		`greet [] -> "Hello, tester!"`,
		`divide [1 0] -> remote error, code "no_such_method"`,
		"sleep [5000] -> ",
		"context deadline exceeded",
		`sleep [100] -> "slept 100ms"`,
		`sleep [200] -> "slept 200ms"`,
		`sleep [300] -> "slept 300ms"`,
		"shut down: bokbok: connection closed",
	)
	checkOrder(t, "the client's output", string(clientOut), "the server asks for my name", `greet [] -> "Hello, tester!"`)

	// The client has gone; the server logs the close on its own time.
	waitFor(t, &serverOut, "connection #1 closed", exited)
	if err := server.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-exited:
	case <-time.After(15 * time.Second):
		t.Fatalf("the server did not exit after SIGTERM:\n%s", &serverOut)
	}
	if waitErr != nil {
		t.Errorf("server: %v", waitErr)
	}
	checkContains(t, "the server's output", serverOut.String(),
		"server: ",
		"connection #1 opened from a client on the Unix socket",
		"#1: notification: log [hello from tester]",
		"#1: request: add [2 3 4]",
		"#1: request: greet []",
		`#1: the client says its name is "tester"`,
		"#1: sleep 5000ms stopped early",
		"connection #1 closed: bokbok: connection closed: bokbok: connection shutting down",
		"shutting down",
		"stopped",
	)
	if _, err := os.Stat(sock); !os.IsNotExist(err) {
		t.Errorf("the server left its socket behind (stat: %v)", err)
	}
}
