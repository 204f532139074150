// Command room hosts a chatroom for examples/chat/user: the simple chat of
// Spritely Goblins' CapTP, over bokbok with the capability layer (package
// ocap).
//
//	go run ./examples/chat/room                        # TCP on 127.0.0.1, a free port
//	go run ./examples/chat/room -addr 127.0.0.1:7001   # a fixed port
//	go run ./examples/chat/room -addr ./chat.sock      # a Unix socket
//	go run ./examples/chat/room -addr 127.0.0.1:7001 -store room.json
//	                                                   # the same sturdyref after a restart
//
// It spawns the chatroom actor in a vat, registers it with the capability
// node (ocap.Node.Register) and prints its sturdyref, such as
//
//	bokbok://127.0.0.1:40671/s/Xq3kYVbq0Rn0JYvBg5dTrYp1J8mG0a2zgm0Be2tVs0c
//
// alone on the first line of standard output; its log goes to standard
// error. Each user process enlivens the sturdyref and joins. The chatroom
// answers
//
//	join [user]   user is a reference to the joining user's own actor.
//	              Answers a reference to a new membership, the user's
//	              capability to speak in the room:
//	  say [text]     sends new-message [from text] to every user in the
//	                 room (the speaker too), from being the speaker's user
//	  leave []       leaves the room
//
// and sends each user
//
//	present [who]  on joining, once for each user already in the room
//	joined [who]   a user joined (the user itself too)
//	new-message [from text]
//	left [who]     a user left, or its connection was lost (which
//	               the room notices when it next tells that user
//	               something)
//
// where who and from are references to users' actors, which live in the
// users' processes: a user that receives one can send it messages, such
// as name [], and the chatroom forwards them to the process that holds the
// actor. The chatroom never asks users for anything but their name, and
// only for its log; it does not need names to route messages, and users do
// not trust each other's claims: the from of a message is the reference
// the chatroom got when the speaker joined, so nobody can speak as someone
// else.
//
// The chatroom is the only object reachable with the sturdyref. With
// -store FILE its swiss number is kept in FILE (created readable by its
// owner only), so a room restarted with the same -store and -addr (a
// fixed port, or a socket path) serves the same sturdyref: users whose
// connection was lost, say because the room crashed, enliven it again and
// join the new room. The room itself keeps no history and no members
// across a restart. Ctrl-C (SIGINT) or SIGTERM stops it gracefully: the
// users' connections close, and the users stop.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"slices"
	"syscall"
	"time"

	"github.com/bokbok-go/bokbok"
	"github.com/bokbok-go/bokbok/ocap"
)

// chatroom is the room's actor. It and the memberships it makes run in
// one vat, one message at a time, so they share its state without locks.
type chatroom struct {
	members []*member // in the order they joined
}

// member is a user in the room.
type member struct {
	user ocap.Ref // the user's actor, in the user's process
	name string   // what the user answered to name, for the log
	in   bool     // false once the user has left
}

// who names a member in the log.
func (m *member) who() string {
	if m.name == "" {
		return "a user"
	}
	return fmt.Sprintf("%q", m.name)
}

// Join adds user to the room and answers the user's membership.
func (r *chatroom) Join(ctx context.Context, user ocap.Ref) (ocap.Ref, error) {
	if user.IsZero() {
		return ocap.Ref{}, bokbok.Errorf("chat.bad_user", "join takes a reference to your user actor")
	}
	for _, m := range r.members {
		if m.user == user {
			return ocap.Ref{}, bokbok.Errorf("chat.already_joined", "this user is in the room already")
		}
	}
	m := &member{user: user, in: true}
	// Messages sent through one reference arrive in the order sent: the
	// newcomer hears who is here before it hears that it joined.
	for _, o := range r.members {
		r.tell(ctx, m, "present", o.user)
	}
	r.members = append(r.members, m)
	for _, o := range r.members {
		r.tell(ctx, o, "joined", user)
	}
	// Ask the user's name, for the log only.
	n := len(r.members)
	ocap.On(ctx, user.Send("name"), func(res ocap.Result) {
		res.Decode(&m.name)
		log.Printf("%s joined; %d in the room", m.who(), n)
	}, func(err error) {
		log.Printf("%s joined; %d in the room (asking its name: %v)", m.who(), n, err)
	})
	return ocap.Spawn(ctx, &membership{room: r, m: m})
}

// tell sends a message to a member. If the member's connection is lost,
// the member leaves the room.
func (r *chatroom) tell(ctx context.Context, to *member, method string, args ...any) {
	ocap.On(ctx, to.user.Send(method, args...), nil, func(err error) {
		if errors.Is(err, ocap.ErrDisconnected) {
			r.leave(ctx, to, "its connection was lost")
			return
		}
		log.Printf("%s %v: %v", method, to.who(), err)
	})
}

// leave removes a member and tells the others.
func (r *chatroom) leave(ctx context.Context, m *member, why string) {
	if !m.in {
		return
	}
	m.in = false
	r.members = slices.DeleteFunc(r.members, func(o *member) bool { return o == m })
	log.Printf("%s left (%s); %d in the room", m.who(), why, len(r.members))
	for _, o := range r.members {
		r.tell(ctx, o, "left", m.user)
	}
}

// membership is what join answers: one user's capability to speak in the
// room and to leave it.
type membership struct {
	room *chatroom
	m    *member
}

// Say sends text to everyone in the room, from this membership's user.
func (s *membership) Say(ctx context.Context, text string) error {
	if !s.m.in {
		return bokbok.Errorf("chat.not_in_room", "you are not in the room")
	}
	log.Printf("%s says %q (%d in the room)", s.m.who(), text, len(s.room.members))
	for _, o := range s.room.members {
		s.room.tell(ctx, o, "new-message", s.m.user, text)
	}
	return nil
}

// Leave takes this membership's user out of the room.
func (s *membership) Leave(ctx context.Context) {
	s.room.leave(ctx, s.m, "said goodbye")
}

// shutdownGrace is how long the room lets requests in flight finish once
// it starts shutting down, before it closes the connections left.
const shutdownGrace = 10 * time.Second

func main() {
	addr := flag.String("addr", "127.0.0.1:0", `address to listen on: "host:port" (port 0 picks a free one), or a Unix socket path such as "./chat.sock"`)
	public := flag.String("public", "", `the address written into the sturdyref, if users must dial another one than -addr (say "example.com:7001")`)
	store := flag.String("store", "", "a file that keeps the sturdyref's swiss number, so a restarted room serves the same sturdyref")
	verbose := flag.Bool("v", false, "log the library's debug records too (such as refused connections)")
	flag.Parse()

	log.SetFlags(log.Ltime)
	log.SetPrefix("room: ")
	if *verbose {
		slog.SetLogLoggerLevel(slog.LevelDebug)
	}
	if flag.NArg() != 0 {
		log.Printf("error: unexpected arguments %q", flag.Args())
		os.Exit(2)
	}
	if err := run(*addr, *public, *store); err != nil {
		log.Printf("error: %v", err)
		os.Exit(1)
	}
}

func run(addr, public, storeFile string) error {
	// Done at Ctrl-C or SIGTERM; from then on a second signal kills the
	// process at once, even while it shuts down.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	context.AfterFunc(ctx, stop)

	vat := ocap.NewVat("chatroom")
	defer vat.Close()
	// The sturdyrefs carry the address to dial (node.Addr): -public if
	// given, else what node.Listen sets: the real port when -addr asked
	// for a free one, or the absolute path of a Unix socket.
	node := &ocap.Node{Logger: slog.Default(), Addr: public}
	if public != "" {
		if _, err := bokbok.ParseAddr(public); err != nil {
			return fmt.Errorf("-public: %w", err)
		}
	}
	if storeFile != "" {
		st, err := ocap.OpenStore(storeFile)
		if err != nil {
			return err
		}
		node.Store = st
	}
	ln, err := node.Listen(addr)
	if err != nil {
		return err
	}
	defer ln.Close()
	if tcp, ok := ln.Addr().(*net.TCPAddr); ok && public == "" && tcp.IP.IsUnspecified() {
		log.Printf("listening on all interfaces: the sturdyref names %s; give -public HOST:PORT to name another address", tcp)
	}

	// Registered before serving, so that the first users are known.
	room := vat.Spawn(&chatroom{})
	var sr ocap.Sturdyref
	if node.Store != nil {
		sr, err = node.RegisterAs("chatroom", room)
	} else {
		sr, err = node.Register(room)
	}
	if err != nil {
		return err
	}

	// No accounts: the only users this server knows are those of
	// connections opened to enliven the node's sturdyrefs.
	srv := &bokbok.Server{
		Config:  bokbok.Config{Handler: node, Logger: slog.Default()},
		UserKey: node.UserKey(nil),
	}

	fmt.Println(sr) // the URI, alone on the first line of standard output
	log.Printf("listening on %s; the chatroom's sturdyref is on standard output; Ctrl-C to stop", ln.Addr())

	// Serve until Ctrl-C or SIGTERM, then shut down gracefully. The log
	// says so before the shutdown begins.
	runCtx, cancelRun := context.WithCancel(context.Background())
	defer cancelRun()
	stopLog := context.AfterFunc(ctx, func() {
		log.Print("shutting down")
		cancelRun()
	})
	defer stopLog()
	err = srv.Run(runCtx, ln, shutdownGrace)
	if err != nil && ctx.Err() == nil {
		return fmt.Errorf("serve: %w", err)
	}
	if err != nil {
		log.Printf("shutdown: %v (closed the remaining connections)", err)
	}
	node.Close()
	vat.Close()
	<-vat.Done()
	log.Printf("stopped")
	return nil
}
