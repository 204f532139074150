package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"syscall"
	"time"

	"github.com/bokbok-go/bokbok"
	"github.com/bokbok-go/bokbok/pipes"
)

// exitStorage is the exit status of "bokbok pipes hub" when its data
// directory cannot be opened, or its database fails as it closes.
const exitStorage = 1

// hubGrace is how long "bokbok pipes hub" gives calls in flight to finish
// once SIGINT or SIGTERM asks it to stop.
const hubGrace = 5 * time.Second

// maxHubPacketSize bounds --max-packet-size: a put of one packet must fit
// in a bokbok message.
const maxHubPacketSize = 1 << 30

// pipesCommands are the subcommands of "bokbok pipes".
func pipesCommands() []command {
	return []command{
		{"hub", "run a hub: authenticate nodes, keep the pipelines' logs, hand out their packets", runPipesHub},
	}
}

// runPipes dispatches to a subcommand of "bokbok pipes", as run does to a
// command.
func runPipes(ctx context.Context, e *env, args []string) int {
	return dispatch(ctx, e, args, pipesCommands(), pipesUsage, `bokbok pipes: unknown command %q; run "bokbok pipes --help" for the list`)
}

// pipesUsage prints the usage of "bokbok pipes": its subcommands.
func pipesUsage(w io.Writer) {
	fmt.Fprintln(w, "Usage: bokbok pipes COMMAND [flags]")
	fmt.Fprintln(w)
	fmt.Fprintln(w, `Persistent pipelines (the package github.com/bokbok-go/bokbok/pipes):
named channels whose packets reach every node of a network, including
nodes that were offline when the packets were put. Nodes are programs
that use the package (pipes.OpenNode); they connect to a hub.`)
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Commands:")
	for _, c := range pipesCommands() {
		fmt.Fprintf(w, "  %-11s %s\n", c.name, c.summary)
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, `Run "bokbok pipes COMMAND --help" for a command's flags.`)
}

const pipesHubAbout = `Run a hub of pipelines: a secure bokbok server that authenticates every
node by user name and key, appends the packets put on persistent
pipelines to its database in DIR before it acknowledges them, and hands
every node the packets of the pipelines it reads, catching a node up from
where it stopped when it connects again. Nodes are programs that use the
package github.com/bokbok-go/bokbok/pipes: pipes.OpenNode with Hub set to
ADDR, User and Key one of FILE's lines, and Realm the hub's --realm.

  bokbok keygen > alice.key
  echo "alice $(cat alice.key)" >> users.txt; chmod 600 users.txt
  bokbok pipes hub --listen 127.0.0.1:7080 --keys users.txt --data ./hub-data

--keys FILE is a keys file as "bokbok serve --keys" reads it: one
"USER KEY" line per user, KEY in its text form (make one with "bokbok
keygen"); blank lines and lines starting with "#" are ignored. A user may
have two lines, two valid keys, while a key is rotated. SIGHUP re-reads
FILE (a file with a bad line is reported, and the keys in use stay). Keep
FILE private (chmod 600).

--data DIR holds the hub's database (the file DIR/hub.db), created if
missing; one hub at a time may use it. A hub started again on the same
DIR has every pipeline and every packet its retention keeps: nodes
reconnect and carry on, and the packets they put meanwhile (kept in their
own outboxes) arrive then. The retention flags (--max-age, --max-packets,
--max-bytes) bound each persistent pipeline's log, removing the oldest
packets first (a node that had not read them is told of the gap); 0, the
default, sets no bound.

ADDR is host:port (127.0.0.1:0 picks a free port), tcp://host:port, a Unix
socket path with a "/" in it (./hub.sock) or unix:///abs/path.sock.

Once listening, the hub prints one line on standard error, "bokbok pipes
hub: listening on ADDR (data DIR, N users)", with the real address (and
port), then logs on standard error. SIGINT or SIGTERM stops it: calls in
flight get 5s to finish, then the database is closed and it exits with
status 0.

Exit status: 0 when stopped by a signal; 1 if DIR cannot be opened (or
the database fails as it closes); 2 if it cannot listen on ADDR; 64 for
bad flags or a bad keys file (each bad line is reported as FILE:LINE).`

// runPipesHub runs "bokbok pipes hub": a pipes.Hub on --listen, with the
// users of --keys (re-read on SIGHUP) and its database in --data, until
// ctx ends.
func runPipesHub(ctx context.Context, e *env, args []string) int {
	const name = "pipes hub"
	fs := newFlags(e, name, "pipes hub --listen ADDR --keys FILE --data DIR [--realm REALM] [retention and limit flags]", pipesHubAbout)
	var (
		listen        = fs.String("listen", "", "`ADDR` to listen on (required): host:port, tcp://host:port, ./path.sock or unix:///abs/path.sock")
		keysFile      = fs.String("keys", "", "the nodes' users and keys (required): `FILE`, a file of \"USER KEY\" lines")
		dataDir       = fs.String("data", "", "`DIR` of the hub's database (required), created if missing")
		realm         = fs.String("realm", "", "the hub's `REALM`; nodes must use the same")
		maxAge        = fs.Duration("max-age", 0, "remove packets of persistent pipelines older than `D` (e.g. 168h); 0 keeps them")
		maxPackets    = fs.Uint64("max-packets", 0, "keep at most `N` packets per persistent pipeline, removing the oldest; 0 sets no bound")
		maxBytes      = fs.Int64("max-bytes", 0, "keep at most `N` bytes of packet data per persistent pipeline, removing the oldest packets; 0 sets no bound")
		maxPacketSize = fs.Int("max-packet-size", pipes.DefaultMaxPacketSize, "accept packets of at most `N` bytes of data")
		maxPipelines  = fs.Int("max-pipelines", pipes.DefaultMaxPipelines, "hold at most `N` pipelines; creating more fails")
		maxDBSize     = fs.Int("max-db-size", 0, "let the database file grow to at most `N` bytes; puts beyond fail and the nodes keep their packets; 0 sets no bound")
	)
	if _, code, ok := parseArgs(fs, args); !ok {
		return code
	}
	usageErr := func(format string, a ...any) int {
		fmt.Fprintf(e.stderr, "bokbok "+name+": "+format+"\n", a...)
		return exitUsage
	}
	switch {
	case *listen == "":
		return usageErr("--listen ADDR is required, e.g. --listen 127.0.0.1:7080 or --listen ./hub.sock")
	case *keysFile == "":
		return usageErr("--keys FILE is required: a file of \"USER KEY\" lines, one per user of the network (make keys with \"bokbok keygen\")")
	case *dataDir == "":
		return usageErr("--data DIR is required: the directory of the hub's database, created if missing")
	case len(*realm) > 255:
		return usageErr("--realm is %d bytes long; a realm has at most 255", len(*realm))
	case *maxAge < 0:
		return usageErr("--max-age is %v; want 0 (keep every packet) or more", *maxAge)
	case *maxBytes < 0:
		return usageErr("--max-bytes is %d; want 0 (no bound) or more", *maxBytes)
	case *maxPacketSize < 1 || *maxPacketSize > maxHubPacketSize:
		return usageErr("--max-packet-size is %d; want 1 to %d", *maxPacketSize, maxHubPacketSize)
	case *maxPipelines < 1:
		return usageErr("--max-pipelines is %d; want 1 or more", *maxPipelines)
	case *maxDBSize < 0:
		return usageErr("--max-db-size is %d; want 0 (no bound) or more", *maxDBSize)
	}
	if _, err := bokbok.ParseAddr(*listen); err != nil {
		return usageErr("--listen: %s", trimBokbok(err))
	}
	users, ok := openKeys(e, name, *keysFile, "")
	if !ok {
		return exitUsage
	}

	log := slog.New(slog.NewTextHandler(e.stderr, nil))
	stopReload := watchKeys(log, users, "")
	defer stopReload()

	hub, err := pipes.NewHub(pipes.HubConfig{
		Dir: *dataDir,
		Retention: pipes.Retention{
			MaxAge:     *maxAge,
			MaxPackets: *maxPackets,
			MaxBytes:   *maxBytes,
		},
		MaxSize:       *maxDBSize,
		UserKeys:      users.UserKeys,
		Realm:         *realm,
		MaxPacketSize: *maxPacketSize,
		MaxPipelines:  *maxPipelines,
		Conn: bokbok.Config{
			OnClose: func(c *bokbok.Conn, reason error) {
				log.Info("connection closed", connAttrs(c, "reason", closeReason(reason))...)
			},
		},
		Logger: log,
	})
	if err != nil {
		msg := fmt.Sprintf("bokbok %s: cannot open the data directory %s: %s", name, *dataDir, trimPipes(err))
		if errors.Is(err, pipes.ErrInUse) {
			msg += " (is another hub running on it? stop it or pick another --data)"
		}
		fmt.Fprintln(e.stderr, msg)
		return exitStorage
	}

	ln, err := bokbok.Listen(*listen)
	if err != nil {
		hub.Close()
		msg := fmt.Sprintf("bokbok %s: cannot listen on %s: %s", name, *listen, trimBokbok(err))
		if a, _ := bokbok.ParseAddr(*listen); errors.Is(err, syscall.EADDRINUSE) && a.Network != "unix" {
			msg += " (another program listens there: stop it or pick another port)" // Listen explains a Unix socket in use itself
		}
		fmt.Fprintln(e.stderr, msg)
		return exitConnect
	}
	where := bokbok.Addr{Network: ln.Addr().Network(), Address: ln.Addr().String()}
	if a, err := bokbok.ListenerAddr(ln); err == nil {
		where = a
	}
	fmt.Fprintf(e.stderr, "bokbok %s: listening on %s (data %s, %d user%s)\n", name, where, *dataDir, users.Users(), pluralS(users.Users()))

	stopping := context.AfterFunc(ctx, func() { log.Info("stopping", "grace", hubGrace) })
	err = hub.Run(ctx, ln, hubGrace)
	stopping()
	switch {
	case ctx.Err() == nil: // the listener failed
		log.Error("stopped serving", "err", trimPipes(err))
		return exitConnect
	case errors.Is(err, context.DeadlineExceeded):
		log.Warn("grace period over: closed the connections still busy", "grace", hubGrace)
	case errors.Is(err, bokbok.ErrUnfinished):
		log.Warn("connections closed by their peers during the shutdown")
	case err != nil:
		log.Error("stopped with an error", "err", trimPipes(err))
		return exitStorage
	}
	log.Info("stopped")
	return exitOK
}

// trimPipes returns err's text without the "pipes: " and "bokbok: " its
// messages start with, for messages that already say which command speaks.
func trimPipes(err error) string {
	if err == nil {
		return "(no error)"
	}
	return strings.ReplaceAll(trimBokbok(err), "pipes: ", "")
}
