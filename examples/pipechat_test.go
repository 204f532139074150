package examples_test

// Tests of examples/pipechat, with real processes: a hub run by "bokbok
// pipes hub" (built from cmd/bokbok) and pipechat users typing on their
// standard input.

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// pipeTimeout bounds every wait of these tests: a hub stopping gives its
// connections a grace period of seconds, and nodes reconnect with a
// backoff of up to 10s; generous, for -race on a loaded machine.
const pipeTimeout = 90 * time.Second

// pipeNet is a network of pipechat users: the binaries, the users' keys
// and the hub's keys file, all in one directory.
type pipeNet struct {
	bokbok, pipechat string
	dir              string // where the processes run: keys, users.txt, the data directories
	addr             string // the hub's
	persistent       bool
}

// newPipeNet builds pipechat and bokbok and makes a key for each user.
func newPipeNet(t *testing.T, persistent bool, users ...string) *pipeNet {
	t.Helper()
	bins := build(t, "pipechat", "../cmd/bokbok")
	n := &pipeNet{bokbok: bins["../cmd/bokbok"], pipechat: bins["pipechat"], dir: t.TempDir(), addr: freeTCPAddr(t), persistent: persistent}
	var lines strings.Builder
	for _, u := range users {
		key, err := os.ReadFile(writeKey(t, n.dir, u+".key"))
		if err != nil {
			t.Fatal(err)
		}
		lines.WriteString(u + " " + string(key)) // the key ends with a newline
	}
	if err := os.WriteFile(filepath.Join(n.dir, "users.txt"), []byte(lines.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	return n
}

// startHub starts the hub, always on the same address and data directory,
// and waits until it listens.
func (n *pipeNet) startHub(t *testing.T) *proc {
	t.Helper()
	hub := startProc(t, "hub", n.dir, false, n.bokbok, "pipes", "hub", "--listen", n.addr, "--keys", "users.txt", "--data", "hub-data")
	waitLines(t, hub, hub.stderr, `pipes hub: listening on `, 1)
	return hub
}

// stopHub stops the hub with SIGINT (Ctrl-C) and checks that it exits
// with status 0.
func stopHub(t *testing.T, hub *proc) {
	t.Helper()
	if err := hub.cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	select {
	case <-hub.exited:
	case <-time.After(pipeTimeout):
		t.Fatalf("the hub did not stop on SIGINT\n%s", hub)
	}
	if hub.waitErr != nil {
		t.Errorf("the hub: %v after SIGINT, want exit status 0\n%s", hub.waitErr, hub)
	}
}

// startUser starts pipechat for user, in the user's own data directory
// (the same for each run), and waits until it is connected to the hub.
func (n *pipeNet) startUser(t *testing.T, user string) *proc {
	t.Helper()
	args := []string{"-hub", n.addr, "-user", user, "-key-file", user + ".key", "-dir", user + "-data"}
	if n.persistent {
		args = append(args, "-persistent")
	}
	u := startProc(t, user, n.dir, true, n.pipechat, args...)
	waitConnected(t, u, n.addr, 1)
	return u
}

// waitConnected waits until u has connected to the hub n times.
func waitConnected(t *testing.T, u *proc, addr string, n int) {
	t.Helper()
	waitLines(t, u, u.stdout, `(?m)^\* connected to `+regexp.QuoteMeta(addr)+`$`, n)
}

// waitLines waits until out, one of p's outputs, has n matches of re.
func waitLines(t *testing.T, p *proc, out *syncBuffer, re string, n int) {
	t.Helper()
	rx := regexp.MustCompile(re)
	deadline := time.Now().Add(pipeTimeout)
	for len(rx.FindAllString(out.String(), -1)) < n {
		select {
		case <-p.exited:
			if len(rx.FindAllString(out.String(), -1)) < n {
				t.Fatalf("%s exited (%v) before printing %d lines matching %q\n%s", p.name, p.waitErr, n, re, p)
			}
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s to print %d lines matching %q\n%s", p.name, n, re, p)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// chatLine is the regular expression of the line u prints for a message
// from sender.
func chatLine(u *proc, sender, text string) string {
	who := regexp.QuoteMeta(sender)
	if sender == u.name {
		who += ` \(me\)`
	}
	return `(?m)^\[\d\d:\d\d:\d\d\] ` + who + `: ` + regexp.QuoteMeta(text) + `$`
}

// waitChat waits until u has printed the message text from sender, and
// checks that it printed it once.
func waitChat(t *testing.T, u *proc, sender, text string) {
	t.Helper()
	re := chatLine(u, sender, text)
	waitLines(t, u, u.stdout, re, 1)
	if n := len(regexp.MustCompile(re).FindAllString(u.stdout.String(), -1)); n != 1 {
		t.Errorf("%s printed %q from %s %d times, want once\n%s", u.name, text, sender, n, u)
	}
}

// quit closes u's standard input (Ctrl-D) and checks that it exits with
// status 0, having said nothing on standard error.
func quit(t *testing.T, u *proc) {
	t.Helper()
	u.stdin.Close()
	waitQuit(t, u, "the end of its input")
}

// interrupt sends u SIGINT (Ctrl-C) and checks that it exits with status
// 0, having said nothing on standard error.
func interrupt(t *testing.T, u *proc) {
	t.Helper()
	if err := u.cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	waitQuit(t, u, "SIGINT")
}

func waitQuit(t *testing.T, u *proc, after string) {
	t.Helper()
	select {
	case <-u.exited:
	case <-time.After(pipeTimeout):
		t.Fatalf("%s did not exit after %s\n%s", u.name, after, u)
	}
	if u.waitErr != nil || u.stderr.String() != "" {
		t.Errorf("%s: %v after %s, want exit status 0 and nothing on standard error\n%s", u.name, u.waitErr, after, u)
	}
}

// chatLines returns the chat lines in out, without their times.
func chatLines(out string) []string {
	var lines []string
	for _, m := range regexp.MustCompile(`(?m)^\[\d\d:\d\d:\d\d\] (.*)$`).FindAllStringSubmatch(out, -1) {
		lines = append(lines, strings.Replace(m[1], " (me): ", ": ", 1))
	}
	return lines
}

// TestPipechat: three users on a persistent pipeline; each line typed by
// one reaches everyone, with the right sender (marked "(me)" for one's
// own), in the same order everywhere, the hub's.
func TestPipechat(t *testing.T) {
	users := []string{"alice", "bob", "carol"}
	n := newPipeNet(t, true, users...)
	hub := n.startHub(t)
	var ps []*proc
	for _, u := range users {
		ps = append(ps, n.startUser(t, u))
	}
	for _, p := range ps {
		say(t, p, "hello from "+p.name)
	}
	for _, p := range ps {
		for _, from := range users {
			waitChat(t, p, from, "hello from "+from)
		}
	}
	say(t, ps[1], "nice to see you all")
	for _, p := range ps {
		waitChat(t, p, "bob", "nice to see you all")
	}
	for _, p := range ps {
		if p.name == "carol" {
			interrupt(t, p)
		} else {
			quit(t, p)
		}
		checkMatches(t, p.name+"'s output", p.stdout.String(), `^\* `+p.name+` on CHAT \(persistent\), connecting to `)
		checkLacks(t, p.name+"'s output", p.stdout.String(), "not sent", "outbox", "disconnected", "cannot connect")
		if got, want := strings.Join(chatLines(p.stdout.String()), "\n"), strings.Join(chatLines(ps[0].stdout.String()), "\n"); got != want {
			t.Errorf("%s's messages are, in order:\n%s\nwant alice's order:\n%s", p.name, got, want)
		}
	}
	stopHub(t, hub)
}

// TestPipechatOffline: on a persistent pipeline, a line typed while the
// hub is down waits in the node's outbox and reaches the others once the
// hub is back, on the same data directory and address; it waits there
// across a restart of pipechat too, which quits without waiting for the
// hub.
func TestPipechatOffline(t *testing.T) {
	n := newPipeNet(t, true, "alice", "bob")
	hub := n.startHub(t)
	alice, bob := n.startUser(t, "alice"), n.startUser(t, "bob")
	say(t, alice, "before the hub stops")
	waitChat(t, bob, "alice", "before the hub stops")
	waitChat(t, alice, "alice", "before the hub stops")

	stopHub(t, hub)
	const kept = `(?m)^\* disconnected: .*; messages are kept and sent on reconnect$`
	for _, u := range []*proc{alice, bob} {
		waitLines(t, u, u.stdout, kept, 1)
	}
	say(t, alice, "typed while the hub is down")
	waitLines(t, alice, alice.stdout, `(?m)^\* kept in the outbox; sent when the hub is back$`, 1)

	hub = n.startHub(t)
	for _, u := range []*proc{alice, bob} {
		waitConnected(t, u, n.addr, 2)
	}
	waitChat(t, bob, "alice", "typed while the hub is down")
	waitChat(t, alice, "alice", "typed while the hub is down")
	checkOrder(t, "bob's output", bob.stdout.String(), "before the hub stops", "disconnected", "typed while the hub is down")

	// The hub stops again; alice types a line and quits at once (Ctrl-C):
	// the line stays in her outbox, on disk, and her next run sends it.
	stopHub(t, hub)
	waitLines(t, alice, alice.stdout, kept, 2)
	say(t, alice, "typed before quitting")
	waitLines(t, alice, alice.stdout, `(?m)^\* kept in the outbox`, 2)
	interrupt(t, alice)
	checkMatches(t, "alice's output", alice.stdout.String(), `(?m)^\* 1 message\(s\) wait in alice-data; they are sent when pipechat next connects$`)

	hub = n.startHub(t)
	waitConnected(t, bob, n.addr, 3)
	alice = n.startUser(t, "alice")
	waitChat(t, bob, "alice", "typed before quitting")
	waitChat(t, alice, "alice", "typed before quitting")
	// Alice's node had given her the earlier messages in her first run:
	// her second run starts after them.
	checkLacks(t, "alice's second run", alice.stdout.String(), "before the hub stops", "typed while the hub is down")

	quit(t, alice)
	quit(t, bob)
	stopHub(t, hub)
}

// TestPipechatTransient: without -persistent, CHAT is transient. A line
// reaches the users connected when it is put, and no one else: bob, not
// running when alice typed a line, never gets it, not even when he comes
// back. That absence is not a matter of waiting long enough: alice types a
// second line once bob is back, and packets arrive in the hub's order,
// so once bob has printed the second line he would have printed the
// first before it. A line typed while the hub is down is not sent at all.
func TestPipechatTransient(t *testing.T) {
	n := newPipeNet(t, false, "alice", "bob")
	hub := n.startHub(t)
	alice, bob := n.startUser(t, "alice"), n.startUser(t, "bob")
	say(t, alice, "while bob is here")
	waitChat(t, bob, "alice", "while bob is here")
	quit(t, bob)

	say(t, alice, "while bob is away")
	waitChat(t, alice, "alice", "while bob is away") // it went through the hub

	bob = n.startUser(t, "bob")
	say(t, alice, "bob is back")
	waitChat(t, bob, "alice", "bob is back")
	checkLacks(t, "bob's second run", bob.stdout.String(), "while bob is away", "while bob is here")
	checkMatches(t, "bob's output", bob.stdout.String(), `^\* bob on CHAT \(transient\), connecting to `)
	say(t, bob, "/history")
	waitLines(t, bob, bob.stdout, `(?m)^\* #CHAT is transient: it keeps no history$`, 1)

	stopHub(t, hub)
	waitLines(t, alice, alice.stdout, `(?m)^\* disconnected: .*; messages typed now are not sent$`, 1)
	say(t, alice, "nobody hears this")
	waitLines(t, alice, alice.stdout, `(?m)^\* not sent: not connected`, 1)
	quit(t, alice)
	quit(t, bob)
	checkLacks(t, "alice's output", alice.stdout.String(), "outbox", "wait in")
}

// A wrong key: pipechat says it cannot connect, once, and keeps trying.
func TestPipechatWrongKey(t *testing.T) {
	n := newPipeNet(t, true, "alice")
	hub := n.startHub(t)
	writeKey(t, n.dir, "alice.key") // a new key, not the hub's
	u := startProc(t, "alice", n.dir, true, n.pipechat, "-hub", n.addr, "-user", "alice", "-key-file", "alice.key", "-dir", "alice-data", "-persistent")
	waitLines(t, u, u.stdout, `(?m)^\* cannot connect: .*authentication failed.*; trying again$`, 1)
	say(t, u, "kept for later")
	waitLines(t, u, u.stdout, `(?m)^\* kept in the outbox`, 1)
	quit(t, u)
	if n := strings.Count(u.stdout.String(), "cannot connect"); n != 1 {
		t.Errorf("alice said %d times that she cannot connect, want once\n%s", n, u)
	}
	stopHub(t, hub)
}

// Bad flags: exit status 2 and a usage line.
func TestPipechatUsage(t *testing.T) {
	bins := build(t, "pipechat")
	out, err := exec.Command(bins["pipechat"], "-hub", "127.0.0.1:1").CombinedOutput()
	if e, ok := err.(*exec.ExitError); !ok || e.ExitCode() != 2 || !strings.Contains(string(out), "usage: pipechat") {
		t.Errorf("pipechat without -user: %v, want exit status 2 and a usage line\n%s", err, out)
	}
}

// historyLines returns the lines of /history and /search in out: "#SEQ
// [TIME] SENDER: TEXT", without their times.
func historyLines(out string) []string {
	var lines []string
	for _, m := range regexp.MustCompile(`(?m)^(#\d+) \[\d\d:\d\d:\d\d\] (.*)$`).FindAllStringSubmatch(out, -1) {
		lines = append(lines, m[1]+" "+m[2])
	}
	return lines
}

// TestPipechatHistory: on a persistent CHAT, /history N prints the last N
// messages, oldest first, with their numbers, and /search the ones that
// match.
func TestPipechatHistory(t *testing.T) {
	n := newPipeNet(t, true, "alice", "bob")
	hub := n.startHub(t)
	alice, bob := n.startUser(t, "alice"), n.startUser(t, "bob")
	texts := []string{"good morning", "who wants a pineapple", "the third line", "and the fourth"}
	for _, s := range texts {
		say(t, alice, s)
	}
	waitChat(t, bob, "alice", texts[3]) // all of them are on the hub

	say(t, bob, "/history 2")
	waitLines(t, bob, bob.stdout, `(?m)^\* the last 2 message\(s\) of #CHAT:$`, 1)
	waitLines(t, bob, bob.stdout, `(?m)^#4 \[\d\d:\d\d:\d\d\] alice: and the fourth$`, 1)
	if got, want := strings.Join(historyLines(bob.stdout.String()), "\n"), "#3 alice: the third line\n#4 alice: and the fourth"; got != want {
		t.Errorf("bob's /history 2 printed:\n%s\nwant:\n%s\n%s", got, want, bob)
	}

	say(t, bob, "/search PineApple")
	waitLines(t, bob, bob.stdout, `(?m)^\* 1 message\(s\) of #CHAT match "PineApple", best first:$`, 1)
	waitLines(t, bob, bob.stdout, `(?m)^#2 \[\d\d:\d\d:\d\d\] alice: who wants a pineapple$`, 1)

	say(t, alice, "/history")
	waitLines(t, alice, alice.stdout, `(?m)^\* the last 4 message\(s\) of #CHAT:$`, 1)
	waitLines(t, alice, alice.stdout, `(?m)^#4 \[\d\d:\d\d:\d\d\] alice \(me\): and the fourth$`, 1)
	say(t, alice, "/nonsense")
	waitLines(t, alice, alice.stdout, `(?m)^\* unknown command "/nonsense"$`, 1)
	waitLines(t, alice, alice.stdout, `(?m)^\*   /history \[N\] +print the last N`, 1)

	quit(t, alice)
	quit(t, bob)
	stopHub(t, hub)
}

// TestPipechatChannels: alice and bob join ROOM; bob goes back to CHAT,
// and alice's line in ROOM reaches him marked with its channel; /channels
// lists both channels.
func TestPipechatChannels(t *testing.T) {
	n := newPipeNet(t, true, "alice", "bob")
	hub := n.startHub(t)
	alice, bob := n.startUser(t, "alice"), n.startUser(t, "bob")
	say(t, bob, "/join ROOM")
	waitLines(t, bob, bob.stdout, `(?m)^\* now in #ROOM: `, 1)
	say(t, bob, "/join CHAT")
	waitLines(t, bob, bob.stdout, `(?m)^\* now in #CHAT: `, 1)
	say(t, alice, "/join ROOM")
	waitLines(t, alice, alice.stdout, `(?m)^\* now in #ROOM: `, 1)

	say(t, alice, "in the room")
	waitLines(t, bob, bob.stdout, `(?m)^#ROOM \[\d\d:\d\d:\d\d\] alice: in the room$`, 1)
	waitChat(t, alice, "alice", "in the room") // her current channel: no prefix
	say(t, alice, "/join CHAT")
	say(t, alice, "back in the chat")
	waitChat(t, bob, "alice", "back in the chat")

	say(t, bob, "/channels")
	waitLines(t, bob, bob.stdout, `(?m)^\* 2 channel\(s\), \* the current one:$`, 1)
	waitLines(t, bob, bob.stdout, `(?m)^\* \* CHAT +persistent +#1 +joined$`, 1)
	waitLines(t, bob, bob.stdout, `(?m)^\*   ROOM +persistent +#1 +joined$`, 1)
	checkLacks(t, "bob's output", bob.stdout.String(), "in the room\n#", "#CHAT [")

	quit(t, alice)
	quit(t, bob)
	stopHub(t, hub)
}

// TestPipechatDirect: alice and bob /dm each other into dm:alice+bob, a
// private end-to-end encrypted channel; lines get across both ways, and
// its history is read, opened, from the hub, which holds ciphertext only.
// carol cannot join it.
func TestPipechatDirect(t *testing.T) {
	n := newPipeNet(t, true, "alice", "bob", "carol")
	hub := n.startHub(t)
	alice, bob, carol := n.startUser(t, "alice"), n.startUser(t, "bob"), n.startUser(t, "carol")
	say(t, alice, "/dm bob")
	waitLines(t, alice, alice.stdout, `(?m)^\* now in #dm:alice\+bob, end-to-end encrypted, with bob only: `, 1)
	say(t, bob, "/dm alice")
	waitLines(t, bob, bob.stdout, `(?m)^\* now in #dm:alice\+bob, end-to-end encrypted, with alice only: `, 1)

	say(t, alice, "psst bob")
	waitChat(t, bob, "alice", "psst bob")
	say(t, bob, "hi alice")
	waitChat(t, alice, "bob", "hi alice")
	waitChat(t, alice, "alice", "psst bob")

	say(t, bob, "/history")
	waitLines(t, bob, bob.stdout, `(?m)^\* the last 2 message\(s\) of #dm:alice\+bob:$`, 1)
	waitLines(t, bob, bob.stdout, `(?m)^#\d+ \[\d\d:\d\d:\d\d\] bob \(me\): hi alice$`, 1)
	checkMatches(t, "bob's output", bob.stdout.String(), `(?m)^#\d+ \[\d\d:\d\d:\d\d\] alice: psst bob$`)
	say(t, alice, "/channels")
	waitLines(t, alice, alice.stdout, `(?m)^\* \* dm:alice\+bob +encrypted +#\d+ +joined$`, 1)

	say(t, carol, "/join dm:alice+bob")
	waitLines(t, carol, carol.stdout, `(?m)^\* the hub refuses #dm:alice\+bob: forbidden: .*not a member`, 1)
	say(t, carol, "/channels")
	waitLines(t, carol, carol.stdout, `(?m)^\* 1 channel\(s\), `, 1)
	checkLacks(t, "carol's output", carol.stdout.String(), "psst", "hi alice", "encrypted")

	for _, u := range []*proc{alice, bob, carol} {
		quit(t, u)
	}
	stopHub(t, hub)
	err := filepath.WalkDir(filepath.Join(n.dir, "hub-data"), func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := os.ReadFile(path)
		if strings.Contains(string(data), "psst") {
			t.Errorf("the hub's %s holds the plain text of a direct message", path)
		}
		return err
	})
	if err != nil {
		t.Error(err)
	}
}
