// Command ocapn-chat is the simple chat of Spritely Goblins' OCapN
// chapter (Guile Goblins, "Example Simple chat via TCP-TLS":
// simple-chat-chatroom.scm serves a ^chatroom and prints its sturdyref,
// simple-chat-user.scm joins it with a ^user) translated to Go with
// package ocapn. It speaks OCapN, so it is meant to interoperate with
// Spritely Goblins (Guile or Racket) over the tcp-testing-only netlayer,
// the one the OCapN test suite and Goblins' interoperability testing use.
//
// tcp-testing-only is NOT SECURE: nothing is encrypted or authenticated,
// and a peer is whoever it claims to be. Use it for testing only, on a
// machine or network you trust. (The seed program uses the tcp-tls
// netlayer; this package does not have Goblins' tcp-tls, so the
// translation uses the one netlayer both sides have.) Like the seed, the
// chat itself has no authentication: anyone holding the room's sturdyref
// may join, and a user may claim any name.
//
// The room prints its sturdyref alone on the first line of standard
// output:
//
//	go run ./examples/ocapn-chat -serve
//
// Each user joins it, sends every line typed on standard input, and
// prints what the others say as "NAME: text" on standard output; Ctrl-D
// (end of input) or Ctrl-C leaves:
//
//	go run ./examples/ocapn-chat -sturdyref 'ocapn://...tcp-testing-only/s/...?host=127.0.0.1&port=...' -name alice
//	go run ./examples/ocapn-chat -sturdyref 'ocapn://...' -name bob
//
// The design is the seed's. The room has two methods, as in
//
//	(define-actor (^chatroom bcom #:optional [users '()])
//	  (methods
//	   [(join user) ...]
//	   [(send from message) ...]))
//
// join takes a reference to the user's own object: the user is an object
// on the user's node, and the room keeps the reference that came in the
// message. send takes the sending user and the message, and the room
// sends each user it knows (new-message from message), with the sender's
// reference in it. A user object has the seed's two methods:
// (get-name), which answers its name, and (new-message from message),
// which asks from its name, (<- from 'get-name), and prints the message
// when the answer comes.
//
// The room holds each user through its own session, so when it sends
// bob a reference to alice, the reference travels as an OCapN third-party
// handoff: bob's node opens a session to alice's node and asks alice's
// user itself for her name, not the room. That is why every user's node
// listens too (-listen, default a free port on 127.0.0.1): the others
// dial it.
//
// Methods are the first argument, a symbol, as Goblins' methods send
// them, so a Goblins user (a ^user like the seed's, on a Goblins node with
// a tcp-testing-only netlayer) can join this room by enlivening the
// printed sturdyref, and this user can join a Goblins ^chatroom whose
// sturdyref a Goblins program printed.
//
// Two changes from the seed: a user sends the lines typed instead of a
// random greeting, and prints only what others say (what it sends is on
// the screen already). And the room sends with op:deliver instead of
// deliver-only, so that it notices a user whose session has ended and
// forgets it.
//
// Ctrl-C (or SIGTERM) stops the room or a user: it closes its node,
// ending its sessions, and exits with status 0. A user whose room has gone
// exits with status 1 at its next line; bad flags exit with status 2.
package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"log"
	"log/slog"
	"os"
	"os/signal"
	"slices"
	"syscall"
	"time"

	"github.com/bokbok-go/bokbok/ocapn"
	"github.com/bokbok-go/bokbok/ocapn/syrup"
)

func main() {
	serve := flag.Bool("serve", false, "run a chatroom and print its sturdyref; without it, join the room -sturdyref names")
	listen := flag.String("listen", "127.0.0.1:0", "host:port of this node's tcp-testing-only netlayer (port 0 picks a free one). A user listens too: the other users' nodes dial it")
	sturdyref := flag.String("sturdyref", "", "the chatroom's sturdyref, ocapn://DESIGNATOR.tcp-testing-only/s/SWISS?host=...&port=... (as -serve prints it)")
	name := flag.String("name", "", "the user's name, shown to the others (required to join)")
	timeout := flag.Duration("timeout", 30*time.Second, "how long a user waits to join, and for the room to take each line")
	verbose := flag.Bool("v", false, "log why OCapN sessions end")
	flag.Usage = func() {
		out := flag.CommandLine.Output()
		fmt.Fprint(out, `ocapn-chat: the simple chat of Goblins' OCapN chapter, over OCapN's
INSECURE tcp-testing-only netlayer (for testing only).

usage:
  ocapn-chat -serve [-listen HOST:PORT]        # prints the room's sturdyref
  ocapn-chat -sturdyref URI -name NAME         # sends the lines typed; prints "NAME: text"

flags:
`)
		flag.PrintDefaults()
	}
	flag.Parse()
	log.SetFlags(log.Ltime)
	if flag.NArg() != 0 {
		usageError("unexpected arguments %q", flag.Args())
	}
	var logger *slog.Logger
	if *verbose {
		logger = slog.New(slog.NewTextHandler(os.Stderr, nil))
	}

	// ctx is done at Ctrl-C or SIGTERM.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	var err error
	switch {
	case *serve && *sturdyref != "":
		usageError("give -serve or -sturdyref, not both")
	case *serve:
		log.SetPrefix("room: ")
		err = runRoom(ctx, *listen, logger)
	case *sturdyref != "":
		if *name == "" {
			usageError("give -name NAME to join")
		}
		sr, perr := ocapn.ParseSturdyref(*sturdyref)
		if perr != nil {
			usageError("%v", perr)
		}
		log.SetPrefix(*name + ": ")
		err = runUser(ctx, *listen, sr, *name, *timeout, logger)
	default:
		usageError("give -serve to run a chatroom, or -sturdyref URI -name NAME to join one")
	}
	if err != nil {
		log.Printf("error: %v", err)
		os.Exit(1)
	}
}

// usageError reports a mistake in the command line and exits with status
// 2.
func usageError(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "ocapn-chat: "+format+"\n(ocapn-chat -h for help)\n", args...)
	os.Exit(2)
}

// The methods, symbols as Goblins sends them.
const (
	methodJoin       = syrup.Symbol("join")
	methodSend       = syrup.Symbol("send")
	methodGetName    = syrup.Symbol("get-name")
	methodNewMessage = syrup.Symbol("new-message")
)

// newNode returns a node serving on a tcp-testing-only netlayer that
// listens on listen.
func newNode(listen string, logger *slog.Logger) (*ocapn.Node, *ocapn.TestingOnlyTCP, error) {
	nl, err := ocapn.ListenTestingOnlyTCP(listen) // INSECURE: for testing only
	if err != nil {
		return nil, nil, err
	}
	node := ocapn.NewNode(ocapn.Config{Logger: logger})
	node.AddNetlayer(nl) // node.Close closes it
	return node, nl, nil
}

// text returns a string's or a symbol's text.
func text(v any) (string, bool) {
	switch x := v.(type) {
	case string:
		return x, true
	case syrup.Symbol:
		return string(x), true
	}
	return "", false
}

// chatroom is the seed's ^chatroom. Its Deliver and the callbacks it
// registers with Then run on the node's event loop, one at a time, so
// users needs no lock; none of them blocks.
type chatroom struct {
	node  *ocapn.Node
	users []any // references to the users' objects, as they came in join
}

func (c *chatroom) Deliver(args []any) (any, error) {
	if len(args) == 0 {
		return nil, errors.New("the chatroom needs a method: join or send")
	}
	switch args[0] {
	case methodJoin: // (join user)
		if len(args) != 2 {
			return nil, errors.New("join takes one argument, the user")
		}
		user := args[1]
		switch user.(type) {
		case *ocapn.Ref, *ocapn.Promise: // the peer's object, or one a third party handed off
		default:
			return nil, fmt.Errorf("join takes a reference to a user object, not %T", user)
		}
		c.users = append(c.users, user)
		n := len(c.users)
		// Only for the log: ask the user its name, without waiting here.
		c.node.Send(user, methodGetName).Then(func(name any, err error) {
			if err != nil {
				log.Printf("a user joined (its name: %v); %d in the room", err, n)
				return
			}
			log.Printf("%q joined; %d in the room", name, n)
		})
		return nil, nil
	case methodSend: // (send from message)
		if len(args) != 3 {
			return nil, errors.New("send takes two arguments, the sender and the message")
		}
		from, message := args[1], args[2]
		log.Printf("a message for %d users: %q", len(c.users), message)
		for _, user := range c.users {
			// The seed sends with <-np, and never hears back; an answer
			// tells the room when a user's session is gone.
			c.node.Send(user, methodNewMessage, from, message).Then(func(_ any, err error) {
				if errors.Is(err, ocapn.ErrSessionEnded) {
					c.forget(user)
				}
			})
		}
		return nil, nil
	}
	return nil, fmt.Errorf("the chatroom has no method %v (it has join and send)", args[0])
}

// forget removes a user whose session has ended.
func (c *chatroom) forget(user any) {
	i := slices.Index(c.users, user)
	if i < 0 {
		return // forgotten already
	}
	c.users = slices.Delete(c.users, i, i+1)
	log.Printf("a user left (its session ended); %d in the room", len(c.users))
}

// runRoom runs a chatroom until ctx is done.
func runRoom(ctx context.Context, listen string, logger *slog.Logger) error {
	node, nl, err := newNode(listen, logger)
	if err != nil {
		return err
	}
	defer node.Close()

	// A swiss number is a bearer secret: 32 random bytes, written as
	// unpadded base64url so that it goes into a URI as is.
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return err
	}
	swiss := []byte(base64.RawURLEncoding.EncodeToString(b))
	node.Register(swiss, &chatroom{node: node})
	sr := ocapn.Sturdyref{Peer: nl.Location(), Swiss: swiss}
	fmt.Println(sr) // alone on the first line of standard output, for copying
	log.Printf("Chatroom: the sturdyref above; join with: go run ./examples/ocapn-chat -sturdyref '%s' -name NAME", sr)
	log.Print("tcp-testing-only is INSECURE: for testing only. Ctrl-C stops.")

	<-ctx.Done()
	log.Print("shutting down")
	node.Close()
	log.Print("stopped")
	return nil
}

// user is the seed's ^user. Its Deliver and the callbacks it registers
// with Then run on the node's event loop, one at a time, so pending needs
// no lock.
type user struct {
	node    *ocapn.Node
	name    string
	pending []*incoming // messages in the order they came, waiting for their senders' names
}

// incoming is a message whose sender's name may not have come yet.
type incoming struct {
	from    string
	message any
	ready   bool
}

func (u *user) Deliver(args []any) (any, error) {
	if len(args) == 0 {
		return nil, errors.New("a user needs a method: get-name or new-message")
	}
	switch args[0] {
	case methodGetName: // (get-name)
		return u.name, nil
	case methodNewMessage: // (new-message from message)
		if len(args) != 3 {
			return nil, errors.New("new-message takes two arguments, the sender and the message")
		}
		from, message := args[1], args[2]
		if me, ok := from.(*user); ok && me == u {
			// What this user said, back from the room: it is on the
			// screen already. (A reference to one of this node's own
			// objects arrives as the object itself.)
			return nil, nil
		}
		in := &incoming{message: message}
		u.pending = append(u.pending, in)
		// Ask the sender its name: (<- from 'get-name). from is a
		// reference the room passed on; from another session, it came as
		// a handoff and is a promise, which node.Send waits for.
		u.node.Send(from, methodGetName).Then(func(name any, err error) {
			if s, ok := text(name); ok && err == nil {
				in.from = s
			} else {
				in.from = fmt.Sprintf("(someone whose name could not be asked: %v)", err)
			}
			in.ready = true
			u.printReady()
		})
		return nil, nil
	}
	return nil, fmt.Errorf("a user has no method %v (it has get-name and new-message)", args[0])
}

// printReady prints the messages whose senders' names have come, in the
// order the messages came.
func (u *user) printReady() {
	for len(u.pending) > 0 && u.pending[0].ready {
		in := u.pending[0]
		u.pending = u.pending[1:]
		if s, ok := text(in.message); ok {
			fmt.Printf("%s: %s\n", in.from, s)
		} else {
			fmt.Printf("%s: %v\n", in.from, in.message)
		}
	}
}

// runUser joins the room, then sends each line of standard input until
// its end or until ctx is done.
func runUser(ctx context.Context, listen string, sr ocapn.Sturdyref, name string, timeout time.Duration, logger *slog.Logger) error {
	node, _, err := newNode(listen, logger)
	if err != nil {
		return err
	}
	defer node.Close()

	me := &user{node: node, name: name}
	room := node.Enliven(sr) // a promise for the room; messages to it wait for it
	// (join user): the room gets a reference to me, exported as the
	// message goes.
	if err := wait(ctx, timeout, node.Send(room, methodJoin, me)); err != nil {
		if errors.Is(err, context.Canceled) {
			return nil // Ctrl-C
		}
		return fmt.Errorf("joining the room: %w", err)
	}
	log.Printf("joined the room as %q; type lines to send them, Ctrl-D to leave", name)

	lines := make(chan string)
	go func() { // ends with the process: a read from standard input cannot be stopped
		defer close(lines)
		sc := bufio.NewScanner(os.Stdin)
		for sc.Scan() {
			select {
			case lines <- sc.Text():
			case <-ctx.Done():
				return
			}
		}
	}()
	for {
		select {
		case <-ctx.Done():
			log.Print("leaving")
			return nil
		case line, ok := <-lines:
			if !ok {
				log.Print("end of input: leaving")
				return nil
			}
			if line == "" {
				continue
			}
			// (send from message), from being me.
			if err := wait(ctx, timeout, node.Send(room, methodSend, me, line)); err != nil {
				if errors.Is(err, context.Canceled) {
					log.Print("leaving")
					return nil
				}
				return fmt.Errorf("sending: %w", err)
			}
		}
	}
}

// wait waits up to timeout for p, and explains its error.
func wait(ctx context.Context, timeout time.Duration, p *ocapn.Promise) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	_, err := p.Wait(ctx)
	var broken *ocapn.BrokenError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &broken):
		return fmt.Errorf("the room's node refused: %v", broken.Reason)
	case errors.Is(err, context.DeadlineExceeded):
		return errors.New("no answer in time (is the room running? go run ./examples/ocapn-chat -serve)")
	case errors.Is(err, ocapn.ErrSessionEnded):
		return fmt.Errorf("%w (is the room running? go run ./examples/ocapn-chat -serve)", err)
	}
	return err
}
