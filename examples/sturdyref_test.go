package examples_test

// Tests of the capability examples that hand out sturdyrefs:
// examples/greeter (bob and alice) and examples/chat (a room and its
// users). Each runs the real programs as separate processes.

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/bokbok-go/bokbok/ocap"
)

// procTimeout bounds every wait for a process to print or exit; generous,
// for -race on a loaded machine.
const procTimeout = 30 * time.Second

// proc is a running example program, its standard output and error kept
// apart.
type proc struct {
	process
	name   string
	stdout *syncBuffer
	stderr *syncBuffer
	stdin  io.WriteCloser // nil unless asked for
}

// raceEnv is the environment of the programs: this process's, and for
// programs built with -race, no pause at exit (the race detector's
// default is a second per process).
func raceEnv() []string {
	env := os.Environ()
	if !raceEnabled() || strings.Contains(os.Getenv("GORACE"), "atexit_sleep_ms") {
		return env
	}
	return append(env, "GORACE="+strings.TrimSpace(os.Getenv("GORACE")+" atexit_sleep_ms=0"))
}

// startProc starts bin with args; with withStdin, the test can write to
// its standard input. The process is killed, if still running, when the
// test ends.
func startProc(t *testing.T, name, dir string, withStdin bool, bin string, args ...string) *proc {
	t.Helper()
	p := &proc{name: name, stdout: new(syncBuffer), stderr: new(syncBuffer)}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Dir = dir
	p.cmd.Env = raceEnv()
	p.cmd.Stdout, p.cmd.Stderr = p.stdout, p.stderr
	if withStdin {
		w, err := p.cmd.StdinPipe()
		if err != nil {
			t.Fatal(err)
		}
		p.stdin = w
	}
	p.start(t)
	return p
}

// String returns everything the process printed, for failure messages.
func (p *proc) String() string {
	return fmt.Sprintf("--- %s's standard output:\n%s--- %s's standard error:\n%s", p.name, p.stdout, p.name, p.stderr)
}

// waitOut waits until the process's standard output contains each of
// want.
func (p *proc) waitOut(t *testing.T, want ...string) {
	t.Helper()
	deadline := time.Now().Add(procTimeout)
	for _, w := range want {
		for !strings.Contains(p.stdout.String(), w) {
			select {
			case <-p.exited:
				if !strings.Contains(p.stdout.String(), w) {
					t.Fatalf("%s exited (%v) before printing %q\n%s", p.name, p.waitErr, w, p)
				}
			default:
			}
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s to print %q\n%s", p.name, w, p)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
}

// sturdyref waits for the first line of the process's standard output and
// parses it as a sturdyref.
func (p *proc) sturdyref(t *testing.T) string {
	t.Helper()
	p.waitOut(t, "\n")
	uri, _, _ := strings.Cut(p.stdout.String(), "\n")
	if _, err := ocap.ParseSturdyref(uri); err != nil {
		t.Fatalf("%s's first line is not a sturdyref: %v\n%s", p.name, err, p)
	}
	return uri
}

// wait waits for the process to exit and returns its exit status.
func (p *proc) wait(t *testing.T) int {
	t.Helper()
	select {
	case <-p.exited:
	case <-time.After(procTimeout):
		t.Fatalf("%s did not exit\n%s", p.name, p)
	}
	var exit *exec.ExitError
	switch {
	case p.waitErr == nil:
		return 0
	case errors.As(p.waitErr, &exit) && exit.ExitCode() >= 0:
		return exit.ExitCode()
	}
	t.Fatalf("%s: %v\n%s", p.name, p.waitErr, p)
	return -1
}

// kill kills the process and waits until it has gone.
func (p *proc) kill(t *testing.T) {
	t.Helper()
	if err := p.cmd.Process.Kill(); err != nil {
		t.Fatalf("%s: %v", p.name, err)
	}
	select {
	case <-p.exited:
	case <-time.After(procTimeout):
		t.Fatalf("%s did not exit after SIGKILL", p.name)
	}
}

// stop sends SIGTERM and checks that the process exits with status want.
func (p *proc) stop(t *testing.T, want int) {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatalf("%s: %v", p.name, err)
	}
	if got := p.wait(t); got != want {
		t.Errorf("%s exited with status %d after SIGTERM, want %d\n%s", p.name, got, want, p)
	}
}

// runAlice runs examples/greeter/alice and returns its exit status and
// outputs.
func runAlice(t *testing.T, bin string, args ...string) (status int, stdout, stderr string) {
	t.Helper()
	p := startProc(t, "alice", "", false, bin, args...)
	status = p.wait(t)
	return status, p.stdout.String(), p.stderr.String()
}

// greetAsAlice runs alice and checks her greeting.
func greetAsAlice(t *testing.T, bin, uri string, want string, args ...string) {
	t.Helper()
	status, stdout, stderr := runAlice(t, bin, append(args, uri)...)
	if status != 0 || stdout != want+"\n" {
		t.Errorf("alice %s: status %d, standard output %q, want status 0 and %q\nstandard error:\n%s", strings.Join(args, " "), status, stdout, want+"\n", stderr)
	}
}

// tamper returns uri with the swiss number changed.
func tamper(t *testing.T, uri string) string {
	t.Helper()
	sr, err := ocap.ParseSturdyref(uri)
	if err != nil {
		t.Fatal(err)
	}
	sr.Swiss = append([]byte(nil), sr.Swiss...)
	sr.Swiss[0] ^= 1
	return sr.String()
}

func TestGreeter(t *testing.T) {
	bins := build(t, "greeter/bob", "greeter/alice")
	bob := startProc(t, "bob", "", false, bins["greeter/bob"])
	uri := bob.sturdyref(t)
	if !regexp.MustCompile(`^bokbok://127\.0\.0\.1:[1-9][0-9]*/s/[A-Za-z0-9_-]{43}$`).MatchString(uri) {
		t.Errorf("bob's sturdyref is %q, want bokbok://127.0.0.1:PORT/s/SWISS", uri)
	}

	greetAsAlice(t, bins["greeter/alice"], uri, "Hello Alice, my name is Bob!")
	greetAsAlice(t, bins["greeter/alice"], uri, "Hello Carol, my name is Bob!", "-name", "Carol")

	// A sturdyref bob never made: refused, with a clear error.
	status, stdout, stderr := runAlice(t, bins["greeter/alice"], tamper(t, uri))
	if status != 1 || stdout != "" || !strings.Contains(stderr, "the host does not know this sturdyref") {
		t.Errorf("alice with a tampered sturdyref: status %d, want 1 and an unknown sturdyref\nstandard output:\n%s\nstandard error:\n%s", status, stdout, stderr)
	}
	// Not a sturdyref at all.
	status, _, stderr = runAlice(t, bins["greeter/alice"], "bokbok://127.0.0.1:1/s/short")
	if status != 2 || !strings.Contains(stderr, "bad sturdyref") {
		t.Errorf("alice with a malformed sturdyref: status %d, want 2 and a parse error\n%s", status, stderr)
	}

	bob.stop(t, 0)
	out := bob.stdout.String()
	if out != uri+"\n" {
		t.Errorf("bob's standard output is %q, want only the sturdyref", out)
	}
	checkContains(t, "bob's log", bob.stderr.String(),
		`greet #1: "Alice"`, `greet #2: "Carol"`, "shutting down", "stopped")
	checkLacks(t, "bob's log", bob.stderr.String(), "greet #3", "error", "DATA RACE", "panic")
}

// Bob on a Unix socket given as a relative path, with a store: the
// sturdyref names the socket's absolute path, and a restarted bob serves
// the same sturdyref.
func TestGreeterUnixSocketAndStore(t *testing.T) {
	bins := build(t, "greeter/bob", "greeter/alice")
	dir := t.TempDir()
	args := []string{"-addr", "./bob.sock", "-store", "bob.json", "-name", "Robert"}

	bob := startProc(t, "bob", dir, false, bins["greeter/bob"], args...)
	uri := bob.sturdyref(t)
	sr, err := ocap.ParseSturdyref(uri)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(uri, "bokbok+unix:///") || sr.Addr.Network != "unix" || !filepath.IsAbs(sr.Addr.Address) || filepath.Base(sr.Addr.Address) != "bob.sock" {
		t.Fatalf("bob's sturdyref is %q, want bokbok+unix:///.../bob.sock/s/SWISS", uri)
	}
	// Alice runs in another directory.
	greetAsAlice(t, bins["greeter/alice"], uri, "Hello Alice, my name is Robert!")
	bob.stop(t, 0)
	sock := filepath.Join(dir, "bob.sock")
	if _, err := os.Stat(sock); !os.IsNotExist(err) {
		t.Errorf("bob left its socket behind (stat: %v)", err)
	}
	if fi, err := os.Stat(filepath.Join(dir, "bob.json")); err != nil || fi.Mode().Perm()&0o077 != 0 {
		t.Errorf("the store: %v, want a file readable by its owner only", err)
	}

	// Alice cannot reach a bob that is not running.
	status, _, stderr := runAlice(t, bins["greeter/alice"], uri)
	if status != 1 || !strings.Contains(stderr, "is bob running?") {
		t.Errorf("alice without bob: status %d, want 1 and a hint\n%s", status, stderr)
	}

	bob = startProc(t, "bob", dir, false, bins["greeter/bob"], args...)
	if again := bob.sturdyref(t); again != uri {
		t.Errorf("after a restart with the same store, bob's sturdyref is %q, want %q", again, uri)
	}
	greetAsAlice(t, bins["greeter/alice"], uri, "Hello Alice, my name is Robert!")
	bob.stop(t, 0)
}

// With -public, bob's sturdyref names that address instead of the one he
// listens on; a -public that is no address ends him with an error.
func TestGreeterPublic(t *testing.T) {
	bins := build(t, "greeter/bob")
	bob := startProc(t, "bob", "", false, bins["greeter/bob"], "-public", "example.com:7000")
	if uri := bob.sturdyref(t); !strings.HasPrefix(uri, "bokbok://example.com:7000/s/") {
		t.Errorf("bob's sturdyref with -public example.com:7000 is %q", uri)
	}
	bob.stop(t, 0)

	bad := startProc(t, "bob", "", false, bins["greeter/bob"], "-public", "bogus")
	if status := bad.wait(t); status != 1 || bad.stdout.String() != "" || !strings.Contains(bad.stderr.String(), `Node.Addr: bokbok: bad address "bogus"`) {
		t.Errorf("bob with -public bogus: status %d, want 1 and an error naming the address\n%s", status, bad)
	}
}

// chatUser starts an examples/chat/user.
func chatUser(t *testing.T, bin, uri, name string, args ...string) *proc {
	t.Helper()
	return startProc(t, name, "", true, bin, append([]string{"-name", name, "-room", uri}, args...)...)
}

// checkChatLines checks that every line a user printed is a chat line
// about a known user, never one whose sender's name could not be asked.
func checkChatLines(t *testing.T, u *proc) {
	t.Helper()
	re := regexp.MustCompile(`^(<(alice|bob|carol|dave)> .+|\* (alice|bob|carol|dave) (joined|is here|left))$`)
	for _, l := range strings.Split(strings.TrimSuffix(u.stdout.String(), "\n"), "\n") {
		if !re.MatchString(l) {
			t.Errorf("%s printed %q\n%s", u.name, l, u)
		}
	}
}

// The simple chat: a room and four users, three of which join at once and
// wait for each other before speaking, and one that comes later. Each
// user prints what the others say with their names, which it asks the
// speakers themselves, through references the room handed on.
func TestChat(t *testing.T) {
	bins := build(t, "chat/room", "chat/user")
	room := startProc(t, "room", "", false, bins["chat/room"])
	uri := room.sturdyref(t)
	userBin := bins["chat/user"]

	// Three users at once, each saying its greeting when all three are
	// in the room, so that every greeting reaches everyone.
	alice := chatUser(t, userBin, uri, "alice", "-wait-for", "3")
	bob := chatUser(t, userBin, uri, "bob", "-wait-for", "3", "hi,", "bob", "here")
	carol := chatUser(t, userBin, uri, "carol", "-wait-for", "3")
	greetings := []string{"<alice> hello from alice\n", "<bob> hi, bob here\n", "<carol> hello from carol\n"}
	three := []*proc{alice, bob, carol}
	for _, u := range three {
		u.waitOut(t, greetings...)
		checkMatches(t, u.name+"'s output", u.stdout.String(),
			`(?m)^\* alice (joined|is here)$`, `(?m)^\* bob (joined|is here)$`, `(?m)^\* carol (joined|is here)$`,
			`(?m)^\* `+u.name+` joined$`)
	}

	// A line alice types reaches everyone, after her greeting.
	if _, err := io.WriteString(alice.stdin, "how is everyone?\n"); err != nil {
		t.Fatal(err)
	}
	for _, u := range three {
		u.waitOut(t, "<alice> how is everyone?\n")
		checkOrder(t, u.name+"'s output", u.stdout.String(), "<alice> hello from alice", "<alice> how is everyone?")
	}

	// A latecomer hears who is here; the others hear it join and speak.
	dave := chatUser(t, userBin, uri, "dave")
	dave.waitOut(t, "* alice is here\n", "* bob is here\n", "* carol is here\n", "* dave joined\n", "<dave> hello from dave\n")
	for _, u := range three {
		u.waitOut(t, "* dave joined\n", "<dave> hello from dave\n")
	}
	checkLacks(t, "dave's output", dave.stdout.String(), "<alice>", "<bob>", "<carol>")

	// Carol's process dies without leaving: the room notices when it
	// next tells her something, and tells the others she left.
	carol.kill(t)
	if _, err := io.WriteString(dave.stdin, "anyone there?\n"); err != nil {
		t.Fatal(err)
	}
	for _, u := range []*proc{alice, bob, dave} {
		u.waitOut(t, "<dave> anyone there?\n", "* carol left\n")
	}

	// Bob leaves properly.
	bob.stop(t, 0)
	checkContains(t, "bob's log", bob.stderr.String(), "joined the room", "left the room")
	for _, u := range []*proc{alice, dave} {
		u.waitOut(t, "* bob left\n")
	}

	// The room stops: the users still in it stop too, saying why.
	room.stop(t, 0)
	for _, u := range []*proc{alice, dave} {
		if got := u.wait(t); got != 1 {
			t.Errorf("%s exited with status %d when the room stopped, want 1\n%s", u.name, got, u)
		}
		checkContains(t, u.name+"'s log", u.stderr.String(), "the room closed the connection")
	}

	for _, u := range []*proc{alice, bob, carol, dave, room} {
		if u != room {
			checkChatLines(t, u)
		}
		checkLacks(t, u.name+"'s log", u.stderr.String(), "DATA RACE", "panic")
	}
	checkContains(t, "the room's log", room.stderr.String(),
		`"alice" joined`, `"bob" joined`, `"carol" joined`, `"dave" joined; 4 in the room`,
		`says "hi, bob here"`,
		`"alice" says "how is everyone?"`,
		`"carol" left (its connection was lost)`,
		`"bob" left (said goodbye)`,
		"stopped",
	)
	if out := room.stdout.String(); out != uri+"\n" {
		t.Errorf("the room's standard output is %q, want only the sturdyref", out)
	}
}
