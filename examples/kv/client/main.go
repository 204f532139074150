// Command client uses the key-value store of examples/kv/server:
//
//	client [flags] get KEY
//	client [flags] put KEY VALUE            # -if-version N: only if KEY is at version N (0: new)
//	client [flags] delete KEY               # -if-version N as for put
//	client [flags] list [PREFIX]            # the default command
//	client [flags] watch [PREFIX]           # prints every change until Ctrl-C
//	client [flags] poll KEY [VERSION]       # waits until KEY is no longer at VERSION
//
// such as
//
//	go run ./examples/kv/client -key KEY put greeting hello
//
// with the key the server printed. It prints entries as
// `greeting = "hello" (version 1)` on standard output, and its log on
// standard error; an error from the server, such as a compare-and-set that
// found another version, ends it with exit status 1. Every request carries
// the -tenant (default "default") and a request id in its metadata. The
// key flags (-insecure, -user, -key, -key-file) are those of
// examples/client.
package main

import (
	"context"
	"crypto/rand"
	"errors"
	"flag"
	"fmt"
	"log"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/bokbok-go/bokbok"
	"github.com/bokbok-go/bokbok/examples/kv/kvapi"
)

func main() {
	addr := flag.String("addr", "localhost:7071", `address of the server: "host:port", or a Unix socket path such as "./kv.sock"`)
	tenant := flag.String("tenant", "default", "the tenant whose keys to use")
	ifVersion := flag.Int64("if-version", -1, "put or delete only if the key is at this version (0: put only a new key)")
	timeout := flag.Duration("timeout", time.Minute, "how long poll waits for a change")
	insecure := flag.Bool("insecure", false, "connect in insecure mode: no key, nothing encrypted")
	user := flag.String("user", "demo", "the user name to authenticate as")
	keyText := flag.String("key", "", "the user's key, in its text form (as examples/kv/server prints it)")
	keyFile := flag.String("key-file", "", "a file holding the user's key in its text form")
	verbose := flag.Bool("v", false, "log the library's debug records too")
	flag.Usage = func() {
		fmt.Fprintln(flag.CommandLine.Output(), "usage: client [flags] get KEY | put KEY VALUE | delete KEY | list [PREFIX] | watch [PREFIX] | poll KEY [VERSION]")
		flag.PrintDefaults()
	}
	flag.Parse()
	log.SetFlags(log.Ltime)
	log.SetPrefix("kv-client: ")
	if *verbose {
		slog.SetLogLoggerLevel(slog.LevelDebug)
	}
	args := flag.Args()
	if len(args) == 0 {
		args = []string{"list"}
	}
	if n, ok := arity[args[0]]; !ok || len(args)-1 < n[0] || len(args)-1 > n[1] {
		flag.Usage()
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM) // done at Ctrl-C: ends a watch
	defer stop()
	// Every request carries the tenant, as metadata.
	ctx = bokbok.WithMetadata(ctx, bokbok.Metadata{kvapi.MDTenant: *tenant})

	// The client serves too: the server calls a watch back with kv.changed.
	mux := bokbok.NewMux()
	bokbok.HandleNotification(mux, kvapi.Changed, func(ctx context.Context, e kvapi.Entry) error {
		if e.Version == 0 {
			fmt.Printf("deleted: %s\n", e.Key)
		} else {
			fmt.Printf("changed: %s\n", show(e))
		}
		return nil
	})
	cfg := &bokbok.Config{Handler: mux, Logger: slog.Default(), Interceptors: []bokbok.Interceptor{addRequestID}}
	if !*insecure {
		key, err := readKey(*keyText, *keyFile)
		if err != nil {
			log.Printf("error: %v", err)
			os.Exit(2)
		}
		cfg.Key, cfg.User, cfg.Realm = &key, *user, kvapi.Realm
	}

	dialCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	conn, err := bokbok.Dial(dialCtx, *addr, cfg)
	if err == nil {
		var cas *uint64
		if *ifVersion >= 0 {
			cas = new(uint64(*ifVersion))
		}
		err = run(ctx, conn, args[0], append(args[1:], "", ""), cas, *timeout)
		shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if serr := conn.Shutdown(shutdownCtx); err == nil {
			err = serr
		}
	}
	if err != nil {
		log.Printf("error: %v", err)
		os.Exit(1)
	}
}

// readKey returns the key of -key (its text form) or -key-file.
func readKey(text, file string) (bokbok.Key, error) {
	switch {
	case file != "":
		return bokbok.ReadKeyFile(file)
	case text == "":
		return bokbok.Key{}, errors.New("no key: give -key KEY or -key-file FILE (examples/kv/server prints a key when it starts without one), or -insecure for an insecure server")
	}
	return bokbok.ParseKey(text)
}

// arity is the least and the most arguments of each command.
var arity = map[string][2]int{"get": {1, 1}, "put": {2, 2}, "delete": {1, 1}, "list": {0, 1}, "watch": {0, 1}, "poll": {1, 2}}

// run runs cmd with its arguments, args ("" for those not given).
func run(ctx context.Context, conn *bokbok.Conn, cmd string, args []string, ifVersion *uint64, timeout time.Duration) error {
	switch cmd {
	case "get":
		return printEntry(kvapi.Get.Call(ctx, conn, kvapi.GetRequest{Key: args[0]}))
	case "put":
		return printEntry(kvapi.Put.Call(ctx, conn, kvapi.PutRequest{Key: args[0], Value: args[1], IfVersion: ifVersion}))
	case "delete":
		e, err := kvapi.Delete.Call(ctx, conn, kvapi.DeleteRequest{Key: args[0], IfVersion: ifVersion})
		if err == nil {
			fmt.Printf("deleted %s (was version %d)\n", e.Key, e.Version)
		}
		return err
	case "poll":
		return poll(ctx, conn, args[0], args[1], timeout)
	}
	method := kvapi.List // or kvapi.Watch: the same types
	if cmd == "watch" {
		method = kvapi.Watch
	}
	entries, err := method.Call(ctx, conn, kvapi.ListRequest{Prefix: args[0]})
	if err != nil {
		return err
	}
	for _, e := range entries {
		fmt.Println(show(e))
	}
	if cmd == "list" {
		log.Printf("%d entries under %q", len(entries), args[0])
		return nil
	}
	log.Printf("watching %q; changes follow until Ctrl-C", args[0])
	select {
	case <-ctx.Done():
		return nil
	case <-conn.Done():
		return fmt.Errorf("the server closed the connection: %w", conn.Err())
	}
}

// poll waits until key is no longer at version (by default, its version
// now) and prints it.
func poll(ctx context.Context, conn *bokbok.Conn, key, version string, timeout time.Duration) error {
	var v uint64
	if version != "" {
		var err error
		if v, err = strconv.ParseUint(version, 10, 64); err != nil {
			return fmt.Errorf("poll: bad version: %w", err)
		}
	} else if e, err := kvapi.Get.Call(ctx, conn, kvapi.GetRequest{Key: key}); err == nil {
		v = e.Version
	} else if !hasCode(err, kvapi.CodeNotFound) {
		return err
	}
	log.Printf("waiting up to %v for %s to change from version %d", timeout, key, v)
	ctx, cancel := context.WithTimeout(ctx, timeout) // the deadline travels with the request
	defer cancel()
	e, err := kvapi.Poll.Call(ctx, conn, kvapi.PollRequest{Key: key, Version: v})
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		fmt.Printf("no change within %v\n", timeout)
	case err != nil:
		return err
	case e.Version == v:
		fmt.Printf("unchanged: the server ended the poll early (shutting down)\n")
	case e.Version == 0:
		fmt.Printf("deleted: %s\n", key)
	default:
		fmt.Printf("changed: %s\n", show(e))
	}
	return nil
}

// addRequestID is a client interceptor: it adds a request id to the
// metadata of every request and notification this side sends.
func addRequestID(ctx context.Context, o *bokbok.Outgoing, next bokbok.CallFunc) error {
	o.SetMetadata(kvapi.MDRequestID, rand.Text()[:10])
	return next(ctx, o)
}

func show(e kvapi.Entry) string {
	return fmt.Sprintf("%s = %q (version %d)", e.Key, e.Value, e.Version)
}

func printEntry(e kvapi.Entry, err error) error {
	if err == nil {
		fmt.Println(show(e))
	}
	return err
}

// hasCode reports whether err is a remote error with the code given.
func hasCode(err error, code string) bool {
	var re *bokbok.RemoteError
	return errors.As(err, &re) && re.Code == code
}
