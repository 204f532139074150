package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/bokbok-go/bokbok"
	"github.com/bokbok-go/bokbok/pipes"
)

// hubListening matches the line "bokbok pipes hub" prints once it listens.
var hubListening = regexp.MustCompile(`(?m)^bokbok pipes hub: listening on (\S+) \(data (.*), (\d+) users?\)$`)

// cliHub starts "bokbok pipes hub args...", waits for the line saying
// where it listens, and stops it (if still running) when the test ends.
// Its addr is the address printed, in the form pipes.NodeConfig.Hub
// takes.
func cliHub(t *testing.T, args ...string) *cliServer {
	t.Helper()
	s := &cliServer{cmd: exec.Command(cliBinary(t), append([]string{"pipes", "hub"}, args...)...), log: &cliLog{}, exited: make(chan struct{})}
	s.cmd.Stdout = s.log
	s.cmd.Stderr = s.log
	s.cmd.Env = cliEnv()
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		s.err = s.cmd.Wait()
		close(s.exited)
	}()
	t.Cleanup(func() {
		s.cmd.Process.Kill()
		<-s.exited
		t.Logf("bokbok pipes hub %s: log:\n%s", strings.Join(args, " "), s.log.String())
		if strings.Contains(s.log.String(), "DATA RACE") {
			t.Errorf("the race detector reported a race in bokbok pipes hub")
		}
	})
	for deadline := time.Now().Add(20 * time.Second); ; {
		if m := hubListening.FindStringSubmatch(s.log.String()); m != nil {
			s.addr = m[1]
			return s
		}
		select {
		case <-s.exited:
			t.Fatalf("bokbok pipes hub %s exited (%v) before listening; log:\n%s", strings.Join(args, " "), s.err, s.log.String())
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("bokbok pipes hub %s did not say it listens within 20s; log:\n%s", strings.Join(args, " "), s.log.String())
		}
	}
}

// hubUsers writes a keys file for alice and bob and returns it and their
// keys.
func hubUsers(t *testing.T) (keys string, alice, bob bokbok.Key) {
	t.Helper()
	alice, aliceText := cliKey(t)
	bob, bobText := cliKey(t)
	keys = cliWrite(t, "keys.txt", fmt.Sprintf("# the network's users\nalice %s\nbob %s\n", aliceText, bobText))
	return keys, alice, bob
}

// hubNode opens a node of user on the hub at addr, with a short backoff
// (the hub restarts). close closes it, once; it is called when the test
// ends too, and the node's log is shown then.
func hubNode(t *testing.T, addr, user string, key bokbok.Key) (n *pipes.Node, close func()) {
	t.Helper()
	log := &cliLog{}
	cfg := pipes.NodeConfig{Dir: t.TempDir(), Hub: addr, User: user, Key: key, Logger: slog.New(slog.NewTextHandler(log, nil))}
	cfg.Client.MinBackoff = 20 * time.Millisecond
	cfg.Client.MaxBackoff = 500 * time.Millisecond
	n, err := pipes.OpenNode(cfg)
	if err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	close = func() {
		once.Do(func() {
			if err := n.Close(); err != nil {
				t.Errorf("closing %s's node: %v", user, err)
			}
		})
	}
	t.Cleanup(func() {
		close()
		t.Logf("%s's node: log:\n%s", user, log.String())
	})
	return n, close
}

// hubInbox collects the packets a listener is given.
type hubInbox struct {
	mu      sync.Mutex
	packets []pipes.Packet
	changed chan struct{}
}

func newHubInbox() *hubInbox { return &hubInbox{changed: make(chan struct{}, 1)} }

func (in *hubInbox) listen(p pipes.Packet) {
	in.mu.Lock()
	in.packets = append(in.packets, p)
	in.mu.Unlock()
	select {
	case in.changed <- struct{}{}:
	default:
	}
}

// waitFor waits until the inbox holds n packets, for a minute at most,
// and returns them.
func (in *hubInbox) waitFor(t *testing.T, n int) []pipes.Packet {
	t.Helper()
	timeout := time.After(time.Minute)
	for {
		in.mu.Lock()
		got := append([]pipes.Packet(nil), in.packets...)
		in.mu.Unlock()
		if len(got) >= n {
			return got
		}
		select {
		case <-in.changed:
		case <-timeout:
			t.Fatalf("got %d packets within a minute, want %d: %v", len(got), n, got)
		}
	}
}

// TestCLIPipesHubRestart runs "bokbok pipes hub" with two nodes on a
// persistent pipeline: bob gets alice's packets; alice puts more while the
// hub is stopped; the hub is started again on the same data directory and
// port, and bob gets those too, each once and in order.
func TestCLIPipesHubRestart(t *testing.T) {
	plNoLeaks(t)
	keys, aliceKey, bobKey := hubUsers(t)
	data := filepath.Join(t.TempDir(), "hub-data") // created by the hub
	hub := cliHub(t, "--listen", "127.0.0.1:0", "--keys", keys, "--data", data, "--max-age", "24h")
	if !strings.HasPrefix(hub.addr, "tcp://127.0.0.1:") || strings.HasSuffix(hub.addr, ":0") {
		t.Fatalf("the hub printed address %q, want tcp://127.0.0.1:PORT with the real port", hub.addr)
	}
	if m := hubListening.FindStringSubmatch(hub.log.String()); m[2] != data || m[3] != "2" {
		t.Errorf("the hub says data %q and %s users, want %q and 2", m[2], m[3], data)
	}
	if strings.Contains(hub.log.String(), "readable by other users") {
		t.Errorf("the hub warns about a private keys file")
	}

	alice, closeAlice := hubNode(t, hub.addr, "alice", aliceKey)
	bob, closeBob := hubNode(t, hub.addr, "bob", bobKey)
	pa, err := alice.Pipeline("CHAT", &pipes.PipelineOptions{Persistent: true})
	if err != nil {
		t.Fatal(err)
	}
	pb, err := bob.Pipeline("CHAT", &pipes.PipelineOptions{Persistent: true})
	if err != nil {
		t.Fatal(err)
	}
	inbox := newHubInbox()
	pb.Listen(inbox.listen)

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var want []string
	put := func(msg string) {
		t.Helper()
		if _, err := pa.Put(ctx, []byte(msg)); err != nil {
			t.Fatalf("put %q: %v", msg, err)
		}
		want = append(want, msg)
	}
	check := func(got []pipes.Packet) {
		t.Helper()
		if len(got) != len(want) {
			t.Fatalf("bob got %d packets, want %d: %v", len(got), len(want), got)
		}
		for i, p := range got {
			if string(p.Data) != want[i] || p.Seq != uint64(i+1) || p.Sender != "alice" || p.Own || p.Pipeline != "CHAT" {
				t.Errorf("bob's packet %d: %q seq %d from %q (own %v) on %q; want %q seq %d from alice", i, p.Data, p.Seq, p.Sender, p.Own, p.Pipeline, want[i], i+1)
			}
		}
	}

	for i := range 3 {
		put(fmt.Sprintf("hello %d", i))
	}
	check(inbox.waitFor(t, len(want)))
	if err := alice.Flush(ctx); err != nil { // the hub has acknowledged them all
		t.Fatal(err)
	}

	if code := hub.stop(t, os.Interrupt); code != exitOK {
		t.Fatalf("the hub exited with %d after SIGINT", code)
	}
	hub.log.waitFor(t, "msg=stopped")

	// The hub is down: alice's puts wait in her outbox.
	for i := range 2 {
		put(fmt.Sprintf("while down %d", i))
	}
	if packets, _ := alice.Outbox(); packets != 2 {
		t.Errorf("alice's outbox holds %d packets while the hub is down, want 2", packets)
	}

	hostPort := strings.TrimPrefix(hub.addr, "tcp://")
	hub = cliHub(t, "--listen", hostPort, "--keys", keys, "--data", data, "--max-age", "24h")
	if hub.addr != "tcp://"+hostPort {
		t.Fatalf("the restarted hub listens on %q, want tcp://%s", hub.addr, hostPort)
	}
	check(inbox.waitFor(t, len(want)))
	if err := alice.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if packets, _ := alice.Outbox(); packets != 0 {
		t.Errorf("alice's outbox holds %d packets after the flush", packets)
	}

	// And the hub still carries new packets.
	put("after the restart")
	check(inbox.waitFor(t, len(want)))

	closeAlice()
	closeBob()
	if code := hub.stop(t, syscall.SIGTERM); code != exitOK {
		t.Fatalf("the restarted hub exited with %d after SIGTERM", code)
	}
	for _, k := range []bokbok.Key{aliceKey, bobKey} {
		if text, _ := k.MarshalText(); strings.Contains(hub.log.String(), string(text)) {
			t.Error("the hub's log shows a key")
		}
	}
}

// TestCLIPipesHubReloadsKeys: SIGHUP makes the hub re-read its keys file,
// as "bokbok serve" does; a user added to it can then connect.
func TestCLIPipesHubReloadsKeys(t *testing.T) {
	plNoLeaks(t)
	_, aliceText := cliKey(t)
	bobKey, bobText := cliKey(t)
	keys := cliWrite(t, "keys.txt", "alice "+aliceText+"\n")
	sock := filepath.Join(t.TempDir(), "hub.sock")
	hub := cliHub(t, "--listen", sock, "--keys", keys, "--data", t.TempDir())
	if hub.addr != "unix://"+sock {
		t.Errorf("the hub printed %q, want unix://%s", hub.addr, sock)
	}
	if !strings.Contains(hub.log.String(), ", 1 user)") {
		t.Errorf("the hub does not say it has 1 user")
	}

	bob, closeBob := hubNode(t, hub.addr, "bob", bobKey)

	// The hub refuses bob until its keys file lists him.
	rewrite := func(content string) {
		t.Helper()
		if err := os.WriteFile(keys+".tmp", []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(keys+".tmp", keys); err != nil {
			t.Fatal(err)
		}
	}
	rewrite("alice " + aliceText + "\nbob\n")
	if err := hub.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	hub.log.waitFor(t, "keys file not reloaded")
	hub.log.waitFor(t, "keys.txt:2:")
	if bob.Connected() {
		t.Fatal("bob connected with a keys file that does not list him")
	}

	rewrite(fmt.Sprintf("alice %s\nbob %s\n", aliceText, bobText))
	if err := hub.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	hub.log.waitFor(t, "users=2")
	for deadline := time.Now().Add(time.Minute); !bob.Connected(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("bob did not connect within a minute of the reload; the hub's log:\n%s", hub.log.String())
		}
	}
	closeBob()

	if code := hub.stop(t, syscall.SIGTERM); code != exitOK {
		t.Fatalf("the hub exited with %d after SIGTERM", code)
	}
	if _, err := os.Stat(sock); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the socket file is still there after the hub stopped: %v", err)
	}
}

func TestCLIPipesHubUsageErrors(t *testing.T) {
	keys, _, _ := hubUsers(t)
	data := t.TempDir()
	empty := cliWrite(t, "empty.txt", "# nobody yet\n")
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{"--keys", keys, "--data", data}, []string{"--listen ADDR is required"}},
		{[]string{"--listen", "127.0.0.1:0", "--data", data}, []string{"--keys FILE is required"}},
		{[]string{"--listen", "127.0.0.1:0", "--keys", keys}, []string{"--data DIR is required"}},
		{nil, []string{"--listen ADDR is required"}},
		{[]string{"--listen", "nowhere", "--keys", keys, "--data", data}, []string{"--listen", "ambiguous"}},
		{[]string{"--listen", "127.0.0.1:0", "--keys", keys, "--data", data, "--max-age", "-1h"}, []string{"--max-age"}},
		{[]string{"--listen", "127.0.0.1:0", "--keys", keys, "--data", data, "--max-bytes", "-1"}, []string{"--max-bytes"}},
		{[]string{"--listen", "127.0.0.1:0", "--keys", keys, "--data", data, "--max-packet-size", "0"}, []string{"--max-packet-size"}},
		{[]string{"--listen", "127.0.0.1:0", "--keys", keys, "--data", data, "--max-pipelines", "0"}, []string{"--max-pipelines"}},
		{[]string{"--listen", "127.0.0.1:0", "--keys", keys, "--data", data, "--max-db-size", "-5"}, []string{"--max-db-size"}},
		{[]string{"--listen", "127.0.0.1:0", "--keys", keys, "--data", data, "--realm", strings.Repeat("r", 256)}, []string{"--realm", "255"}},
		{[]string{"--listen", "127.0.0.1:0", "--keys", filepath.Join(t.TempDir(), "nope.txt"), "--data", data}, []string{"--keys", "nope.txt"}},
		{[]string{"--listen", "127.0.0.1:0", "--keys", empty, "--data", data}, []string{"no users"}},
	} {
		r := cliRun(t, "", append([]string{"pipes", "hub"}, tc.args...)...)
		r.wantOneLine(t, exitUsage, append(tc.want, "bokbok pipes hub: ")...)
		if strings.Contains(r.stderr, "--insecure") {
			t.Errorf("the hub suggests --insecure: %q", r.stderr)
		}
	}
	cliRun(t, "", "pipes", "hub", "--bogus").wantOneLineOrUsage(t, exitUsage, "bogus", "bokbok pipes hub --help")
	cliRun(t, "", "pipes", "hub", "--listen", "127.0.0.1:0", "--keys", keys, "--data", data, "extra").wantOneLineOrUsage(t, exitUsage, "takes no arguments")
	cliRun(t, "", "pipes", "hub", "--listen", "127.0.0.1:0", "--keys", keys, "--data", data, "--max-packets", "-1").wantOneLineOrUsage(t, exitUsage, "max-packets")

	// A data directory that cannot be made: exit 1.
	cliRun(t, "", "pipes", "hub", "--listen", "127.0.0.1:0", "--keys", keys, "--data", keys).wantOneLine(t, exitStorage, "cannot open the data directory", "keys.txt")
}

func TestCLIPipesHelp(t *testing.T) {
	for _, args := range [][]string{{"pipes", "--help"}, {"pipes", "-h"}, {"help", "pipes"}, {"pipes", "help"}} {
		r := cliRun(t, "", args...)
		r.want(t, exitOK, nil, []string{"Usage: bokbok pipes COMMAND", "\n  hub ", "bokbok pipes COMMAND --help"})
	}
	r := cliRun(t, "", "pipes")
	r.want(t, exitUsage, nil, []string{"Usage: bokbok pipes COMMAND", "\n  hub "})
	cliRun(t, "", "pipes", "bogus").wantOneLine(t, exitUsage, `unknown command "bogus"`, "bokbok pipes --help")

	for _, args := range [][]string{{"pipes", "hub", "--help"}, {"pipes", "hub", "-h"}, {"pipes", "help", "hub"}, {"help", "pipes", "hub"}} {
		r := cliRun(t, "", args...)
		r.want(t, exitOK, nil, []string{"Usage: bokbok pipes hub --listen ADDR --keys FILE --data DIR", "Flags:",
			"--listen ADDR", "--keys FILE", "--data DIR", "--realm REALM", "--max-age D", "--max-packets N", "--max-bytes N",
			"--max-packet-size N", "--max-pipelines N", "--max-db-size N", "SIGHUP", "Exit status"})
	}
	cliRun(t, "", "--help").want(t, exitOK, nil, []string{"\n  pipes "})
}
