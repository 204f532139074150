package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"io"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bokbok-go/bokbok"
	"go.uber.org/goleak"
)

// Helpers shared by the ping and load tests.

// plPeer is an in-process bokbok server for the ping and load tests.
type plPeer struct {
	addr    string
	srv     *bokbok.Server
	keyFile string // secure: a file with alice's key
}

// plEcho answers {"method":"echo","params":X} with X, as "bokbok serve"
// does, and anything else with an error of code test.no_method.
func plEcho(ctx context.Context, req *bokbok.Request) (any, error) {
	var m map[string]any
	if err := req.Decode(&m); err != nil {
		return nil, err
	}
	if m["method"] == "echo" {
		return m["params"], nil
	}
	return nil, bokbok.Errorf("test.no_method", "no method %v", m["method"])
}

// plNoLeaks makes the test fail if it leaves goroutines behind. Call it
// first, so that its check runs after every other cleanup.
func plNoLeaks(t *testing.T) {
	opt := goleak.IgnoreCurrent()
	t.Cleanup(func() { goleak.VerifyNone(t, opt) })
}

// plStart starts a server on 127.0.0.1:0 serving h (plEcho if nil). A
// secure server knows user alice (realm "test-realm" if realm is set) and
// writes her key to a temporary file.
func plStart(t *testing.T, secure bool, h bokbok.HandlerFunc) *plPeer {
	t.Helper()
	if h == nil {
		h = plEcho
	}
	p := &plPeer{srv: &bokbok.Server{Config: bokbok.Config{Handler: h}}}
	if secure {
		key, err := bokbok.GenerateKey()
		if err != nil {
			t.Fatal(err)
		}
		p.srv.UserKey = func(user string) (bokbok.Key, bool) { return key, user == "alice" }
		p.keyFile = plKeyFile(t, key)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p.addr = ln.Addr().String()
	served := make(chan error, 1)
	go func() { served <- p.srv.Serve(ln) }()
	t.Cleanup(func() {
		p.srv.Close()
		p.srv.Wait()
		if err := <-served; err != bokbok.ErrServerClosed {
			t.Errorf("Serve: %v", err)
		}
	})
	return p
}

// plKeyFile writes key's text form (with a newline, as keygen prints it)
// to a temporary file.
func plKeyFile(t *testing.T, key bokbok.Key) string {
	t.Helper()
	text, _ := key.MarshalText()
	path := filepath.Join(t.TempDir(), "alice.key")
	if err := os.WriteFile(path, append(text, '\n'), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// plRun runs the command line args through run, as main does, and returns
// its exit code and output.
func plRun(ctx context.Context, t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code = run(ctx, &env{stdin: strings.NewReader(""), stdout: &out, stderr: &errOut}, args)
	t.Logf("bokbok %s\n=> exit %d\n--- stdout:\n%s--- stderr:\n%s", strings.Join(args, " "), code, out.String(), errOut.String())
	return code, out.String(), errOut.String()
}

// plClosedAddr returns an address where nothing listens.
func plClosedAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// plWantOneLine checks that s is exactly one line containing every one of
// subs.
func plWantOneLine(t *testing.T, s string, subs ...string) {
	t.Helper()
	if strings.Count(s, "\n") != 1 || !strings.HasSuffix(s, "\n") {
		t.Errorf("want one line, got %q", s)
	}
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			t.Errorf("want %q in %q", sub, s)
		}
	}
}

// plDeafProxy forwards connections to addr, except that after the client's
// insecure opening (its preamble and SETTINGS frame) it drops everything
// the client sends: the connection opens, then nothing the client sends
// (a PING, a request) ever arrives.
func plDeafProxy(t *testing.T, addr string) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	track := func(c net.Conn) {
		mu.Lock()
		conns = append(conns, c)
		mu.Unlock()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s, err := net.Dial("tcp", addr)
			if err != nil {
				c.Close()
				continue
			}
			track(c)
			track(s)
			wg.Add(2)
			go func() {
				defer wg.Done()
				io.Copy(c, s)
			}()
			go func() {
				defer wg.Done()
				opening := make([]byte, 16) // preamble, SETTINGS header
				if _, err := io.ReadFull(c, opening); err != nil {
					return
				}
				settings := make([]byte, binary.BigEndian.Uint16(opening[10:12]))
				if _, err := io.ReadFull(c, settings); err != nil {
					return
				}
				s.Write(append(opening, settings...))
				io.Copy(io.Discard, c)
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().String()
}

var pongLine = regexp.MustCompile(`(?m)^pong from (\S+): time=\d+\.\d{3}ms seq=(\d+)$`)

func TestPingInsecure(t *testing.T) {
	plNoLeaks(t)
	p := plStart(t, false, nil)
	code, out, errOut := plRun(t.Context(), t, "ping", p.addr, "--count", "3", "--interval", "10ms", "--insecure")
	if code != exitOK {
		t.Fatalf("exit %d, want %d", code, exitOK)
	}
	if errOut != "" {
		t.Errorf("stderr: %q, want nothing", errOut)
	}
	if !strings.HasPrefix(out, "PING "+p.addr+": connected in ") || !strings.Contains(out, "(insecure)") {
		t.Errorf("first line of %q: want PING ADDR: connected ... (insecure)", out)
	}
	pongs := pongLine.FindAllStringSubmatch(out, -1)
	if len(pongs) != 3 {
		t.Fatalf("%d pong lines, want 3", len(pongs))
	}
	for i, m := range pongs {
		if m[1] != p.addr+":" && m[1] != p.addr {
			t.Errorf("pong line %d from %q, want %q", i, m[1], p.addr)
		}
		if m[2] != strconv.Itoa(i+1) {
			t.Errorf("pong line %d has seq=%s", i, m[2])
		}
	}
	for _, want := range []string{
		"\n--- " + p.addr + " bokbok ping statistics ---\n",
		"\n3 sent, 3 received, 0% lost, time ",
		"\nrtt min/avg/max/mdev = ",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("want %q in the output", want)
		}
	}
	if !regexp.MustCompile(`rtt min/avg/max/mdev = \d+\.\d{3}/\d+\.\d{3}/\d+\.\d{3}/\d+\.\d{3} ms\n$`).MatchString(out) {
		t.Errorf("the rtt line is malformed or not last")
	}
}

func TestPingSecure(t *testing.T) {
	plNoLeaks(t)
	p := plStart(t, true, nil)
	code, out, _ := plRun(t.Context(), t, "ping", "--user", "alice", "--key-file", p.keyFile, p.addr, "--count=2", "--interval=1ms", "--timeout=0")
	if code != exitOK {
		t.Fatalf("exit %d, want %d", code, exitOK)
	}
	if !strings.Contains(out, `(secure, user "alice")`) {
		t.Errorf("want the secure user in the first line")
	}
	if n := len(pongLine.FindAllString(out, -1)); n != 2 {
		t.Errorf("%d pong lines, want 2", n)
	}
	if !strings.Contains(out, "2 sent, 2 received, 0% lost") {
		t.Errorf("want 2 sent, 2 received in the summary")
	}
}

// TestPingConnectFailures checks that a connection that cannot open exits
// with exitConnect and one line that says what to fix.
func TestPingConnectFailures(t *testing.T) {
	plNoLeaks(t)
	secure := plStart(t, true, nil)
	insecure := plStart(t, false, nil)
	other, err := bokbok.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	wrongKey := plKeyFile(t, other)
	tests := []struct {
		name string
		args []string
		want []string
	}{
		{"wrong key", []string{secure.addr, "--user", "alice", "--key-file", wrongKey},
			[]string{"cannot connect to " + secure.addr, "authentication failed", "check --user, --key-file and --realm"}},
		{"unknown user", []string{secure.addr, "--user", "bob", "--key-file", secure.keyFile},
			[]string{"authentication failed", `"bob"`, "check --user, --key-file and --realm"}},
		{"wrong realm", []string{secure.addr, "--user", "alice", "--key-file", secure.keyFile, "--realm", "elsewhere"},
			[]string{"authentication failed", "check --user, --key-file and --realm"}},
		{"secure client, insecure server", []string{insecure.addr, "--user", "alice", "--key-file", secure.keyFile},
			[]string{"the server is insecure", "pass --insecure"}},
		{"insecure client, secure server", []string{secure.addr, "--insecure"},
			[]string{"the server is secure", "drop --insecure and pass --user and --key-file"}},
		{"closed port", []string{plClosedAddr(t), "--insecure"},
			[]string{"cannot connect to 127.0.0.1:", "connection refused", "is the server running"}},
		{"no socket file", []string{filepath.Join(t.TempDir(), "none.sock"), "--insecure"},
			[]string{"no such socket file"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, out, errOut := plRun(t.Context(), t, append([]string{"ping", "--count", "1"}, tt.args...)...)
			if code != exitConnect {
				t.Errorf("exit %d, want %d", code, exitConnect)
			}
			if out != "" {
				t.Errorf("stdout %q, want nothing", out)
			}
			if !strings.HasPrefix(errOut, "bokbok ping: ") {
				t.Errorf("stderr %q does not start with the command", errOut)
			}
			plWantOneLine(t, errOut, tt.want...)
		})
	}
}

func TestPingUsage(t *testing.T) {
	for _, args := range [][]string{
		{"ping"},
		{"ping", "a:1", "b:2", "--insecure"},
		{"ping", "127.0.0.1:1", "--count", "-1", "--insecure"},
		{"ping", "127.0.0.1:1", "--interval", "-1s", "--insecure"},
		{"ping", "127.0.0.1:1"},                                                      // neither --insecure nor --user
		{"ping", "127.0.0.1:1", "--insecure", "--user", "alice"},                     // both
		{"ping", "127.0.0.1:1", "--user", "alice", "--key-file", "/nonexistent/key"}, // no key file
		{"ping", "nohost", "--insecure"},                                             // ambiguous address
		{"ping", "127.0.0.1:1", "--insecure", "--bogus"},
	} {
		code, out, errOut := plRun(t.Context(), t, args...)
		if code != exitUsage {
			t.Errorf("%q: exit %d, want %d", args, code, exitUsage)
		}
		if out != "" || errOut == "" {
			t.Errorf("%q: want a complaint on stderr only", args)
		}
	}
	code, _, errOut := plRun(t.Context(), t, "ping", "--help")
	if code != exitOK || !strings.Contains(errOut, "Exit status") || !strings.Contains(errOut, "--count") {
		t.Errorf("--help: exit %d, want 0 and the usage with the exit statuses", code)
	}
}

// TestPingInterrupted checks that ctx ending (Ctrl-C) stops an endless
// ping, which still prints its summary and exits 0.
func TestPingInterrupted(t *testing.T) {
	plNoLeaks(t)
	p := plStart(t, false, nil)
	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	code, out, _ := plRun(ctx, t, "ping", p.addr, "--insecure", "--count", "0", "--interval", "20ms")
	if d := time.Since(start); d > 10*time.Second { // generous: a loaded machine
		t.Errorf("ping took %v after the interrupt", d)
	}
	if code != exitOK {
		t.Errorf("exit %d, want %d", code, exitOK)
	}
	n := len(pongLine.FindAllString(out, -1))
	if n < 3 {
		t.Errorf("%d pongs in 300ms at 20ms intervals", n)
	}
	if want := "\n" + strconv.Itoa(n) + " sent, " + strconv.Itoa(n) + " received, 0% lost"; !strings.Contains(out, want) {
		t.Errorf("want %q in the summary", want)
	}
}

// TestPingLost checks pings that get no answer within --timeout: they are
// reported and counted, and the exit status is 1.
func TestPingLost(t *testing.T) {
	plNoLeaks(t)
	p := plStart(t, false, nil)
	addr := plDeafProxy(t, p.addr)
	code, out, _ := plRun(t.Context(), t, "ping", addr, "--insecure", "--count", "2", "--interval", "1ms", "--timeout", "100ms")
	if code != exitRemote {
		t.Errorf("exit %d, want %d", code, exitRemote)
	}
	if n := strings.Count(out, "no pong from "+addr+": seq="); n != 2 {
		t.Errorf("%d lines for lost pings, want 2", n)
	}
	if !strings.Contains(out, "2 sent, 0 received, 100% lost") {
		t.Errorf("want 2 sent, 0 received, 100%% lost")
	}
	if strings.Contains(out, "rtt ") {
		t.Errorf("an rtt line without any round trip")
	}
}

// TestPingConnectionLost checks a connection that breaks while pinging:
// the summary is still printed, and the exit status is 2.
func TestPingConnectionLost(t *testing.T) {
	plNoLeaks(t)
	p := plStart(t, false, nil)
	go func() {
		time.Sleep(150 * time.Millisecond)
		p.srv.Close()
	}()
	code, out, errOut := plRun(t.Context(), t, "ping", p.addr, "--insecure", "--count", "0", "--interval", "20ms")
	if code != exitConnect {
		t.Errorf("exit %d, want %d", code, exitConnect)
	}
	plWantOneLine(t, errOut, "bokbok ping: connection to "+p.addr+" lost")
	if !strings.Contains(out, "bokbok ping statistics") {
		t.Errorf("no summary")
	}
}
