// Command user joins the chatroom of examples/chat/room, says hello, and
// prints what is said in the room.
//
//	go run ./examples/chat/user -name alice -room 'bokbok://127.0.0.1:40671/s/Xq3k...'
//	go run ./examples/chat/user -name bob -room 'bokbok://...' 'hi, bob here'
//	go run ./examples/chat/user -name carol -room 'bokbok://...' -wait-for 3 -stay 10s
//
// It spawns its own user actor in a vat of its own, enlivens the room's
// sturdyref, and joins with a reference to the user actor. It then says
// its greeting (the arguments, or "hello from NAME"), and after that each
// line it reads from standard input. The room sends the user actor
//
//	new-message [from text]   from is a reference to the user actor of
//	                          whoever said text
//	present [who]             who was in the room when this user joined
//	joined [who]              who joined
//	left [who]                who left
//
// and the user actor answers name [] with -name. The speaker's user
// actor lives in another process: the room hands this user a reference to
// it, and forwards what is sent through that reference. The user actor
// asks from for its name before printing, on standard output, lines such
// as
//
//	<alice> hello from alice
//	* bob joined
//	<bob> hi, bob here
//	* alice left
//
// in the order the room sent them (its log goes to standard error). With
// -wait-for N it says its greeting only once N users (itself included) are
// in the room, so that they all hear it.
//
// It stays in the room until Ctrl-C (SIGINT) or SIGTERM, or for -stay if
// given, and then leaves it; the end of standard input does not end it.
//
// It holds the room's sturdyref with ocap.Node.Hold, so it survives a
// restart of the room (one run with -store FILE and the same -addr, so
// that it serves the same sturdyref). If the connection to the room is
// lost, it logs "lost the connection to the room (why); reconnecting", enlivens
// the sturdyref again, with backoff, joins the new room with the same user
// actor, and logs "reconnected to the room"; the new room tells it again
// who is there. A line typed while the room is unreachable is not said:
// it waits up to -timeout for the room to come back, then gets an error
// line, and the user reads on. A line whose say was under way when the
// connection was lost gets an error line too, and is not said again (the
// room may have heard it). If the room shuts down (Ctrl-C on the room) or
// no longer knows the sturdyref (restarted without its -store), the user
// stops with exit status 1.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/bokbok-go/bokbok"
	"github.com/bokbok-go/bokbok/ocap"
)

// user is this process's actor: the room and the other users reach this
// user through references to it. It runs in its vat's goroutine, one
// message at a time, so its fields need no lock.
type user struct {
	name    string
	waitFor int           // close ready once this many users are in the room
	ready   chan struct{} // closed once waitFor users are in the room
	isReady bool

	room    map[ocap.Ref]string // who is in the room, and the name each answered
	pending []*line             // lines to print, in the order the room sent them
}

// line is a line to print, once the name it needs has come back.
type line struct {
	text string
	done bool
}

// Name answers "Name" and "name": what the room and the others ask.
func (u *user) Name() string { return u.name }

// NewMessage prints what from said, once from has told its name.
func (u *user) NewMessage(ctx context.Context, from ocap.Ref, text string) {
	u.printAs(ctx, from, func(name string) string { return "<" + name + "> " + text })
}

// Present learns who was in the room already when this user joined.
func (u *user) Present(ctx context.Context, who ocap.Ref) {
	u.enter(who)
	u.printAs(ctx, who, func(name string) string { return "* " + name + " is here" })
}

// Joined learns who joined the room (this user too).
func (u *user) Joined(ctx context.Context, who ocap.Ref) {
	u.enter(who)
	u.printAs(ctx, who, func(name string) string { return "* " + name + " joined" })
}

// Left learns who left the room. A user who has left may have gone
// already, so its name is the one it gave before.
func (u *user) Left(who ocap.Ref) {
	name, ok := u.room[who]
	if !ok || name == "" {
		name = "someone"
	}
	delete(u.room, who)
	u.pending = append(u.pending, &line{text: "* " + name + " left", done: true})
	u.flush()
}

// rejoin forgets who was in the room: the user is joining anew, after the
// connection to the room was lost, and the room tells again who is there.
// It is not a method of the actor (not exported): run calls it in the
// vat's goroutine, with Vat.Do.
func (u *user) rejoin() {
	clear(u.room)
}

// enter counts who in the room.
func (u *user) enter(who ocap.Ref) {
	if _, ok := u.room[who]; !ok {
		u.room[who] = ""
	}
	if !u.isReady && len(u.room) >= u.waitFor {
		u.isReady = true
		close(u.ready)
	}
}

// printAs asks who for its name, and queues the line format makes of it.
// The line is printed after the lines queued before it: answers to
// different users can come back in any order.
func (u *user) printAs(ctx context.Context, who ocap.Ref, format func(name string) string) {
	l := &line{}
	u.pending = append(u.pending, l)
	ocap.On(ctx, who.Send("name"), func(r ocap.Result) {
		var name string
		if err := r.Decode(&name); err != nil {
			name = "?"
		}
		if _, ok := u.room[who]; ok {
			u.room[who] = name
		}
		l.text, l.done = format(name), true
		u.flush()
	}, func(err error) {
		l.text, l.done = format("?")+fmt.Sprintf("  (could not ask for the name: %v)", err), true
		u.flush()
	})
}

// flush prints the lines at the head of the queue that are ready.
func (u *user) flush() {
	for len(u.pending) > 0 && u.pending[0].done {
		fmt.Println(u.pending[0].text)
		u.pending = u.pending[1:]
	}
}

func main() {
	name := flag.String("name", os.Getenv("USER"), "your name in the room (default $USER)")
	roomURI := flag.String("room", "", "the room's sturdyref, as examples/chat/room printed it")
	waitFor := flag.Int("wait-for", 0, "say the greeting only once this many users (you included) are in the room")
	stay := flag.Duration("stay", 0, "leave the room after this long (0: stay until Ctrl-C)")
	timeout := flag.Duration("timeout", 10*time.Second, "how long to wait for the room to answer, or to come back")
	verbose := flag.Bool("v", false, "log the library's debug records too")
	flag.Usage = func() {
		fmt.Fprint(flag.CommandLine.Output(), "usage: user -name NAME -room STURDYREF [flags] [GREETING...]\n\n")
		flag.PrintDefaults()
	}
	flag.Parse()

	log.SetFlags(log.Ltime)
	log.SetPrefix("user " + *name + ": ")
	if *verbose {
		slog.SetLogLoggerLevel(slog.LevelDebug)
	}
	if *name == "" || *roomURI == "" {
		flag.Usage()
		os.Exit(2)
	}
	sr, err := ocap.ParseSturdyref(*roomURI)
	if err != nil {
		log.Printf("error: %v", err)
		os.Exit(2)
	}
	greeting := strings.Join(flag.Args(), " ")
	if greeting == "" {
		greeting = "hello from " + *name
	}
	if err := run(sr, *name, greeting, *waitFor, *stay, *timeout); err != nil {
		if errors.Is(err, ocap.ErrUnknownSturdyref) {
			err = fmt.Errorf("%w; the room does not know this sturdyref (mistyped, or the room restarted without its -store?)", err)
		}
		log.Printf("error: %v", err)
		os.Exit(1)
	}
}

func run(sr ocap.Sturdyref, name, greeting string, waitFor int, stay, timeout time.Duration) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if stay > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, stay)
		defer cancel()
	}

	// The user actor, in a vat of its own. It closes ready, from the vat,
	// once waitFor users are in the room.
	ready := make(chan struct{})
	vat := ocap.NewVat(name)
	defer vat.Close()
	u := &user{name: name, waitFor: waitFor, ready: ready, room: map[ocap.Ref]string{}}
	me := vat.Spawn(u)

	// The node has nothing of its own to serve: the room reaches the user
	// actor only through the reference sent in join, over the connection
	// this node dials to enliven the room.
	node := &ocap.Node{Logger: slog.Default()}
	defer node.Close()

	// The room's sturdyref, held: each time it is enlivened (the first
	// time, and again after the connection was lost), OnEnliven joins
	// with the user actor before anyone can use the room, and keeps the
	// membership join answers, the capability to speak in this run of
	// the room.
	var membership atomic.Pointer[ocap.Ref]
	room := node.Hold(sr, &ocap.HoldOptions{
		MaxDelay: 2 * time.Second, // a restarted room is found again soon
		OnEnliven: func(ctx context.Context, room ocap.Ref) error {
			jctx, cancel := context.WithTimeout(ctx, timeout)
			defer cancel()
			// Before join, so the actor forgets the old room before
			// the new one tells it who is there.
			if err := vat.Do(jctx, func(context.Context) { u.rejoin() }); err != nil {
				return err
			}
			r, err := room.Send("join", me).Await(jctx)
			if err != nil {
				return fmt.Errorf("join: %w", err)
			}
			m, err := r.Ref()
			if err != nil {
				return fmt.Errorf("join: %w", err)
			}
			membership.Store(&m)
			return nil
		},
	})
	defer room.Close()

	jctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	first, err := room.Ref(jctx)
	if err != nil {
		return err
	}
	log.Printf("joined the room")

	// The watcher follows the connection to the room and reconnects; it
	// reports on gone why it stopped, if not because run is returning.
	// run owns it: it ends once wctx is done, before run returns.
	wctx, stopWatch := context.WithCancel(ctx)
	gone := make(chan error, 1)
	var watching sync.WaitGroup
	watching.Go(func() { watch(wctx, room, first, gone) })
	defer watching.Wait()
	defer stopWatch()

	// Say the greeting, then each line of standard input. One goroutine
	// sends them all, through one reference, so they arrive in order.
	say := func(text string) error {
		sctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		// Waits, up to -timeout, while the room is unreachable; the
		// line is not sent if it does not come back.
		if _, err := room.Ref(sctx); err != nil {
			return fmt.Errorf("not said, the room is unreachable: %w", err)
		}
		if _, err := (*membership.Load()).Send("say", text).Await(sctx); err != nil {
			if errors.Is(err, ocap.ErrDisconnected) {
				return fmt.Errorf("say: %w (the room may or may not have heard it: not said again)", err)
			}
			return fmt.Errorf("say: %w", err)
		}
		return nil
	}
	lines := make(chan string)
	go readLines(lines)
	if waitFor > 1 {
		log.Printf("waiting for %d users to be in the room", waitFor)
	}
	var in <-chan string // standard input, once the greeting is said
	for {
		select {
		case <-ready:
			if err := say(greeting); err != nil {
				log.Printf("error: %v", err)
			}
			ready, in = nil, lines
		case text, ok := <-in:
			if !ok {
				in = nil // the end of standard input: stay, quietly
				continue
			}
			if err := say(text); err != nil {
				log.Printf("error: %v", err)
			}
		case err := <-gone:
			return err
		case <-ctx.Done():
			stopWatch()
			return leave(*membership.Load(), timeout)
		}
	}
}

// watch follows the connection to the room, whose live reference is r.
// When the connection is lost it says so and gets the reference again
// (the handle dials, with backoff, and its OnEnliven joins), then says
// "reconnected to the room". It sends gone why it stops: the room shut
// down, or can no longer be enlivened; or it stops quietly once ctx is
// done.
func watch(ctx context.Context, room *ocap.Persistent, r ocap.Ref, gone chan<- error) {
	for {
		s := r.Session()
		select {
		case <-ctx.Done():
			return
		case <-s.Done():
		}
		if ctx.Err() != nil {
			return // this user is leaving
		}
		if roomShutDown(s) {
			gone <- fmt.Errorf("the room closed the connection: %v", s.Err())
			return
		}
		log.Printf("lost the connection to the room (%v); reconnecting", s.Err())
		var err error
		if r, err = room.Ref(ctx); err != nil {
			if ctx.Err() == nil {
				gone <- err
			}
			return
		}
		log.Printf("reconnected to the room")
	}
}

// roomShutDown reports whether the session ended because the room shut
// its connection down gracefully (it was stopped), rather than because
// the connection was lost (the room crashed, or the network failed).
func roomShutDown(s *ocap.Session) bool {
	return errors.Is(s.Err(), bokbok.ErrShutdown)
}

// leave says goodbye to the room and closes the connection gracefully.
func leave(membership ocap.Ref, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if _, err := membership.Send("leave").Await(ctx); err != nil {
		return fmt.Errorf("leave: %w", err)
	}
	log.Printf("left the room")
	if err := membership.Session().Shutdown(ctx); err != nil {
		log.Printf("closing the connection: %v", err)
	}
	return nil
}

// readLines sends the non-empty lines of standard input to lines, and
// closes it at the end.
func readLines(lines chan<- string) {
	defer close(lines)
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		if text := strings.TrimSpace(sc.Text()); text != "" {
			lines <- text
		}
	}
}
