package examples_test

// Tests of examples/chat across restarts of the room: the users hold the
// room's sturdyref (ocap.Node.Hold), so a room that crashes and comes
// back with its store is joined again.

import (
	"io"
	"net"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// freeTCPAddr returns a loopback address with a port that was free a
// moment ago, so that a room restarted on it is found at the same
// address.
func freeTCPAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// waitLog waits until the process's standard error contains each of want,
// in turn, and returns what it holds then.
func (p *proc) waitLog(t *testing.T, want ...string) string {
	t.Helper()
	deadline := time.Now().Add(procTimeout)
	for _, w := range want {
		for !strings.Contains(p.stderr.String(), w) {
			select {
			case <-p.exited:
				if !strings.Contains(p.stderr.String(), w) {
					t.Fatalf("%s exited (%v) before logging %q\n%s", p.name, p.waitErr, w, p)
				}
			default:
			}
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s to log %q\n%s", p.name, w, p)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	return p.stderr.String()
}

// waitMatches waits until the process's standard output has n matches
// of the regular expression re.
func waitMatches(t *testing.T, p *proc, re string, n int) {
	t.Helper()
	rx := regexp.MustCompile(re)
	deadline := time.Now().Add(procTimeout)
	for len(rx.FindAllString(p.stdout.String(), -1)) < n {
		select {
		case <-p.exited:
			t.Fatalf("%s exited (%v) before printing %d lines matching %q\n%s", p.name, p.waitErr, n, re, p)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s to print %d lines matching %q\n%s", p.name, n, re, p)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// say writes a line to a user's standard input.
func say(t *testing.T, u *proc, line string) {
	t.Helper()
	if _, err := io.WriteString(u.stdin, line+"\n"); err != nil {
		t.Fatalf("%s: %v", u.name, err)
	}
}

// TestChatRoomRestart: a room with a store is killed (SIGKILL, no
// goodbye) and started again on the same address with the same store.
// Both users notice, say so, join the new room and carry on chatting; a
// line typed while the room is down gets an error line and is not said,
// and the users keep reading.
func TestChatRoomRestart(t *testing.T) {
	bins := build(t, "chat/room", "chat/user")
	dir := t.TempDir()
	roomArgs := []string{"-addr", freeTCPAddr(t), "-store", filepath.Join(dir, "room.json")}
	room := startProc(t, "room", dir, false, bins["chat/room"], roomArgs...)
	uri := room.sturdyref(t)
	userBin := bins["chat/user"]

	// -timeout bounds how long a line typed while the room is down
	// waits for it.
	alice := chatUser(t, userBin, uri, "alice", "-wait-for", "2", "-timeout", "2s")
	bob := chatUser(t, userBin, uri, "bob", "-wait-for", "2", "-timeout", "2s")
	users := []*proc{alice, bob}
	for _, u := range users {
		u.waitOut(t, "<alice> hello from alice\n", "<bob> hello from bob\n")
	}

	room.kill(t)
	for _, u := range users {
		u.waitLog(t, "lost the connection to the room")
	}

	// While the room is down, a line is not said: an error line, after
	// -timeout, and the user reads on.
	say(t, alice, "is anyone there?")
	stderr := alice.waitLog(t, "error: not said, the room is unreachable")
	checkContains(t, "alice's log", stderr, "context deadline exceeded")

	// The room comes back with the same sturdyref; both users join it.
	room2 := startProc(t, "room", dir, false, bins["chat/room"], roomArgs...)
	if again := room2.sturdyref(t); again != uri {
		t.Fatalf("the restarted room's sturdyref is %q, want %q", again, uri)
	}
	for _, u := range users {
		u.waitLog(t, "reconnected to the room")
	}
	// Each hears the other in the new room (who joined first is here for
	// the other), and they carry on chatting.
	waitMatches(t, alice, `(?m)^\* bob (joined|is here)$`, 2)
	waitMatches(t, bob, `(?m)^\* alice (joined|is here)$`, 2)
	say(t, bob, "back again")
	say(t, alice, "welcome back")
	for _, u := range users {
		u.waitOut(t, "<bob> back again\n", "<alice> welcome back\n")
		checkMatches(t, u.name+"'s output", u.stdout.String(),
			`(?m)^\* alice (joined|is here)\n(.*\n)*\* alice (joined|is here)$`, // before and after the restart
			`(?m)^\* bob (joined|is here)\n(.*\n)*\* bob (joined|is here)$`)
		checkOrder(t, u.name+"'s output", u.stdout.String(), "<alice> hello from alice", "<bob> back again")
		checkLacks(t, u.name+"'s output", u.stdout.String(), "is anyone there?")
		checkLacks(t, u.name+"'s log", u.stderr.String(), "DATA RACE", "panic")
	}
	checkContains(t, "the new room's log", room2.stderr.String(),
		`"alice" joined`, `"bob" joined`, `"bob" says "back again"`, `"alice" says "welcome back"`)

	// A room that stops gracefully stops its users.
	room2.stop(t, 0)
	for _, u := range users {
		if got := u.wait(t); got != 1 {
			t.Errorf("%s exited with status %d when the room stopped, want 1\n%s", u.name, got, u)
		}
		checkContains(t, u.name+"'s log", u.stderr.String(), "the room closed the connection")
		checkChatLines(t, u)
	}
}

// TestChatRoomRestartWithoutStore: a room restarted without its store
// serves another sturdyref; the users, whose sturdyref the new room does
// not know, stop with an error saying so instead of dialing forever.
func TestChatRoomRestartWithoutStore(t *testing.T) {
	bins := build(t, "chat/room", "chat/user")
	addr := freeTCPAddr(t)
	room := startProc(t, "room", "", false, bins["chat/room"], "-addr", addr)
	uri := room.sturdyref(t)
	alice := chatUser(t, bins["chat/user"], uri, "alice")
	alice.waitOut(t, "<alice> hello from alice\n")

	room.kill(t)
	alice.waitLog(t, "lost the connection to the room")
	room2 := startProc(t, "room", "", false, bins["chat/room"], "-addr", addr)
	if again := room2.sturdyref(t); again == uri {
		t.Fatalf("without a store the restarted room serves the same sturdyref %q", uri)
	}
	if got := alice.wait(t); got != 1 {
		t.Errorf("alice exited with status %d, want 1\n%s", got, alice)
	}
	checkMatches(t, "alice's log", alice.stderr.String(),
		`error: .*the host does not know this sturdyref.*the room does not know this sturdyref \(mistyped, or the room restarted without its -store\?\)`)
	if regexp.MustCompile(`reconnected`).MatchString(alice.stderr.String()) {
		t.Errorf("alice says she reconnected\n%s", alice)
	}
	room2.stop(t, 0)
}
