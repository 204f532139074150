// Command pipechat is the chat of the Pipes platform's tutorial, in Go: a
// terminal chat over pipelines, one per channel, through a hub run by
// "bokbok pipes hub".
//
//	bokbok keygen > alice.key && chmod 600 alice.key
//	echo "alice $(cat alice.key)" >> users.txt && chmod 600 users.txt
//	bokbok pipes hub --listen 127.0.0.1:7400 --keys users.txt --data hub-data
//	go run ./examples/pipechat -hub 127.0.0.1:7400 -user alice -key-file alice.key -dir alice-data -persistent
//
// Each line typed is sent to everyone in the current channel, at first
// CHAT, and each message received is printed with the time it was typed
// and its sender, the user the hub authenticated; a message of a channel
// joined other than the current one begins with the channel's name:
//
//	[15:04:05] bob: hello
//	[15:04:07] alice (me): hi bob
//	#ROOM [15:04:09] carol: anyone here?
//
// A line starting with "/" is a command ("//" sends a line starting with
// "/"):
//
//	/join NAME    join the channel NAME, creating it (of pipechat's kind,
//	              see -persistent) if it is new, and make it the current
//	              one; /join CHAT goes back
//	/dm USER      join the direct channel with USER, dm:A+B (A and B the
//	              two names, sorted): private to the two, end-to-end
//	              encrypted (the hub holds ciphertext only) and persistent;
//	              USER joins it with /dm YOU, and its key goes from one
//	              node to the other while both are in it
//	/channels     list the channels you may use: name, kind (transient,
//	              persistent, private or encrypted), the number of the last
//	              message, "*" for the current one, "joined" for those
//	              pipechat listens to
//	/history [N]  print the last N messages (default 20) of the current
//	              channel, each with its number: #12 [15:04:05] bob: hello
//	/search WORDS print the messages of the current channel that match
//	              any of WORDS, best first
//	/help         list the commands; so does an unknown one
//
// A transient channel keeps no history: /history and /search say so.
// Channels joined stay joined until pipechat ends; a persistent one
// delivers, when joined, the messages this -dir has not been given yet.
//
// Lines starting with "*" tell of the connection to the hub, of the hub
// refusing a channel, and of the commands. The end of standard input
// (Ctrl-D), Ctrl-C or SIGTERM ends pipechat. -dir defaults to
// pipechat-USER, -hub to 127.0.0.1:7400; -realm must be the hub's --realm
// if it has one.
//
// With -persistent, the channels pipechat creates, CHAT among them, are
// persistent pipelines: a line typed while the hub is unreachable waits
// in the node's outbox in -dir, on disk (also across a restart of
// pipechat), and is sent when the hub is back; a user who was away gets
// every message sent meanwhile when pipechat next runs. Without it, they
// are transient: a message reaches those connected at that moment, and a
// line typed while disconnected is not sent. A channel's kind is fixed
// when it is first created, on the hub and in -dir: use the same
// everywhere.
//
// chat.go is the backend, a Chat type built on package pipes that a GUI
// could use as well; commands.go holds the commands.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/bokbok-go/bokbok"
	"github.com/bokbok-go/bokbok/pipes"
)

var outMu sync.Mutex

// say prints a line on standard output; the node's goroutines and the
// main one print.
func say(format string, args ...any) {
	outMu.Lock()
	defer outMu.Unlock()
	fmt.Printf(format+"\n", args...)
}

func main() {
	hub := flag.String("hub", "127.0.0.1:7400", "the hub's `ADDR`")
	user := flag.String("user", "", "your user `NAME`, as in the hub's keys file")
	keyFile := flag.String("key-file", "", "the `FILE` holding your key, as bokbok keygen prints it")
	dir := flag.String("dir", "", "the `DIR`ectory of your node's state (default pipechat-USER)")
	persistent := flag.Bool("persistent", false, "make the channels created (CHAT among them) persistent pipelines")
	realm := flag.String("realm", "", "the hub's `REALM`")
	flag.Parse()
	if *user == "" || *keyFile == "" || flag.NArg() > 0 {
		fmt.Fprintln(os.Stderr, "usage: pipechat -hub ADDR -user NAME -key-file FILE [-dir DIR] [-persistent]")
		os.Exit(2)
	}
	if *dir == "" {
		*dir = "pipechat-" + *user
	}
	key, err := bokbok.ReadKeyFile(*keyFile)
	if err != nil {
		fatal(err)
	}

	chat := NewChat(*dir)
	chat.Persistent, chat.Realm = *persistent, *realm
	var connected, told atomic.Bool // told: a failure to connect was reported
	chat.OnConnect = func() {
		connected.Store(true)
		told.Store(false)
		say("* connected to %s", *hub)
	}
	chat.OnDisconnect = func(err error) { // also after each failed attempt
		if connected.Swap(false) {
			told.Store(true)
			after := "messages typed now are not sent"
			if *persistent {
				after = "messages are kept and sent on reconnect"
			}
			say("* disconnected: %v; %s", err, after)
		} else if !told.Swap(true) {
			say("* cannot connect: %v; trying again", err)
		}
	}
	chat.OnError = func(channel string, err error) {
		var he *pipes.HubError
		if errors.As(err, &he) {
			say("* the hub refuses #%s: %s", channel, he.Message)
		} else {
			say("* #%s: %v", channel, err)
		}
	}
	chat.SetListener(func(m Message) {
		if m.Channel != chat.Channel() {
			say("#%s %s", m.Channel, format(m))
		} else {
			say("%s", format(m))
		}
	})
	if err := chat.SetupUser(*user); err != nil {
		fatal(err)
	}
	kind := "transient"
	if *persistent {
		kind = "persistent"
	}
	say("* %s on CHAT (%s), connecting to %s; type a line to send it, /help for the commands", *user, kind, *hub)
	if err := chat.ConnectToNetwork(*hub, key); err != nil {
		fatal(err)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	lines := make(chan string)
	go func() {
		defer close(lines)
		for sc := bufio.NewScanner(os.Stdin); sc.Scan(); {
			lines <- sc.Text()
		}
	}()
	for done := false; !done; {
		select {
		case <-ctx.Done():
			done = true
		case line, ok := <-lines:
			done = !ok
			switch {
			case !ok || line == "":
			case strings.HasPrefix(line, "//"):
				send(ctx, chat, line[1:], connected.Load())
			case strings.HasPrefix(line, "/"):
				runCommand(ctx, chat, line)
			default:
				send(ctx, chat, line, connected.Load())
			}
		}
	}

	if n := chat.Pending(); n > 0 {
		say("* %d message(s) wait in %s; they are sent when pipechat next connects", n, *dir)
	}
	if err := chat.Close(); err != nil {
		fatal(err)
	}
}

// format returns the line printed for a message.
func format(m Message) string {
	who := m.Sender
	if m.Own {
		who += " (me)"
	}
	return fmt.Sprintf("[%s] %s: %s", m.Time().Format("15:04:05"), who, m.Text)
}

// send sends one line on the current channel and says what became of it
// if it is not sent now.
func send(ctx context.Context, chat *Chat, line string, connected bool) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	err := chat.SendMessage(ctx, line)
	switch {
	case errors.Is(err, bokbok.ErrNotConnected):
		say("* not sent: not connected (#%s is transient; -persistent keeps messages)", chat.Channel())
	case err != nil:
		say("* not sent: %v", err)
	case !connected: // a transient channel's message would have failed
		say("* kept in the outbox; sent when the hub is back")
	}
}

func fatal(err error) {
	fmt.Fprintln(os.Stderr, "pipechat:", err)
	os.Exit(1)
}
