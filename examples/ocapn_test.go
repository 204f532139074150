package examples_test

// Tests of the OCapN examples: examples/ocapn-greeter,
// examples/ocapn-carfactory, examples/ocapn-chat and
// examples/ocapn-testnode. Each runs the real programs as separate
// processes, which speak OCapN to each other (or to this test) over the
// tcp-testing-only netlayer on 127.0.0.1.

import (
	"context"
	"io"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/bokbok-go/bokbok/ocapn"
	"github.com/bokbok-go/bokbok/ocapn/syrup"
)

// ocapnSturdyref waits for the first line of p's standard output and
// parses it as an OCapN sturdyref on tcp-testing-only.
func ocapnSturdyref(t *testing.T, p *proc) string {
	t.Helper()
	p.waitOut(t, "\n")
	uri, _, _ := strings.Cut(p.stdout.String(), "\n")
	sr, err := ocapn.ParseSturdyref(uri)
	if err != nil {
		t.Fatalf("%s's first line is not a sturdyref: %v\n%s", p.name, err, p)
	}
	if sr.Peer.Transport != ocapn.TestingOnlyTransport || sr.Peer.Hints["host"] != "127.0.0.1" || sr.Peer.Hints["port"] == "" {
		t.Fatalf("%s's sturdyref is %q, want one on tcp-testing-only at 127.0.0.1", p.name, uri)
	}
	return uri
}

// ocapnWaitStderr waits until p's standard error contains want.
func ocapnWaitStderr(t *testing.T, p *proc, want string) {
	t.Helper()
	deadline := time.Now().Add(procTimeout)
	for !strings.Contains(p.stderr.String(), want) {
		select {
		case <-p.exited:
			if !strings.Contains(p.stderr.String(), want) {
				t.Fatalf("%s exited (%v) before logging %q\n%s", p.name, p.waitErr, want, p)
			}
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s to log %q\n%s", p.name, want, p)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// ocapnRun runs a client to its end and returns its exit status and
// outputs.
func ocapnRun(t *testing.T, name, bin string, args ...string) (status int, stdout, stderr string, p *proc) {
	t.Helper()
	p = startProc(t, name, "", false, bin, args...)
	status = p.wait(t)
	return status, p.stdout.String(), p.stderr.String(), p
}

// ocapnCheckClient runs a client that must succeed and print want alone
// on standard output.
func ocapnCheckClient(t *testing.T, server *proc, bin, want string, args ...string) {
	t.Helper()
	status, stdout, _, p := ocapnRun(t, "client", bin, args...)
	if status != 0 || stdout != want+"\n" {
		t.Errorf("client %s: status %d, standard output %q; want status 0 and %q\n%s\n%s", strings.Join(args, " "), status, stdout, want+"\n", p, server)
	}
	checkLacks(t, "the client's standard error", p.stderr.String(), "DATA RACE", "panic")
}

// ocapnCheckServerStops stops a server with SIGTERM and checks that it
// exits with status 0, having printed nothing but its sturdyref on
// standard output.
func ocapnCheckServerStops(t *testing.T, server *proc, uri string) {
	t.Helper()
	server.stop(t, 0)
	if out := server.stdout.String(); out != uri+"\n" {
		t.Errorf("%s's standard output is %q, want only the sturdyref", server.name, out)
	}
	checkContains(t, server.name+"'s log", server.stderr.String(), "INSECURE", "shutting down", "stopped")
	checkLacks(t, server.name+"'s log", server.stderr.String(), "DATA RACE", "panic")
}

func TestOCapNGreeter(t *testing.T) {
	bin := build(t, "ocapn-greeter")["ocapn-greeter"]
	bob := startProc(t, "greeter server", "", false, bin, "-serve")
	uri := ocapnSturdyref(t, bob)

	ocapnCheckClient(t, bob, bin, "Alice heard back: Hello Alice, my name is Bob!", "-sturdyref", uri)
	ocapnCheckClient(t, bob, bin, "Carol heard back: Hello Carol, my name is Bob!", "-sturdyref", uri, "-name", "Carol")

	// A swiss number the server never registered: its node refuses.
	sr, err := ocapn.ParseSturdyref(uri)
	if err != nil {
		t.Fatal(err)
	}
	sr.Swiss = []byte("no-such-object")
	status, stdout, stderr, _ := ocapnRun(t, "client", bin, "-sturdyref", sr.String())
	if status != 1 || stdout != "" || !strings.Contains(stderr, "no object has that swiss number") {
		t.Errorf("client with an unknown swiss number: status %d, want 1 and a refusal\nstandard output:\n%s\nstandard error:\n%s", status, stdout, stderr)
	}
	// No mode, or a URI that is no sturdyref: a usage error.
	for _, args := range [][]string{{}, {"-sturdyref", "ocapn://nothing"}} {
		if status, _, stderr, _ := ocapnRun(t, "client", bin, args...); status != 2 || !strings.Contains(stderr, "-h for help") {
			t.Errorf("ocapn-greeter %q: status %d, want 2 and a usage error\n%s", args, status, stderr)
		}
	}

	ocapnCheckServerStops(t, bob, uri)
	checkContains(t, "the greeter server's log", bob.stderr.String(), `greet #1: "Alice"`, `greet #2: "Carol"`)
	checkLacks(t, "the greeter server's log", bob.stderr.String(), "greet #3")
}

func TestOCapNCarFactory(t *testing.T) {
	bin := build(t, "ocapn-carfactory")["ocapn-carfactory"]
	srv := startProc(t, "car factory server", "", false, bin, "-serve")
	uri := ocapnSturdyref(t, srv)
	ocapnWaitStderr(t, srv, "*** Server up and running!")

	// The client sends drive to the promised car without waiting for it.
	ocapnCheckClient(t, srv, bin, "We hear: *Vroom vroom!* You drive your blue Fork Explorist!", "-sturdyref", uri)
	ocapnCheckClient(t, srv, bin, "We hear: *Vroom vroom!* You drive your red Fork Roadster!", "-sturdyref", uri, "-model", "Roadster", "-color", "red")

	// An order the factory refuses breaks the promise for the car, and so
	// the promise for the noise, which was sent to the car.
	status, stdout, stderr, _ := ocapnRun(t, "client", bin, "-sturdyref", uri, "-model", "")
	if status != 1 || stdout != "" || !strings.Contains(stderr, `UHOH!!! Something went wrong: the car factory's node refused: a car needs a model and a color, got model "" and color "blue"`) {
		t.Errorf("client with no model: status %d, want 1 and the factory's refusal\nstandard output:\n%s\nstandard error:\n%s", status, stdout, stderr)
	}

	ocapnCheckServerStops(t, srv, uri)
	log := srv.stderr.String()
	checkContains(t, "the car factory server's log", log,
		"*** New connection!",
		"factory: made car #1, a blue Fork Explorist\n",
		"car #1: *Vroom vroom!* You drive your blue Fork Explorist!\n",
		"car #2: *Vroom vroom!* You drive your red Fork Roadster!\n",
	)
	checkOrder(t, "the car factory server's log", log, "made car #1", "car #1: ", "made car #2", "car #2: ")
	checkLacks(t, "the car factory server's log", log, "car #3")
}

// The chat: a room and two users. What each types reaches the other,
// printed with the sender's name, which the receiver asks the sender's
// own node for, through a reference the room handed on.
func TestOCapNChat(t *testing.T) {
	bin := build(t, "ocapn-chat")["ocapn-chat"]
	room := startProc(t, "room", "", false, bin, "-serve")
	uri := ocapnSturdyref(t, room)

	alice := startProc(t, "alice", "", true, bin, "-sturdyref", uri, "-name", "alice")
	bob := startProc(t, "bob", "", true, bin, "-sturdyref", uri, "-name", "bob")
	ocapnWaitStderr(t, alice, `joined the room as "alice"`)
	ocapnWaitStderr(t, bob, `joined the room as "bob"`)

	if _, err := io.WriteString(bob.stdin, "hello from bob\n"); err != nil {
		t.Fatal(err)
	}
	alice.waitOut(t, "bob: hello from bob\n")
	if _, err := io.WriteString(alice.stdin, "hi bob, alice here\nhow are you?\n"); err != nil {
		t.Fatal(err)
	}
	bob.waitOut(t, "alice: hi bob, alice here\n", "alice: how are you?\n")
	checkOrder(t, "bob's output", bob.stdout.String(), "alice: hi bob", "alice: how are you?")

	// At the end of her input alice leaves; the room forgets her when it
	// next sends her something.
	alice.stdin.Close()
	if status := alice.wait(t); status != 0 {
		t.Errorf("alice exited with status %d at the end of her input, want 0\n%s", status, alice)
	}
	if _, err := io.WriteString(bob.stdin, "anyone there?\n"); err != nil {
		t.Fatal(err)
	}
	ocapnWaitStderr(t, room, "a user left (its session ended); 1 in the room")

	bob.stop(t, 0) // Ctrl-C or SIGTERM: a clean exit
	ocapnCheckServerStops(t, room, uri)

	// Each user printed only what the other said.
	if got, want := alice.stdout.String(), "bob: hello from bob\n"; got != want {
		t.Errorf("alice's standard output is %q, want %q", got, want)
	}
	if got, want := bob.stdout.String(), "alice: hi bob, alice here\nalice: how are you?\n"; got != want {
		t.Errorf("bob's standard output is %q, want %q", got, want)
	}
	for _, p := range []*proc{alice, bob} {
		checkLacks(t, p.name+"'s log", p.stderr.String(), "error", "DATA RACE", "panic")
	}
	checkContains(t, "the room's log", room.stderr.String(), `"alice" joined`, `"bob" joined`, `a message for 2 users: "hello from bob"`)
}

// examples/ocapn-testnode serves the OCapN test suite's objects; this
// drives its car factory builder from a node of this test's own.
func TestOCapNTestnode(t *testing.T) {
	bin := build(t, "ocapn-testnode")["ocapn-testnode"]
	tn := startProc(t, "ocapn-testnode", "", false, bin, "-listen", "127.0.0.1:0")
	tn.waitOut(t, "\n")
	line, _, _ := strings.Cut(tn.stdout.String(), "\n")
	if !regexp.MustCompile(`^ocapn://[0-9a-f]+\.tcp-testing-only\?host=127\.0\.0\.1&port=[1-9][0-9]*$`).MatchString(line) {
		t.Fatalf("the test node's first line is %q, want its locator\n%s", line, tn)
	}
	peer, err := ocapn.ParsePeer(line)
	if err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), procTimeout)
	defer cancel()
	nl, err := ocapn.ListenTestingOnlyTCP("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	node := ocapn.NewNode(ocapn.Config{})
	t.Cleanup(func() { node.Close() })
	node.AddNetlayer(nl)

	builder := node.Enliven(ocapn.Sturdyref{Peer: peer, Swiss: []byte("JadQ0++RzsD4M+40uLxTWVaVqM10DcBJ")})
	factory := node.Send(builder)                                                 // no arguments: a car factory
	car := node.Send(factory, []any{syrup.Symbol("blue"), syrup.Symbol("sedan")}) // one [color model]: one car
	noise, err := node.Send(car).Wait(ctx)
	if err != nil {
		t.Fatalf("driving the test node's car: %v\n%s", err, tn)
	}
	if want := "Vroom! I am a blue sedan car!"; noise != want {
		t.Errorf("the car says %#v, want %q", noise, want)
	}

	node.Close()
	tn.stop(t, 0)
	checkLacks(t, "the test node's log", tn.stderr.String(), "DATA RACE", "panic")
}
