// Package examples_test builds the example programs and runs them as a
// user would, checking what they print.
package examples_test

import (
	"bytes"
	"context"
	"errors"
	"go/parser"
	"go/token"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime/debug"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/bokbok-go/bokbok"

	"github.com/bokbok-go/bokbok/internal/testutil"
)

// build compiles the example commands named (directories under examples/,
// such as "server" or "carfactory/client") into a temporary directory and
// returns the path of each binary, by name. Each binary is named after the
// last element of its directory, so commands built together must differ
// in it.
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
	seen := make(map[string]string)
	for _, n := range names {
		base := filepath.Base(n)
		if prev, dup := seen[base]; dup {
			t.Fatalf("build: %s and %s would both be built as %s", prev, n, base)
		}
		seen[base] = n
		args = append(args, "./"+n)
		bins[n] = filepath.Join(dir, base)
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
type syncBuffer = testutil.SyncBuffer

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
	failed := false
	for _, w := range want {
		if !strings.Contains(out, w) {
			t.Errorf("%s does not contain %q", what, w)
			failed = true
		}
	}
	if failed {
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

// checkMatches reports each regular expression that matches no part of
// out.
func checkMatches(t *testing.T, what, out string, patterns ...string) {
	t.Helper()
	failed := false
	for _, p := range patterns {
		if !regexp.MustCompile(p).MatchString(out) {
			t.Errorf("%s does not match %q", what, p)
			failed = true
		}
	}
	if failed {
		t.Logf("%s:\n%s", what, out)
	}
}

// checkLacks reports each string found in out.
func checkLacks(t *testing.T, what, out string, unwanted ...string) {
	t.Helper()
	for _, u := range unwanted {
		if strings.Contains(out, u) {
			t.Errorf("%s contains %q:\n%s", what, u, out)
		}
	}
}

// TestNoInternalImports checks that no program or package under examples/
// imports a package under examples/internal: the examples are for copying
// into a module of your own, where those packages would not be there. The
// programs use only bokbok, ocap, the standard library and their own API
// packages (such as examples/echoapi and examples/kv/kvapi). It covers
// examples/chat too, with no exception: a program that goes back to
// examples/internal fails it.
func TestNoInternalImports(t *testing.T) {
	fset := token.NewFileSet()
	files := 0
	err := filepath.WalkDir(".", func(path string, d fs.DirEntry, err error) error {
		switch {
		case err != nil:
			return err
		case d.IsDir() && path == "internal":
			return filepath.SkipDir // the packages in question themselves
		case d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go"):
			return nil
		}
		f, err := parser.ParseFile(fset, path, nil, parser.ImportsOnly)
		if err != nil {
			return err
		}
		files++
		for _, imp := range f.Imports {
			if strings.Contains(imp.Path.Value, "/examples/internal") {
				t.Errorf("examples/%s imports %s: an example may not use examples/internal", filepath.ToSlash(path), imp.Path.Value)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if files < 10 {
		t.Fatalf("read %d Go files under examples/, want the programs' (is the test running in examples/?)", files)
	}
}

// runDemo runs the demo with args and returns its transcript.
func runDemo(t *testing.T, args ...string) string {
	t.Helper()
	bins := build(t, "demo")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	start := time.Now()
	out, err := exec.CommandContext(ctx, bins["demo"], args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(append([]string{"demo"}, args...), " "), err, out)
	}
	if d := time.Since(start); d > 25*time.Second { // it takes a second or two; a loaded machine under -race, several
		t.Errorf("the demo took %v", d)
	}
	return string(out)
}

// checkDemoCalls checks the part of the transcript that is the same in
// both modes: the calls, from the first to the shutdown.
func checkDemoCalls(t *testing.T, s string) {
	t.Helper()
	checkContains(t, "the demo's transcript", s,
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
		"client: connection closed: bokbok: connection closed: bokbok: connection shutting down\n",
		"server: OnClose: bokbok: connection closed: bokbok: connection shutting down\n",
		"server: stopped; Serve returned: bokbok: server closed",
		"== all done",
	)
	checkOrder(t, "the demo's transcript", s, `"step 3 done"`, `"step 2 done"`, `"step 1 done"`)
	checkDemoCapabilities(t, s)
}

// checkDemoCapabilities checks the part of the transcript where the
// client passes a reference to its listener actor to the server, which
// calls it back.
func checkDemoCapabilities(t *testing.T, s string) {
	t.Helper()
	checkContains(t, "the demo's transcript", s,
		"== capabilities: an actor reference passed across and called back\n"+
			"client: spawned ocap.Ref(actor *main.listener in vat \"client\")\n"+
			"client -> server: fetch [board], then subscribe [a reference to the listener], without waiting\n",
		"server -> client's listener: hear [sunny], hear [windy], hear [rain later], count []\n"+
			"client: the listener heard \"sunny\" (running in the client's vat)\n"+
			"client: the listener heard \"windy\" (running in the client's vat)\n"+
			"client: the listener heard \"rain later\" (running in the client's vat)\n"+
			"server -> client: 3 (the listener's own answer to count, passed on by the board)\n"+
			"client -> server: echo [a reference to the listener]\n"+
			"server -> client: ocap.Ref(actor *main.listener in vat \"client\"), the listener itself and not a proxy (== the client's reference: true)\n"+
			"== graceful shutdown\n",
	)
	// On the server, the listener is an import from the client's end of
	// the connection.
	checkMatches(t, "the demo's transcript", s,
		`(?m)^client -> server: fetch \[board\].*\nserver: the board got ocap\.Ref\(import 1 from 127\.0\.0\.1:\d+\), a reference to the client's listener\nserver -> client's listener: `,
	)
}

func TestDemo(t *testing.T) {
	s := runDemo(t)
	checkMatches(t, "the demo's transcript", s,
		`(?m)^server: listening on 127\.0\.0\.1:\d+ \(secure\)$`,
		`(?m)^client: connected to 127\.0\.0\.1:\d+, authenticated as user "alice"$`,
		`(?m)^server: accepted a connection from 127\.0\.0\.1:\d+, authenticated as user "alice"$`,
	)
	checkContains(t, "the demo's transcript", s,
		"made with bokbok.GenerateKey (printed as bokbok.Key(redacted))",
		`server: realm "bokbok-demo"; knows one user, "alice"`,
		"== clients the secure server refuses\n",
		`client as "alice" with a wrong key: refused: bokbok: authentication failed: the server refused user "alice" in realm "bokbok-demo" (unknown user or wrong key)`,
		`client as "mallory", no such user, with alice's key: refused: bokbok: authentication failed: the server refused user "mallory" in realm "bokbok-demo" (unknown user or wrong key)`,
		`client as "alice" with the right key, in realm "elsewhere": refused: bokbok: authentication failed: `,
		"insecure client: refused: bokbok: security mode mismatch: ",
		"(a wrong key and an unknown user get the same error",
	)
	checkDemoCalls(t, s)
	checkLacks(t, "the demo's transcript", s, "insecure: no user", "UNEXPECTED", "secure stream ended")
}

func TestDemoInsecure(t *testing.T) {
	s := runDemo(t, "-insecure")
	checkMatches(t, "the demo's transcript", s,
		`(?m)^server: listening on 127\.0\.0\.1:\d+ \(insecure\)$`,
		`(?m)^client: connected to 127\.0\.0\.1:\d+ \(insecure: no user\)$`,
		`(?m)^server: accepted a connection from 127\.0\.0\.1:\d+ \(insecure: no user\)$`,
	)
	checkDemoCalls(t, s)
	checkLacks(t, "the demo's transcript", s, "authenticated", "server refuses", "Key", "UNEXPECTED")
}

// process is a running example program.
type process struct {
	cmd     *exec.Cmd
	exited  chan struct{} // closed once the program has exited
	waitErr error         // set before exited is closed
}

// start starts p.cmd. The program is killed, if still running, when the
// test ends.
func (p *process) start(t *testing.T) {
	t.Helper()
	p.exited = make(chan struct{})
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		p.waitErr = p.cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-p.exited:
		default:
			p.cmd.Process.Kill()
			<-p.exited
		}
	})
}

// server is a running examples/server.
type server struct {
	process
	out *syncBuffer
}

// startServer starts examples/server with args and waits until it listens
// on sock.
func startServer(t *testing.T, bin, sock string, args ...string) *server {
	t.Helper()
	s := &server{out: new(syncBuffer)}
	s.cmd = exec.Command(bin, append([]string{"-addr", sock}, args...)...)
	s.cmd.Stdout = s.out
	s.cmd.Stderr = s.out
	s.start(t)
	waitFor(t, s.out, "listening on "+sock, s.exited)
	return s
}

// stop stops the server with SIGTERM and checks that it exits cleanly and
// removes its socket.
func (s *server) stop(t *testing.T, sock string) {
	t.Helper()
	s.stopWith(t, sock, syscall.SIGTERM)
}

// stopWith stops the server with sig and checks that it exits with status
// 0 and removes its socket.
func (s *server) stopWith(t *testing.T, sock string, sig os.Signal) {
	t.Helper()
	if err := s.cmd.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
	select {
	case <-s.exited:
	case <-time.After(15 * time.Second):
		t.Fatalf("the server did not exit after %v:\n%s", sig, s.out)
	}
	if s.waitErr != nil {
		t.Errorf("server: %v after %v, want exit status 0\n%s", s.waitErr, sig, s.out)
	}
	if _, err := os.Stat(sock); !os.IsNotExist(err) {
		t.Errorf("the server left its socket behind (stat: %v)", err)
	}
}

// runClient runs examples/client with args.
func runClient(t *testing.T, bin string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, args...).CombinedOutput()
	return string(out), err
}

// runGoodClient runs a client that should do everything it does, as
// "tester", and checks its output.
func runGoodClient(t *testing.T, bin string, srv *server, sock string, args ...string) {
	t.Helper()
	out, err := runClient(t, bin, append([]string{"-addr", sock, "-name", "tester"}, args...)...)
	if err != nil {
		t.Fatalf("client: %v\nclient output:\n%s\nserver output:\n%s", err, out, srv.out)
	}
	checkContains(t, "the client's output", out,
		"client: ",
		"connected to "+sock,
		"sent a notification",
		"add [2 3 4] -> 9",
		`upper [hello, bokbok] -> "HELLO, BOKBOK"`,
		`the server asks for my name; answering "tester"`,
		`greet [] -> "Hello, tester!"`,
		`divide [1 0] -> bokbok: remote error [bokbok.no_method]: no method "divide"`,
		`(a remote error of code "bokbok.no_method", matching bokbok.ErrNoMethod)`,
		"sleep [5000] -> ",
		"context deadline exceeded",
		`sleep [100] -> "slept 100ms"`,
		`sleep [200] -> "slept 200ms"`,
		`sleep [300] -> "slept 300ms"`,
		"shut down: bokbok: connection closed: bokbok: connection shutting down\n",
	)
	checkOrder(t, "the client's output", out, "the server asks for my name", `greet [] -> "Hello, tester!"`)
	checkLacks(t, "the client's output", out, "WARN", "error: ")
}

// runRefusedClient runs a client that must fail, and checks that it exits
// with the given status and a one-line error containing want.
func runRefusedClient(t *testing.T, bin string, status int, want string, args ...string) {
	t.Helper()
	out, err := runClient(t, bin, args...)
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != status {
		t.Errorf("client %s: got %v, want exit status %d\n%s", strings.Join(args, " "), err, status, out)
		return
	}
	if !strings.HasPrefix(out, "client: ") || !strings.Contains(out, want) || strings.Count(out, "\n") != 1 {
		t.Errorf("client %s: want one line of error containing %q, got:\n%s", strings.Join(args, " "), want, out)
	}
}

// checkServerLog checks the server's log of one client's visit.
func checkServerLog(t *testing.T, out string, opened string) {
	t.Helper()
	checkContains(t, "the server's output", out,
		"server: ",
		"connection #1 opened from a client on the Unix socket"+opened+"\n",
		"#1: notification: log [hello from tester]",
		"#1: request: add [2 3 4]",
		"#1: request: greet []",
		`#1: the client says its name is "tester"`,
		"#1: sleep 5000ms stopped early",
		"connection #1 closed: bokbok: connection closed: bokbok: connection shutting down\n",
		"shutting down",
		"stopped",
	)
	checkLacks(t, "the server's output", out, "connection #2")
}

// writeKey writes a new key's text form, with a newline as an editor
// would leave it, to a file in dir, and returns the file's name.
func writeKey(t *testing.T, dir, name string) string {
	t.Helper()
	key, err := bokbok.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	text, err := key.MarshalText()
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, name)
	if err := os.WriteFile(file, append(text, '\n'), 0o600); err != nil {
		t.Fatal(err)
	}
	return file
}

func TestServerAndClient(t *testing.T) {
	bins := build(t, "server", "client")
	dir := t.TempDir()
	sock := filepath.Join(dir, "bokbok.sock")
	keyFile := writeKey(t, dir, "tester.key")
	wrongKeyFile := writeKey(t, dir, "wrong.key")
	keyText, err := os.ReadFile(keyFile)
	if err != nil {
		t.Fatal(err)
	}

	srv := startServer(t, bins["server"], sock, "-user", "tester", "-key-file", keyFile)
	runGoodClient(t, bins["client"], srv, sock, "-user", "tester", "-key-file", keyFile)

	const authFailed = "bokbok: authentication failed"
	runRefusedClient(t, bins["client"], 1, authFailed, "-addr", sock, "-user", "tester", "-key-file", wrongKeyFile)
	runRefusedClient(t, bins["client"], 1, authFailed, "-addr", sock, "-user", "nobody", "-key-file", keyFile)
	runRefusedClient(t, bins["client"], 1, "bokbok: security mode mismatch", "-addr", sock, "-insecure")
	runRefusedClient(t, bins["client"], 2, "bokbok: bad key", "-addr", sock, "-user", "tester", "-key", "not-a-key")

	// The good client has gone; the server logs the close on its own time.
	waitFor(t, srv.out, "connection #1 closed", srv.exited)
	srv.stop(t, sock)
	out := srv.out.String()
	checkServerLog(t, out, `, authenticated as user "tester"`)
	checkContains(t, "the server's output", out, `listening on `+sock+` (secure: user "tester")`)
	checkLacks(t, "the server's output", out, strings.TrimSpace(string(keyText)), "generated")
}

// printedClientCommand finds the command that runs the client, which a
// server printed in out with a key it generated: prefix, such as "go run
// ./examples/client ", then its flags. It checks that they are -addr
// sock, -user demo and -key with a valid key, and returns them.
func printedClientCommand(t *testing.T, out, prefix, sock string) []string {
	t.Helper()
	i := strings.Index(out, prefix)
	if i < 0 {
		t.Fatalf("the server printed no client command:\n%s", out)
	}
	line, _, _ := strings.Cut(out[i+len(prefix):], "\n")
	args := strings.Fields(line)
	if want := []string{"-addr", sock, "-user", "demo", "-key"}; len(args) != 6 || strings.Join(args[:5], " ") != strings.Join(want, " ") {
		t.Fatalf("the client command is %q, want %q and a key", line, want)
	}
	if _, err := bokbok.ParseKey(args[5]); err != nil {
		t.Fatalf("the key in the client command: %v", err)
	}
	return args
}

// Without a key, the server makes one and says how to run the client
// with it.
func TestServerGeneratesKey(t *testing.T) {
	bins := build(t, "server", "client")
	sock := filepath.Join(t.TempDir(), "bokbok.sock")
	srv := startServer(t, bins["server"], sock)

	out := srv.out.String()
	args := printedClientCommand(t, out, "go run ./examples/client ", sock)
	checkContains(t, "the server's output", out, `no -key-file given: generated a key for user "demo"`)

	runGoodClient(t, bins["client"], srv, sock, args[2:]...)
	runRefusedClient(t, bins["client"], 2, "no key: give -key KEY or -key-file FILE", "-addr", sock)
	waitFor(t, srv.out, "connection #1 closed", srv.exited)
	srv.stop(t, sock)
	checkServerLog(t, srv.out.String(), `, authenticated as user "demo"`)
}

func TestServerAndClientInsecure(t *testing.T) {
	bins := build(t, "server", "client")
	dir := t.TempDir()
	sock := filepath.Join(dir, "bokbok.sock")
	keyFile := writeKey(t, dir, "demo.key")

	srv := startServer(t, bins["server"], sock, "-insecure")
	runGoodClient(t, bins["client"], srv, sock, "-insecure")
	runRefusedClient(t, bins["client"], 1, "bokbok: security mode mismatch", "-addr", sock, "-key-file", keyFile)

	waitFor(t, srv.out, "connection #1 closed", srv.exited)
	srv.stop(t, sock)
	out := srv.out.String()
	checkServerLog(t, out, " (insecure)")
	checkContains(t, "the server's output", out, "listening on "+sock+" (insecure)")
}

// Ctrl-C stops the server cleanly: it exits with status 0 and removes its
// socket, so that a server started again on the same path listens there.
func TestServerStopsOnCtrlC(t *testing.T) {
	bins := build(t, "server", "client")
	sock := filepath.Join(t.TempDir(), "bokbok.sock")

	srv := startServer(t, bins["server"], sock, "-insecure")
	srv.stopWith(t, sock, os.Interrupt)
	checkContains(t, "the server's output", srv.out.String(), "shutting down", "stopped")
	checkLacks(t, "the server's output", srv.out.String(), "stale", "address already in use")

	srv = startServer(t, bins["server"], sock, "-insecure")
	runGoodClient(t, bins["client"], srv, sock, "-insecure")
	waitFor(t, srv.out, "connection #1 closed", srv.exited)
	srv.stopWith(t, sock, os.Interrupt)
	checkServerLog(t, srv.out.String(), " (insecure)")
}

// runCarClient runs examples/carfactory/client with args and returns what
// it printed on standard output (the car's answer) and on standard error
// (its log).
func runCarClient(t *testing.T, bin string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err = cmd.Run()
	return o.String(), e.String(), err
}

// runGoodCarClient runs a client that orders a car and drives it, and
// checks what it prints.
func runGoodCarClient(t *testing.T, bin string, srv *server, sock, model, color string, args ...string) {
	t.Helper()
	args = append([]string{"-addr", sock, "-model", model, "-color", color}, args...)
	stdout, stderr, err := runCarClient(t, bin, args...)
	if err != nil {
		t.Fatalf("carfactory client %s: %v\nclient output:\n%s%s\nserver output:\n%s", strings.Join(args, " "), err, stdout, stderr, srv.out)
	}
	noise := "The " + color + " " + model + " goes vroom!"
	if stdout != noise+"\n" {
		t.Errorf("the client printed %q on standard output, want %q", stdout, noise+"\n")
	}
	checkContains(t, "the client's log", stderr,
		"client: ",
		"connected to "+sock,
		`sent fetch ["factory"], make-car [`+model+` `+color+`] and drive [], without waiting for an answer`,
		`drive -> "`+noise+`" (one round trip for all three messages)`,
		"shut down: bokbok: connection closed: bokbok: connection shutting down\n",
	)
	checkOrder(t, "the client's log", stderr, "connected to", "sent fetch", "drive -> ", "shut down")
	checkLacks(t, "the client's log", stderr, "WARN", "error: ")
}

// runRefusedCarClient runs a client that must fail, and checks that it
// exits with the given status and logs an error containing want.
func runRefusedCarClient(t *testing.T, bin string, status int, want string, args ...string) {
	t.Helper()
	stdout, stderr, err := runCarClient(t, bin, args...)
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != status {
		t.Errorf("carfactory client %s: got %v, want exit status %d\n%s%s", strings.Join(args, " "), err, status, stdout, stderr)
		return
	}
	if stdout != "" {
		t.Errorf("carfactory client %s: printed %q on standard output, want nothing", strings.Join(args, " "), stdout)
	}
	if !regexp.MustCompile(`(?m)^client: \d\d:\d\d:\d\d error: .*` + regexp.QuoteMeta(want)).MatchString(stderr) {
		t.Errorf("carfactory client %s: want an error line containing %q, got:\n%s", strings.Join(args, " "), want, stderr)
	}
}

func TestCarFactory(t *testing.T) {
	bins := build(t, "carfactory/server", "carfactory/client")
	client := bins["carfactory/client"]
	dir := t.TempDir()
	sock := filepath.Join(dir, "cars.sock")
	keyFile := writeKey(t, dir, "tester.key")
	wrongKeyFile := writeKey(t, dir, "wrong.key")
	auth := []string{"-user", "tester", "-key-file", keyFile}

	srv := startServer(t, bins["carfactory/server"], sock, auth...)
	runGoodCarClient(t, client, srv, sock, "Explorist", "blue", auth...)
	runGoodCarClient(t, client, srv, sock, "Roadster", "red", auth...)

	// An order the factory refuses breaks the promise for the car, and
	// with it the promise for the noise, which was sent to the car.
	runRefusedCarClient(t, client, 1, `the server says [carfactory.bad_order]: a car needs a model and a color, got model "" and color "blue"`,
		append([]string{"-addr", sock, "-model", ""}, auth...)...)
	runRefusedCarClient(t, client, 1, "bokbok: authentication failed",
		"-addr", sock, "-user", "tester", "-key-file", wrongKeyFile)
	runRefusedCarClient(t, client, 1, "bokbok: security mode mismatch", "-addr", sock, "-insecure")
	runRefusedCarClient(t, client, 2, "no key: give -key KEY or -key-file FILE", "-addr", sock)
	runRefusedCarClient(t, client, 1, "is the server running?", "-addr", filepath.Join(dir, "nothing.sock"), "-insecure")

	waitForCount(t, srv, "connection closed: ", 3)
	srv.stop(t, sock)
	out := srv.out.String()
	if n := strings.Count(out, "connection opened"); n != 3 {
		t.Errorf("the server logged %d connections opened, want 3 (the refused clients never open)", n)
	}
	checkContains(t, "the server's output", out,
		`listening on `+sock+` (secure: user "tester"); the factory is bound as "factory"`,
		`connection opened, authenticated as user "tester"`,
		"factory: make-car [Explorist blue]: made car #1\n",
		`car #1: drive -> "The blue Explorist goes vroom!"`,
		"factory: make-car [Roadster red]: made car #2\n",
		`car #2: drive -> "The red Roadster goes vroom!"`,
		"factory: make-car [ blue]: refused\n",
		"connection closed: bokbok: connection closed: bokbok: connection shutting down\n",
		"shutting down",
		"stopped",
	)
	checkOrder(t, "the server's output", out, "made car #1", "car #1: drive", "made car #2", "car #2: drive")
	checkLacks(t, "the server's output", out, "generated", "WARN", "ERROR")
}

// Without a key, the server makes one and says how to run the client
// with it.
func TestCarFactoryGeneratesKey(t *testing.T) {
	bins := build(t, "carfactory/server", "carfactory/client")
	sock := filepath.Join(t.TempDir(), "cars.sock")
	srv := startServer(t, bins["carfactory/server"], sock)

	args := printedClientCommand(t, srv.out.String(), "go run ./examples/carfactory/client ", sock)
	runGoodCarClient(t, bins["carfactory/client"], srv, sock, "Explorist", "blue", args[2:]...)
	runRefusedCarClient(t, bins["carfactory/client"], 2, "no key: give -key KEY or -key-file FILE", "-addr", sock)
	waitForCount(t, srv, "connection closed: ", 1)
	srv.stop(t, sock)
	checkContains(t, "the server's output", srv.out.String(),
		`no -key-file given: generated a key for user "demo"`,
		`connection opened, authenticated as user "demo"`,
		`car #1: drive -> "The blue Explorist goes vroom!"`,
	)
}

func TestCarFactoryInsecure(t *testing.T) {
	bins := build(t, "carfactory/server", "carfactory/client")
	dir := t.TempDir()
	sock := filepath.Join(dir, "cars.sock")
	keyFile := writeKey(t, dir, "demo.key")

	// A socket left behind by a server that was killed: nothing answers
	// on it, and the server says so instead of listening.
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	ln.Close()
	runFailingServer(t, bins["carfactory/server"], "the socket file "+sock+" is stale", "-addr", sock, "-insecure")
	if err := os.Remove(sock); err != nil {
		t.Fatal(err)
	}

	srv := startServer(t, bins["carfactory/server"], sock, "-insecure")
	runGoodCarClient(t, bins["carfactory/client"], srv, sock, "Explorist", "blue", "-insecure")
	runRefusedCarClient(t, bins["carfactory/client"], 1, "bokbok: security mode mismatch", "-addr", sock, "-key-file", keyFile)

	// A second server on the same socket stops, and leaves the first
	// one's socket alone.
	runFailingServer(t, bins["carfactory/server"], "a server is listening on "+sock, "-addr", sock, "-insecure")
	runGoodCarClient(t, bins["carfactory/client"], srv, sock, "Roadster", "red", "-insecure")

	// The refused client and the second server's probe never opened.
	waitForCount(t, srv, "connection closed: ", 2)
	srv.stop(t, sock)
	out := srv.out.String()
	if n := strings.Count(out, "connection opened"); n != 2 {
		t.Errorf("the server logged %d connections opened, want 2", n)
	}
	checkContains(t, "the server's output", out,
		`listening on `+sock+` (insecure); the factory is bound as "factory"`,
		"connection opened (insecure)",
		`car #1: drive -> "The blue Explorist goes vroom!"`,
		`car #2: drive -> "The red Roadster goes vroom!"`,
	)
}

// runFailingServer runs a server that must fail to start: it must exit
// with status 1, logging an error that contains want.
func runFailingServer(t *testing.T, bin, want string, args ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, args...).CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 1 || !strings.Contains(string(out), want) {
		t.Errorf("server %s: got %v, want exit status 1 and %q:\n%s", strings.Join(args, " "), err, want, out)
	}
}

// waitForCount polls until the server's output contains s n times.
func waitForCount(t *testing.T, srv *server, s string, n int) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for strings.Count(srv.out.String(), s) < n {
		select {
		case <-srv.exited:
			t.Fatalf("the server exited before printing %q %d times:\n%s", s, n, srv.out)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %q %d times:\n%s", s, n, srv.out)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
