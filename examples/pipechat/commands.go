package main

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// command is one of the terminal's commands, a line "/NAME ARGS".
type command struct {
	name, args, help string
	run              func(ctx context.Context, chat *Chat, args string) error
}

// commands returns the commands, in the order /help lists them.
func commands() []command {
	return []command{
		{"join", "NAME", "join the channel NAME (created if new) and make it the current one", runJoin},
		{"dm", "USER", "join the encrypted direct channel with USER (who joins it with /dm YOU)", runDirect},
		{"channels", "", "list the channels: name, kind, last message number; * the current one", runChannels},
		{"history", "[N]", "print the last N messages of the current channel (20 if no N)", runHistory},
		{"search", "WORDS", "print the messages of the current channel matching WORDS, best first", runSearch},
		{"help", "", "list the commands", runHelp},
	}
}

// runCommand runs line, which starts with "/"; an unknown command prints
// the list of commands.
func runCommand(ctx context.Context, chat *Chat, line string) {
	name, args, _ := strings.Cut(strings.TrimPrefix(line, "/"), " ")
	args = strings.TrimSpace(args)
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	for _, c := range commands() {
		if c.name == name {
			if err := c.run(ctx, chat, args); err != nil {
				say("* /%s: %v", name, err)
			}
			return
		}
	}
	say("* unknown command %q", "/"+name)
	runHelp(ctx, chat, "")
}

func runHelp(context.Context, *Chat, string) error {
	say("* commands (a line starting with / is one; // sends a line starting with /):")
	for _, c := range commands() {
		say("*   %-16s %s", strings.TrimSpace("/"+c.name+" "+c.args), c.help)
	}
	return nil
}

func runJoin(_ context.Context, chat *Chat, name string) error {
	if name == "" {
		say("* you are in #%s; /join NAME joins another channel", chat.Channel())
		return nil
	}
	if err := chat.Join(name); err != nil {
		return err
	}
	say("* now in #%s: lines you type go there", chat.Channel())
	return nil
}

func runDirect(_ context.Context, chat *Chat, user string) error {
	if user == "" {
		return errors.New("whom to? /dm USER")
	}
	if err := chat.Direct(user); err != nil {
		return err
	}
	say("* now in #%s, end-to-end encrypted, with %s only: lines you type go there", chat.Channel(), user)
	return nil
}

func runChannels(ctx context.Context, chat *Chat, _ string) error {
	cs, err := chat.Channels(ctx)
	if err != nil {
		return err
	}
	say("* %d channel(s), * the current one:", len(cs))
	for _, c := range cs {
		mark, joined := " ", ""
		if c.Current {
			mark = "*"
		}
		if c.Joined {
			joined = "joined"
		}
		say("%s", strings.TrimRight(fmt.Sprintf("* %s %-16s %-10s #%-5d %s", mark, c.Name, c.Kind(), c.Last, joined), " "))
	}
	return nil
}

func runHistory(ctx context.Context, chat *Chat, args string) error {
	n := 20
	if args != "" {
		var err error
		if n, err = strconv.Atoi(args); err != nil || n < 1 {
			return errors.New("/history N: N is a number of messages, 1 or more")
		}
	}
	msgs, err := chat.History(ctx, n)
	if errors.Is(err, ErrNoHistory) {
		say("* #%s is transient: it keeps no history", chat.Channel())
		return nil
	}
	if err != nil {
		return err
	}
	say("* the last %d message(s) of #%s:", len(msgs), chat.Channel())
	for _, m := range msgs {
		say("#%d %s", m.Seq, format(m))
	}
	return nil
}

func runSearch(ctx context.Context, chat *Chat, words string) error {
	if words == "" {
		return errors.New("search for what? /search WORDS")
	}
	msgs, err := chat.Search(ctx, words, 0)
	if errors.Is(err, ErrNoHistory) {
		say("* #%s is transient: it keeps no history to search", chat.Channel())
		return nil
	}
	if err != nil {
		return err
	}
	say("* %d message(s) of #%s match %q, best first:", len(msgs), chat.Channel(), words)
	for _, m := range msgs {
		say("#%d %s", m.Seq, format(m))
	}
	return nil
}
