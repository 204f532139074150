package main

// These tests build the bokbok binary once and run it as a user would:
// real processes, real sockets, real signals. The binary is built with
// -race when the tests are, so a data race in serve or call fails them
// too (the race detector makes the process exit non-zero).

import (
	"bufio"
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/bokbok-go/bokbok"

	"github.com/bokbok-go/bokbok/internal/testutil"
)

// cliRace is set by cli_race_test.go in a -race build.
var cliRace bool

var (
	cliBuildOnce sync.Once
	cliBinPath   string
	cliBuildErr  error
)

// cliBinary returns the path of the bokbok binary, building it the first
// time. The directory it lives in is left behind when the tests end (there
// is no TestMain to remove it), so each build first removes those that
// earlier runs left more than an hour ago.
func cliBinary(t *testing.T) string {
	t.Helper()
	cliBuildOnce.Do(func() {
		old, _ := filepath.Glob(filepath.Join(os.TempDir(), "bokbok-cli-test-*"))
		for _, dir := range old {
			if st, err := os.Stat(dir); err == nil && time.Since(st.ModTime()) > time.Hour {
				os.RemoveAll(dir)
			}
		}
		dir, err := os.MkdirTemp("", "bokbok-cli-test-")
		if err != nil {
			cliBuildErr = err
			return
		}
		goTool, err := exec.LookPath("go")
		if err != nil {
			goTool = filepath.Join(runtime.GOROOT(), "bin", "go")
		}
		bin := filepath.Join(dir, "bokbok")
		args := []string{"build", "-o", bin}
		if cliRace {
			args = append(args, "-race")
		}
		cmd := exec.Command(goTool, append(args, ".")...)
		if out, err := cmd.CombinedOutput(); err != nil {
			cliBuildErr = fmt.Errorf("go %s: %v\n%s", strings.Join(args, " "), err, out)
			return
		}
		cliBinPath = bin
	})
	if cliBuildErr != nil {
		t.Fatal(cliBuildErr)
	}
	return cliBinPath
}

// cliEnv is the environment of the binary: the race detector's default
// one-second pause at exit would make each run take a second.
func cliEnv() []string {
	return append(os.Environ(), "GORACE="+strings.TrimSpace(os.Getenv("GORACE")+" atexit_sleep_ms=20"))
}

// cliResult is how a finished run of the binary went.
type cliResult struct {
	code           int
	stdout, stderr string
	took           time.Duration
}

// cliRun runs the binary with args and stdin and waits for it (30 s at
// most).
func cliRun(t *testing.T, stdin string, args ...string) cliResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, cliBinary(t), args...)
	cmd.Stdin = strings.NewReader(stdin)
	cmd.Env = cliEnv()
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	start := time.Now()
	err := cmd.Run()
	r := cliResult{stdout: out.String(), stderr: errOut.String(), took: time.Since(start)}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee) && ee.Exited():
		r.code = ee.ExitCode()
	default:
		t.Fatalf("bokbok %s: %v\nstderr:\n%s", strings.Join(args, " "), err, r.stderr)
	}
	t.Logf("bokbok %s\n=> exit %d in %v\n[stdout]\n%s[stderr]\n%s", strings.Join(args, " "), r.code, r.took.Round(time.Millisecond), r.stdout, r.stderr)
	if strings.Contains(r.stderr, "DATA RACE") {
		t.Errorf("the race detector reported a race in bokbok %s", strings.Join(args, " "))
	}
	return r
}

// want checks the exit code and that stdout and stderr contain the given
// strings.
func (r cliResult) want(t *testing.T, code int, inStdout, inStderr []string) {
	t.Helper()
	if r.code != code {
		t.Errorf("exit code %d, want %d", r.code, code)
	}
	for _, s := range inStdout {
		if !strings.Contains(r.stdout, s) {
			t.Errorf("stdout lacks %q:\n%s", s, r.stdout)
		}
	}
	for _, s := range inStderr {
		if !strings.Contains(r.stderr, s) {
			t.Errorf("stderr lacks %q:\n%s", s, r.stderr)
		}
	}
}

// wantOneLine checks that the command failed with code, printed nothing on
// stdout and exactly one line on stderr, containing each of subs.
func (r cliResult) wantOneLine(t *testing.T, code int, subs ...string) {
	t.Helper()
	r.want(t, code, nil, subs)
	if r.stdout != "" {
		t.Errorf("stdout should be empty, got %q", r.stdout)
	}
	if strings.Count(r.stderr, "\n") != 1 || !strings.HasSuffix(r.stderr, "\n") {
		t.Errorf("want one line on stderr, got %q", r.stderr)
	}
}

// cliLog is a goroutine-safe buffer for a server's stderr.
type cliLog struct{ testutil.SyncBuffer }

// waitFor waits until the log contains s, for 10 s at most.
func (l *cliLog) waitFor(t *testing.T, s string) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !strings.Contains(l.String(), s); {
		if time.Now().After(deadline) {
			t.Fatalf("the server never logged %q; its log:\n%s", s, l.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// cliServer is a running "bokbok serve".
type cliServer struct {
	addr   string // as printed
	cmd    *exec.Cmd
	log    *cliLog
	exited chan struct{}
	err    error // cmd.Wait's, once exited is closed
}

// cliServe starts "bokbok serve args...", waits for the line saying where
// it listens, and stops it (if still running) when the test ends.
func cliServe(t *testing.T, args ...string) *cliServer {
	t.Helper()
	s := &cliServer{cmd: exec.Command(cliBinary(t), append([]string{"serve"}, args...)...), log: &cliLog{}, exited: make(chan struct{})}
	s.cmd.Stderr = s.log
	s.cmd.Env = cliEnv()
	stdout, err := s.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		if sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
		io.Copy(io.Discard, stdout)
		s.err = s.cmd.Wait()
		close(s.exited)
	}()
	t.Cleanup(func() {
		s.cmd.Process.Kill()
		<-s.exited
		t.Logf("bokbok serve %s: log:\n%s", strings.Join(args, " "), s.log.String())
		if strings.Contains(s.log.String(), "DATA RACE") {
			t.Errorf("the race detector reported a race in bokbok serve")
		}
	})
	select {
	case line, ok := <-lines:
		if !ok {
			<-s.exited
			t.Fatalf("bokbok serve %s printed no address (%v); log:\n%s", strings.Join(args, " "), s.err, s.log.String())
		}
		const prefix = "bokbok serve: listening on "
		rest, found := strings.CutPrefix(line, prefix)
		addr, _, found2 := strings.Cut(rest, " (")
		if !found || !found2 {
			t.Fatalf("first line %q, want %q ADDR (MODE)", line, prefix)
		}
		s.addr = addr
		t.Logf("bokbok serve %s: %s", strings.Join(args, " "), line)
	case <-time.After(20 * time.Second):
		t.Fatalf("bokbok serve %s printed no address within 20s; log:\n%s", strings.Join(args, " "), s.log.String())
	}
	return s
}

// stop sends sig and returns the exit code.
func (s *cliServer) stop(t *testing.T, sig os.Signal) int {
	t.Helper()
	if err := s.cmd.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
	select {
	case <-s.exited:
	case <-time.After(15 * time.Second):
		t.Fatalf("bokbok serve did not stop within 15s of %v; log:\n%s", sig, s.log.String())
	}
	return s.cmd.ProcessState.ExitCode()
}

// cliWrite writes a file in a temporary directory and returns its path.
func cliWrite(t *testing.T, name, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// cliKey returns a new key and its text form.
func cliKey(t *testing.T) (bokbok.Key, string) {
	t.Helper()
	k, err := bokbok.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	text, _ := k.MarshalText()
	return k, string(text)
}

func TestCLIKeygen(t *testing.T) {
	seen := map[string]bool{}
	for range 2 {
		r := cliRun(t, "", "keygen")
		r.want(t, exitOK, nil, nil)
		if r.stderr != "" {
			t.Errorf("stderr: %q", r.stderr)
		}
		line, ok := strings.CutSuffix(r.stdout, "\n")
		if !ok || strings.Contains(line, "\n") {
			t.Fatalf("want one line, got %q", r.stdout)
		}
		if _, err := bokbok.ParseKey(line); err != nil {
			t.Errorf("keygen printed %q: %v", line, err)
		}
		if seen[line] {
			t.Errorf("keygen printed %q twice", line)
		}
		seen[line] = true
	}
	cliRun(t, "", "keygen", "extra").wantOneLineOrUsage(t, exitUsage, "takes no arguments")
}

// wantOneLineOrUsage checks a usage error: code, and stderr containing
// subs and a pointer to --help.
func (r cliResult) wantOneLineOrUsage(t *testing.T, code int, subs ...string) {
	t.Helper()
	r.want(t, code, nil, append(subs, "--help"))
	if r.stdout != "" {
		t.Errorf("stdout should be empty, got %q", r.stdout)
	}
}

func TestCLIPassphrase(t *testing.T) {
	const pass = "correct horse battery staple"
	want, _ := bokbok.PassphraseToKey(pass, "test-realm", "alice").MarshalText()

	r := cliRun(t, pass+"\nsecond line is ignored\n", "passphrase", "--realm", "test-realm", "--user", "alice")
	r.want(t, exitOK, []string{string(want) + "\n"}, []string{"bokbok keygen", "offline"})
	if r.stdout != string(want)+"\n" {
		t.Errorf("stdout %q, want exactly the key and a newline", r.stdout)
	}

	// Flags after nothing, a CRLF line ending, no final newline: same key.
	for _, in := range []string{pass + "\r\n", pass} {
		r = cliRun(t, in, "passphrase", "--user=alice", "--realm=test-realm")
		r.want(t, exitOK, []string{string(want)}, nil)
	}

	// Another realm or user: another key.
	r = cliRun(t, pass+"\n", "passphrase", "--user", "alice", "--realm", "other")
	if r.code != exitOK || strings.Contains(r.stdout, string(want)) {
		t.Errorf("realm other: exit %d, stdout %q; want another key", r.code, r.stdout)
	}

	// A short passphrase works but gets a second warning.
	cliRun(t, "short\n", "passphrase", "--user", "alice").want(t, exitOK, nil, []string{"only 5 characters"})

	cliRun(t, "\n", "passphrase", "--user", "alice").wantOneLine(t, exitUsage, "empty passphrase")
	cliRun(t, "", "passphrase", "--user", "alice").wantOneLine(t, exitUsage, "empty passphrase")
	cliRun(t, pass+"\n", "passphrase", "--realm", "x").wantOneLine(t, exitUsage, "--user is required")
	cliRun(t, pass+"\n", "passphrase", "--user", strings.Repeat("u", 256)).wantOneLine(t, exitUsage, "--user", "255")
}

// cliSecure is a secure "bokbok serve" with users alice and bob in realm
// test-realm.
type cliSecure struct {
	*cliServer
	aliceKey, bobKey string // key files
	aliceText        string // alice's key's text form
}

func startSecure(t *testing.T) *cliSecure {
	_, alice := cliKey(t)
	_, bob := cliKey(t)
	keys := cliWrite(t, "keys.txt", fmt.Sprintf("# test users\n\nalice %s\n  bob\t%s  \n", alice, bob))
	s := &cliSecure{
		cliServer: cliServe(t, "--listen", "127.0.0.1:0", "--keys", keys, "--realm", "test-realm"),
		aliceKey:  cliWrite(t, "alice.key", alice+"\n"),
		bobKey:    cliWrite(t, "bob.key", bob+"\n"),
		aliceText: alice,
	}
	if !strings.HasPrefix(s.addr, "tcp://127.0.0.1:") || strings.HasSuffix(s.addr, ":0") {
		t.Fatalf("serve printed address %q, want tcp://127.0.0.1:PORT with the real port", s.addr)
	}
	return s
}

// call runs "bokbok call ADDR MESSAGE" as alice, with more flags.
func (s *cliSecure) call(t *testing.T, msg string, more ...string) cliResult {
	t.Helper()
	args := append([]string{"call", s.addr, msg, "--user", "alice", "--key-file", s.aliceKey, "--realm", "test-realm"}, more...)
	return cliRun(t, "", args...)
}

func compactJSON(t *testing.T, s string) string {
	t.Helper()
	var b bytes.Buffer
	if err := json.Compact(&b, []byte(s)); err != nil {
		t.Fatalf("not JSON: %v: %q", err, s)
	}
	return b.String()
}

func TestCLIServeSecure(t *testing.T) {
	s := startSecure(t)

	t.Run("echo", func(t *testing.T) {
		// Keys sorted, as encoding/json prints them; integers stay
		// integers, floats floats.
		msg := `{"a": [1, -3, 2.5, 1.0, "x", null, true, 18446744073709551615, {"b": "c", "d": []}], "z": {}}`
		r := s.call(t, `{"method": "echo", "params": `+msg+`}`)
		r.want(t, exitOK, nil, nil)
		if got, want := compactJSON(t, r.stdout), compactJSON(t, msg); got != want {
			t.Errorf("echo gave %s, want %s", got, want)
		}
		if !strings.Contains(r.stdout, "\n  ") {
			t.Errorf("reply not indented: %q", r.stdout)
		}
	})
	t.Run("ping", func(t *testing.T) {
		r := s.call(t, `"ping"`)
		r.want(t, exitOK, nil, nil)
		if r.stdout != "\"pong\"\n" {
			t.Errorf("stdout %q", r.stdout)
		}
	})
	t.Run("info", func(t *testing.T) {
		r := s.call(t, `{"method": "info"}`)
		r.want(t, exitOK, nil, nil)
		var info struct {
			User, Remote, Realm, Time string
			Secure                    bool
		}
		if err := json.Unmarshal([]byte(r.stdout), &info); err != nil {
			t.Fatal(err)
		}
		if info.User != "alice" || !info.Secure || info.Realm != "test-realm" || !strings.HasPrefix(info.Remote, "127.0.0.1:") {
			t.Errorf("info: %+v", info)
		}
		if at, err := time.Parse(time.RFC3339Nano, info.Time); err != nil || time.Since(at).Abs() > time.Minute {
			t.Errorf("info time %q: %v", info.Time, err)
		}
	})
	t.Run("stdin", func(t *testing.T) {
		r := cliRun(t, `{"method": "echo", "params": "from stdin"}`, "call", s.addr, "-", "--user", "bob", "--key-file", s.bobKey, "--realm", "test-realm")
		r.want(t, exitOK, []string{`"from stdin"`}, nil)
	})
	t.Run("sleep", func(t *testing.T) {
		r := s.call(t, `{"method": "sleep", "params": 20}`)
		r.want(t, exitOK, nil, nil)
		if got := compactJSON(t, r.stdout); got != `{"slept_ms":20}` {
			t.Errorf("sleep replied %s", got)
		}
	})
	t.Run("sleep past --timeout", func(t *testing.T) {
		r := s.call(t, `{"method": "sleep", "params": 20000}`, "--timeout", "300ms")
		r.wantOneLine(t, exitConnect, "no reply within 300ms", "--timeout")
		if r.took > 15*time.Second { // well short of the sleep; a child process on a loaded machine starts slowly
			t.Errorf("took %v", r.took)
		}
	})
	t.Run("error", func(t *testing.T) {
		r := s.call(t, `{"method": "error", "params": {"code": "teapot", "message": "short and stout"}}`)
		r.wantOneLine(t, exitRemote, "teapot", "short and stout")
	})
	t.Run("no such method", func(t *testing.T) {
		r := s.call(t, `{"method": "fly"}`)
		r.wantOneLine(t, exitRemote, "[bokbok.no_method]", `"fly"`, "this server has echo, ping, info, metadata, sleep, error")
	})
	t.Run("bad request", func(t *testing.T) {
		s.call(t, `[1, 2]`).wantOneLine(t, exitRemote, "[bokbok.bad_request]")
		s.call(t, `{"method": "echo", "parms": 1}`).wantOneLine(t, exitRemote, "[bokbok.bad_request]", `"parms"`)
		s.call(t, `{"method": "sleep", "params": "soon"}`).wantOneLine(t, exitRemote, "[bokbok.bad_request]", `sleep: request field "params"`, "string into float64")
	})
	t.Run("invalid JSON", func(t *testing.T) {
		s.call(t, `{"method": `).wantOneLine(t, exitUsage, "not valid JSON")
		s.call(t, `{method: "ping"}`).wantOneLine(t, exitUsage, "not valid JSON", "invalid character")
		s.call(t, `"ping" "pong"`).wantOneLine(t, exitUsage, "not valid JSON", "more follows")
	})
	t.Run("wrong key", func(t *testing.T) {
		r := cliRun(t, "", "call", s.addr, `"ping"`, "--user", "alice", "--key-file", s.bobKey, "--realm", "test-realm")
		r.wantOneLine(t, exitConnect, "authentication failed", "--user", "--key-file", "--realm")
	})
	t.Run("unknown user", func(t *testing.T) {
		r := cliRun(t, "", "call", s.addr, `"ping"`, "--user", "mallory", "--key-file", s.aliceKey, "--realm", "test-realm")
		r.wantOneLine(t, exitConnect, "authentication failed", "--user", "--key-file", "--realm")
	})
	t.Run("wrong realm", func(t *testing.T) {
		r := cliRun(t, "", "call", s.addr, `"ping"`, "--user", "alice", "--key-file", s.aliceKey)
		r.wantOneLine(t, exitConnect, "authentication failed", "--realm")
	})
	t.Run("insecure client", func(t *testing.T) {
		r := cliRun(t, "", "call", s.addr, `"ping"`, "--insecure")
		r.wantOneLine(t, exitConnect, "is secure", "--user", "--key-file", "drop --insecure")
	})
	t.Run("notification", func(t *testing.T) {
		key, err := bokbok.ParseKey(s.aliceText)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		conn, err := bokbok.Dial(ctx, s.addr, &bokbok.Config{Key: &key, User: "alice", Realm: "test-realm"})
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		if err := conn.Notify(ctx, map[string]any{"method": "hello", "params": "noted"}); err != nil {
			t.Fatal(err)
		}
		s.log.waitFor(t, `noted`)
	})

	log := s.log.String()
	for _, want := range []string{"connection opened", "user=alice", "connection refused", "authentication failed", `user \"mallory\"`, "security mode mismatch", "msg=notification"} {
		if !strings.Contains(log, want) {
			t.Errorf("the server's log lacks %q", want)
		}
	}
	if strings.Contains(log, s.aliceText) {
		t.Errorf("the server's log shows alice's key")
	}
	if code := s.stop(t, syscall.SIGTERM); code != 0 {
		t.Errorf("serve exited with %d after SIGTERM", code)
	}
}

func TestCLIServeInsecureUnix(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "bokbok.sock")
	s := cliServe(t, "--listen", sock, "--insecure")
	if s.addr != "unix://"+sock {
		t.Errorf("serve printed %q, want unix://%s", s.addr, sock)
	}
	for _, addr := range []string{sock, s.addr} {
		r := cliRun(t, "", "call", addr, `{"method": "info"}`, "--insecure")
		r.want(t, exitOK, []string{`"secure": false`, `"user": ""`}, nil)
	}
	r := cliRun(t, "", "call", sock, `{"method": "echo", "params": {"k": [1.5, "v"]}}`, "--insecure")
	if r.code != exitOK || compactJSON(t, r.stdout) != `{"k":[1.5,"v"]}` {
		t.Errorf("echo: exit %d, stdout %q", r.code, r.stdout)
	}

	_, text := cliKey(t)
	key := cliWrite(t, "k", text)
	r = cliRun(t, "", "call", sock, `"ping"`, "--user", "alice", "--key-file", key)
	r.wantOneLine(t, exitConnect, "is insecure", "pass --insecure")
	s.log.waitFor(t, "this server is insecure")

	if code := s.stop(t, os.Interrupt); code != 0 {
		t.Errorf("serve exited with %d after SIGINT", code)
	}
	if _, err := os.Stat(sock); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the socket file is still there after serve stopped: %v", err)
	}
}

// SIGTERM lets a request in flight finish, then serve exits 0. A sleep
// in flight learns of the shutdown and answers at once, so the drain does
// not wait for it.
func TestCLIServeSIGTERMGraceful(t *testing.T) {
	s := cliServe(t, "--listen", "127.0.0.1:0", "--insecure", "--verbose", "--grace", "1m")
	done := make(chan cliResult, 1)
	go func() { done <- cliRun(t, "", "call", s.addr, `{"method": "sleep", "params": 600000}`, "--insecure") }()
	s.log.waitFor(t, "msg=request") // the handler has the request
	if code := s.stop(t, syscall.SIGTERM); code != 0 {
		t.Errorf("serve exited with %d after SIGTERM", code)
	}
	r := <-done
	r.want(t, exitOK, []string{`"cut_short": "the server is shutting down"`, `"slept_ms"`}, nil)
	for _, want := range []string{"msg=stopping", "msg=stopped"} {
		if !strings.Contains(s.log.String(), want) {
			t.Errorf("the log lacks %q", want)
		}
	}
	if strings.Contains(s.log.String(), "grace period over") {
		t.Errorf("the shutdown waited for its grace period")
	}
	// Nothing listens any more.
	cliRun(t, "", "call", s.addr, `"ping"`, "--insecure").wantOneLine(t, exitConnect, "connection refused")
}

// The grace period bounds how long serve waits for a drain to finish;
// here a peer that opened a connection and never answers the server's
// GOAWAY holds it.
func TestCLIServeGraceOver(t *testing.T) {
	s := cliServe(t, "--listen", "127.0.0.1:0", "--insecure", "--grace", "200ms", "--verbose")
	nc, err := net.Dial("tcp", strings.TrimPrefix(s.addr, "tcp://"))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	// An insecure preamble and SETTINGS frame (PROTOCOL.md, section 14).
	opening, _ := hex.DecodeString("626f6b626f6b0100" +
		"010000380000000083b06d61785f6d6573736167655f73697a65ce02000000ad" +
		"6e6f746966795f77696e646f77cd0100ac6d61785f68616e646c657273cd0100")
	if _, err := nc.Write(opening); err != nil {
		t.Fatal(err)
	}
	s.log.waitFor(t, "connection opened")
	start := time.Now()
	if code := s.stop(t, syscall.SIGTERM); code != 0 {
		t.Errorf("serve exited with %d after SIGTERM", code)
	}
	if took := time.Since(start); took > 15*time.Second { // generous: a loaded machine
		t.Errorf("serve took %v to stop with --grace 200ms", took)
	}
	s.log.waitFor(t, "grace period over")
}

func TestCLIServeKeysFileErrors(t *testing.T) {
	_, k1 := cliKey(t)
	_, k2 := cliKey(t)
	_, k3 := cliKey(t)
	for _, tc := range []struct {
		name, content string
		want          []string
	}{
		{"one field", "# ok\nalice " + k1 + "\nbob\n", []string{"keys.txt:3:", "two fields", "got 1 field"}},
		{"three fields", "alice " + k1 + " extra\n", []string{"keys.txt:1:", "got 3 fields"}},
		{"bad key", "\n\nalice not-a-key\n", []string{"keys.txt:3:", `user "alice"`, "not a key", "bokbok keygen"}},
		{"short key", "alice " + k1[:40] + "\n", []string{"keys.txt:1:", "not a key"}},
		{"same key twice", "alice " + k1 + "\nbob " + k2 + "\nalice " + k1 + "\n", []string{"keys.txt:3:", `same key again for user "alice"`, "line 1"}},
		{"three keys", "alice " + k1 + "\nalice " + k2 + "\nalice " + k3 + "\n", []string{"keys.txt:3:", `more than 2 keys for user "alice"`, "line 1"}},
		{"several", "alice\nbob x\n", []string{"keys.txt:1:", "keys.txt:2:"}},
		{"no users", "# nobody yet\n\n", []string{"no users", "--insecure"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := cliWrite(t, "keys.txt", tc.content)
			r := cliRun(t, "", "serve", "--listen", "127.0.0.1:0", "--keys", path)
			r.want(t, exitUsage, nil, tc.want)
			if r.stdout != "" {
				t.Errorf("serve printed %q on stdout", r.stdout)
			}
			for _, k := range []string{k1, k2, k3} {
				if strings.Contains(r.stderr, k) {
					t.Errorf("the error shows a key")
				}
			}
		})
	}
	t.Run("missing file", func(t *testing.T) {
		r := cliRun(t, "", "serve", "--listen", "127.0.0.1:0", "--keys", filepath.Join(t.TempDir(), "nope.txt"))
		r.wantOneLine(t, exitUsage, "--keys", "nope.txt")
	})
}

func TestCLIServeUsageErrors(t *testing.T) {
	keys := cliWrite(t, "keys.txt", "")
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{"--listen", "127.0.0.1:0"}, []string{"--keys FILE", "--insecure"}},
		{[]string{"--listen", "127.0.0.1:0", "--insecure", "--keys", keys}, []string{"--keys and --insecure cannot be combined"}},
		{[]string{"--insecure"}, []string{"--listen ADDR is required"}},
		{[]string{"--insecure", "--listen", "nowhere"}, []string{"--listen", "ambiguous"}},
		{[]string{"--insecure", "--listen", "127.0.0.1:0", "--grace", "-1s"}, []string{"--grace"}},
	} {
		cliRun(t, "", append([]string{"serve"}, tc.args...)...).wantOneLine(t, exitUsage, tc.want...)
	}
	cliRun(t, "", "serve", "--bogus").wantOneLineOrUsage(t, exitUsage, "bogus")
	cliRun(t, "", "serve", "extra", "--insecure", "--listen", "127.0.0.1:0").wantOneLineOrUsage(t, exitUsage, "takes no arguments")

	// An address in use: exit 2.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	cliRun(t, "", "serve", "--insecure", "--listen", ln.Addr().String()).wantOneLine(t, exitConnect, "cannot listen", "another port")
}

func TestCLICallUsageAndConnectErrors(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().String()
	ln.Close()
	_, text := cliKey(t)
	key := cliWrite(t, "alice.key", text)

	cliRun(t, "", "call", closed, `"ping"`, "--insecure").wantOneLine(t, exitConnect, "connection refused", "is the server running")
	cliRun(t, "", "call", filepath.Join(t.TempDir(), "none.sock"), `"ping"`, "--insecure").wantOneLine(t, exitConnect, "no such socket file")
	cliRun(t, "", "call", "nowhere", `"ping"`, "--insecure").wantOneLine(t, exitUsage, "ADDR", "ambiguous")
	cliRun(t, "", "call", closed, `"ping"`).wantOneLine(t, exitUsage, "--user", "--key-file", "--insecure")
	cliRun(t, "", "call", closed, `"ping"`, "--insecure", "--user", "alice", "--key-file", key).wantOneLine(t, exitUsage, "--insecure cannot be combined")
	cliRun(t, "", "call", closed, `"ping"`, "--user", "alice", "--key-file", key+".missing").wantOneLine(t, exitUsage, "--key-file")
	cliRun(t, "", "call", closed, "--insecure").wantOneLineOrUsage(t, exitUsage, "want 2 argument(s)")
	cliRun(t, "", "call", closed, `"ping"`, "--insecure", "--timeout").wantOneLineOrUsage(t, exitUsage, "timeout")
	// Invalid JSON is found before connecting.
	cliRun(t, "", "call", closed, `{`, "--insecure").wantOneLine(t, exitUsage, "not valid JSON")
	cliRun(t, "", "call", closed, `-`, "--insecure").wantOneLine(t, exitUsage, "standard input", "empty")

	// Something that does not speak bokbok (accepts, says nothing): the
	// handshake times out within --timeout.
	silent, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	go func() {
		for {
			c, err := silent.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	r := cliRun(t, "", "call", silent.Addr().String(), `"ping"`, "--insecure", "--timeout", "300ms")
	r.wantOneLine(t, exitConnect, "300ms", "--timeout")
}

func TestCLIHelp(t *testing.T) {
	for _, cmd := range []string{"keygen", "passphrase", "serve", "call", "version"} {
		for _, args := range [][]string{{cmd, "--help"}, {cmd, "-h"}, {"help", cmd}} {
			r := cliRun(t, "", args...)
			r.want(t, exitOK, nil, []string{"Usage: bokbok " + cmd})
			// A command with flags lists them; one without has no empty section.
			if hasFlags := cmd != "keygen" && cmd != "version"; hasFlags != strings.Contains(r.stderr, "Flags:") {
				t.Errorf("bokbok %s: a Flags: section %v, want %v:\n%s", strings.Join(args, " "), !hasFlags, hasFlags, r.stderr)
			}
		}
	}
	v := cliRun(t, "", "version")
	v.want(t, exitOK, []string{"bokbok ", "go1.", "protocol 1, headers 1"}, nil)
	// The flags are spelled as the errors spell them.
	r := cliRun(t, "", "serve", "--help")
	r.want(t, exitOK, nil, []string{"--listen ADDR", "--keys FILE", "--insecure", "--realm REALM", "echo", "info", "sleep", "metadata", "bokbok.no_method", "bokbok.bad_request", "Exit status"})
	r = cliRun(t, "", "call", "--help")
	r.want(t, exitOK, nil, []string{"--user NAME", "--key-file FILE", "--timeout D", "--method NAME", "--meta KEY=VALUE", "--notify", "metadata: KEY=VALUE", "Exit status"})
}
