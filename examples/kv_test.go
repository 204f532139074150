package examples_test

// Tests of examples/kv: the server and clients run as real processes over
// a Unix socket, in secure mode. The waits are for output, with generous
// deadlines, so that a loaded machine only makes them slower.

import (
	"context"
	"errors"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// kvTimeout bounds every wait of these tests.
const kvTimeout = 90 * time.Second

// kvClients runs examples/kv/client against one server.
type kvClients struct {
	bin  string
	args []string // -addr and the key flags
}

// run runs a client to its end and returns its standard output and log.
func (k *kvClients) run(t *testing.T, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), kvTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, k.bin, append(append([]string{}, k.args...), args...)...)
	var o, e syncBuffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err = cmd.Run()
	return o.String(), e.String(), err
}

// ok runs a client that must succeed and print want on standard output.
func (k *kvClients) ok(t *testing.T, want string, args ...string) {
	t.Helper()
	stdout, stderr, err := k.run(t, args...)
	if err != nil || stdout != want {
		t.Fatalf("kv client %s: %v\nstdout: %q, want %q\nlog:\n%s", strings.Join(args, " "), err, stdout, want, stderr)
	}
}

// fails runs a client that must exit with status 1, logging an error
// that contains each of want.
func (k *kvClients) fails(t *testing.T, want []string, args ...string) {
	t.Helper()
	stdout, stderr, err := k.run(t, args...)
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 1 || stdout != "" {
		t.Fatalf("kv client %s: got %v and stdout %q, want exit status 1 and nothing\nlog:\n%s", strings.Join(args, " "), err, stdout, stderr)
	}
	checkContains(t, "the kv client's log", stderr, append(want, "error: ")...)
}

// kvProcess is a client that runs in the background: a watch or a poll.
type kvProcess struct {
	process
	stdout, stderr *syncBuffer
}

func (k *kvClients) start(t *testing.T, args ...string) *kvProcess {
	t.Helper()
	p := &kvProcess{stdout: new(syncBuffer), stderr: new(syncBuffer)}
	p.cmd = exec.Command(k.bin, append(append([]string{}, k.args...), args...)...)
	p.cmd.Stdout, p.cmd.Stderr = p.stdout, p.stderr
	p.start(t)
	return p
}

// kvWait waits until out contains s, failing if p exits first (p may be
// nil).
func kvWait(t *testing.T, what string, out *syncBuffer, s string, p *process) {
	t.Helper()
	deadline := time.Now().Add(kvTimeout)
	for !strings.Contains(out.String(), s) {
		if p != nil {
			select {
			case <-p.exited:
				t.Fatalf("%s exited before printing %q:\n%s", what, s, out)
			default:
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s to print %q:\n%s", what, s, out)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// wait waits until the client has exited, and returns its exit status.
func (p *kvProcess) wait(t *testing.T) int {
	t.Helper()
	select {
	case <-p.exited:
	case <-time.After(kvTimeout):
		t.Fatalf("the kv client did not exit\nstdout:\n%s\nlog:\n%s", p.stdout, p.stderr)
	}
	var exit *exec.ExitError
	if errors.As(p.waitErr, &exit) {
		return exit.ExitCode()
	}
	if p.waitErr != nil {
		t.Fatal(p.waitErr)
	}
	return 0
}

func TestKV(t *testing.T) {
	bins := build(t, "kv/server", "kv/client")
	dir := t.TempDir()
	sock := filepath.Join(dir, "kv.sock")
	auth := []string{"-user", "tester", "-key-file", writeKey(t, dir, "tester.key")}
	srv := startServer(t, bins["kv/server"], sock, append(auth, "-tenants", "default,acme")...)
	kv := &kvClients{bin: bins["kv/client"], args: append([]string{"-addr", sock}, auth...)}

	// Put, get, list, delete.
	kv.ok(t, "greeting = \"hello\" (version 1)\n", "put", "greeting", "hello")
	kv.ok(t, "greeting = \"hello\" (version 1)\n", "get", "greeting")
	kv.ok(t, "app/a = \"1\" (version 2)\n", "put", "app/a", "1")
	kv.ok(t, "app/b = \"2\" (version 3)\n", "put", "app/b", "2")
	kv.ok(t, "app/a = \"1\" (version 2)\napp/b = \"2\" (version 3)\n", "list", "app/")
	kv.ok(t, "app/a = \"1\" (version 2)\napp/b = \"2\" (version 3)\ngreeting = \"hello\" (version 1)\n") // list, the default
	kv.ok(t, "deleted app/a (was version 2)\n", "delete", "app/a")
	kv.fails(t, []string{`[kv.not_found]: no key "app/a"`}, "get", "app/a")
	kv.fails(t, []string{`[kv.not_found]: no key "app/a"`}, "delete", "app/a")

	// Compare-and-set on the version.
	kv.fails(t, []string{`[kv.conflict]: "greeting" is at version 1, not 7`}, "-if-version", "7", "put", "greeting", "hi")
	kv.fails(t, []string{`[kv.conflict]: "greeting" is at version 1, not 0`}, "-if-version", "0", "put", "greeting", "hi")
	kv.ok(t, "greeting = \"hi\" (version 4)\n", "-if-version", "1", "put", "greeting", "hi")
	kv.ok(t, "fresh = \"new\" (version 5)\n", "-if-version", "0", "put", "fresh", "new")
	kv.fails(t, []string{`[kv.conflict]: "fresh" is at version 5, not 4`}, "-if-version", "4", "delete", "fresh")
	kv.ok(t, "greeting = \"hi\" (version 4)\n", "get", "greeting")

	// Tenants: each has its own keys; one the server does not serve is
	// refused by its middleware.
	kv.ok(t, "", "-tenant", "acme", "list")
	kv.ok(t, "greeting = \"acme's\" (version 1)\n", "-tenant", "acme", "put", "greeting", "acme's")
	kv.fails(t, []string{`[kv.forbidden]: no tenant "nobody" here`}, "-tenant", "nobody", "get", "greeting")

	// A watch: the server calls the watching client back with each change
	// under its prefix, made by other clients.
	watch := kv.start(t, "watch", "app/")
	kvWait(t, "the watch", watch.stderr, `watching "app/"`, &watch.process)
	kv.ok(t, "other/x = \"no\" (version 6)\n", "put", "other/x", "no")
	kv.ok(t, "app/c = \"3\" (version 7)\n", "put", "app/c", "3")
	kv.ok(t, "deleted app/b (was version 3)\n", "delete", "app/b")
	kvWait(t, "the watch", watch.stdout, "deleted: app/b\n", &watch.process)
	// The changes arrive in order, so other/x, put first, would be there.
	if got, want := watch.stdout.String(), "app/b = \"2\" (version 3)\nchanged: app/c = \"3\" (version 7)\ndeleted: app/b\n"; got != want {
		t.Errorf("the watch printed %q, want %q", got, want)
	}
	if err := watch.cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	if status := watch.wait(t); status != 0 {
		t.Errorf("the watch stopped with Ctrl-C exited with status %d:\n%s", status, watch.stderr)
	}

	// A long poll returns when another client puts the key.
	poll := kv.start(t, "poll", "greeting")
	kvWait(t, "the server", srv.out, `kv.poll "greeting": waiting for a version other than 4`, &srv.process)
	kv.ok(t, "greeting = \"again\" (version 8)\n", "put", "greeting", "again")
	if status := poll.wait(t); status != 0 || poll.stdout.String() != "changed: greeting = \"again\" (version 8)\n" {
		t.Errorf("the poll exited with status %d and printed %q, want the new greeting:\n%s", status, poll.stdout, poll.stderr)
	}
	// Polling for a version already gone answers at once; a poll whose
	// deadline passes reports no change.
	kv.ok(t, "changed: greeting = \"again\" (version 8)\n", "poll", "greeting", "4")
	kv.ok(t, "no change within 1s\n", "-timeout", "1s", "poll", "greeting")

	// A graceful shutdown ends a long poll early, unchanged, and a watch.
	watch = kv.start(t, "watch")
	kvWait(t, "the watch", watch.stderr, `watching ""`, &watch.process)
	poll = kv.start(t, "poll", "quiet")
	kvWait(t, "the server", srv.out, `kv.poll "quiet": waiting for a version other than 0`, &srv.process)
	srv.stop(t, sock)
	if status := poll.wait(t); status != 0 || poll.stdout.String() != "unchanged: the server ended the poll early (shutting down)\n" {
		t.Errorf("the poll cut short exited with status %d and printed %q:\n%s", status, poll.stdout, poll.stderr)
	}
	if status := watch.wait(t); status != 1 {
		t.Errorf("the watch exited with status %d when the server stopped, want 1", status)
	}
	checkContains(t, "the watch's log", watch.stderr.String(), "error: the server closed the connection: bokbok: connection closed: bokbok: connection shutting down")

	out := srv.out.String()
	checkContains(t, "the kv server's output", out,
		`listening on `+sock+` (secure: user "tester"), tenants default,acme`,
		"shutting down: ending polls and watches",
		"stopped",
	)
	checkMatches(t, "the kv server's output", out,
		`(?m)^kv-server: \d\d:\d\d:\d\d kv\.put user="tester" tenant="default" request-id="[A-Z2-7]{10}": ok \(`,
		`kv\.get user="tester" tenant="nobody" request-id="[A-Z2-7]{10}": bokbok: remote error \[kv\.forbidden\]`,
		`kv\.poll user="tester" tenant="default" request-id="[A-Z2-7]{10}": ok \(`,
	)
	checkLacks(t, "the kv server's output", out, "fell too far behind", "WARN", "ERROR")
}

// Without a key, the kv server makes one and prints the command that runs
// the client with it, which lists the keys.
func TestKVGeneratesKey(t *testing.T) {
	bins := build(t, "kv/server", "kv/client")
	sock := filepath.Join(t.TempDir(), "kv.sock")
	srv := startServer(t, bins["kv/server"], sock)
	args := printedClientCommand(t, srv.out.String(), "go run ./examples/kv/client ", sock)
	kv := &kvClients{bin: bins["kv/client"], args: args}
	kv.ok(t, "")
	kv.ok(t, "k = \"v\" (version 1)\n", "put", "k", "v")
	kv.ok(t, "k = \"v\" (version 1)\n")
	srv.stop(t, sock)
}
