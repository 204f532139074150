// Command bokbok pokes at bokbok services and makes keys:
//
//	bokbok keygen                       print a new random key
//	bokbok passphrase --realm R --user U
//	                                    derive a key from a passphrase
//	bokbok serve --listen ADDR [--keys FILE | --insecure]
//	                                    run a small inspection server
//	bokbok call ADDR [MESSAGE] [flags]  send one request (JSON in, JSON out),
//	                                    --method NAME and --meta KEY=VALUE
//	bokbok ping ADDR [flags]            measure round trips
//	bokbok load ADDR [flags]            run concurrent callers, report rates
//	bokbok pipes hub --listen ADDR --keys FILE --data DIR [flags]
//	                                    run a hub of persistent pipelines
//	                                    (package pipes), reloading FILE on
//	                                    SIGHUP
//
// Run "bokbok help COMMAND" or "bokbok COMMAND --help" for a command's
// flags. Install with
//
//	go install github.com/bokbok-go/bokbok/cmd/bokbok@latest
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

// Exit codes.
const (
	exitOK      = 0
	exitRemote  = 1 // the peer answered with an error
	exitConnect = 2 // could not connect, authenticate, or the connection failed
	exitUsage   = 64
)

// command is one subcommand.
type command struct {
	name    string
	summary string
	run     func(ctx context.Context, env *env, args []string) int
}

// env is what a command may touch: its streams and its standard input.
type env struct {
	stdin          io.Reader
	stdout, stderr io.Writer
}

func commands() []command {
	return []command{
		{"keygen", "print a new random key in its text form", runKeygen},
		{"passphrase", "derive a key from a passphrase (argon2id)", runPassphrase},
		{"serve", "run a small inspection server (echo, ping, info, metadata, ...)", runServe},
		{"call", "send one request given as JSON and print the reply as JSON", runCall},
		{"ping", "measure round trips to a bokbok peer", runPing},
		{"load", "run concurrent callers and report calls/s and latency", runLoad},
		{"pipes", "persistent pipelines: \"bokbok pipes hub\" runs a hub for their nodes", runPipes},
		{"version", "print the version of bokbok and of its protocol", runVersion},
	}
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, &env{stdin: os.Stdin, stdout: os.Stdout, stderr: os.Stderr}, os.Args[1:])
	stop()
	os.Exit(code)
}

// run dispatches to a subcommand and returns the exit code. ctx ends on
// SIGINT or SIGTERM.
func run(ctx context.Context, e *env, args []string) int {
	return dispatch(ctx, e, args, commands(), usage, `bokbok: unknown command %q; run "bokbok help" for the list`)
}

// dispatch runs the command of cmds that args name, giving it the rest of
// args: "help COMMAND ..." runs it with --help; no arguments, -h, --help
// or help alone print the usage (to standard error, exiting 64 with no
// arguments and 0 otherwise). unknown is the message for a name that is
// not in cmds, formatted with it.
func dispatch(ctx context.Context, e *env, args []string, cmds []command, usage func(io.Writer), unknown string) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" && len(args) == 1 {
		usage(e.stderr)
		if len(args) == 0 {
			return exitUsage
		}
		return exitOK
	}
	name, rest := args[0], args[1:]
	if name == "help" {
		name, rest = args[1], append(args[2:len(args):len(args)], "--help") // "help pipes hub" too
	}
	for _, c := range cmds {
		if c.name == name {
			return c.run(ctx, e, rest)
		}
	}
	fmt.Fprintf(e.stderr, unknown+"\n", name)
	return exitUsage
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "bokbok: talk to bokbok services and make keys.")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Usage: bokbok COMMAND [arguments] [flags]")
	fmt.Fprintln(w)
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-11s %s\n", c.name, c.summary)
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, `Run "bokbok COMMAND --help" for a command's arguments and flags`)
	fmt.Fprintln(w, `("bokbok pipes hub --help" for the hub's).`)
}
