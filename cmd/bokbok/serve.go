package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"regexp"
	"strings"
	"syscall"
	"time"

	"github.com/bokbok-go/bokbok"
)

const serveAbout = `Run a small inspection server, to try out clients, keys, timeouts and
errors: point "bokbok call", "bokbok ping", "bokbok load" or your own
program at it.

Methods: a request names its method, as "bokbok call --method NAME" and
Conn.RequestMethod do, and its message is the method's params. A request
without a method name (from an older client, or "bokbok call" without
--method) is read the old way: its message is a map
{"method": NAME, "params": VALUE}, where "params" may be left out, and a
bare string "NAME" is short for {"method": "NAME"}. Both forms reach the
same methods:

  echo     VALUE   replies with VALUE, unchanged, with the request's
                   metadata as the reply's metadata
  ping             replies "pong"
  info             replies with a map: "user" (the authenticated user, ""
                   when insecure), "remote" (the client's address), "realm"
                   (this server's), "secure" (true or false), "time" (the
                   server's clock, RFC 3339)
  metadata         replies with the request's metadata, a map of strings
                   (try "bokbok call ADDR --method metadata --meta k=v")
  sleep    MS      waits MS milliseconds, then replies {"slept_ms": MS}; it
                   stops early, with an error, when the caller cancels or
                   its deadline passes (try "bokbok call --timeout 1s");
                   when the server begins a graceful shutdown it stops at
                   once and replies {"slept_ms": T, "cut_short": REASON},
                   T being the time it did sleep
  error    {"code": C, "message": M}
                   fails with a remote error of code C and message M (both
                   optional; a bare string is the message), to try a
                   client's error handling

A request for any other method fails with code "bokbok.no_method"; a
message of another shape, or params of the wrong type or with a key the
method does not know, with "bokbok.bad_request", whose message names the
field at fault. Notifications are logged and otherwise ignored.

  bokbok call 127.0.0.1:7070 --method echo '{"a": [1, 2.5, "x"]}' --meta tenant=t1 --insecure
  bokbok call 127.0.0.1:7070 '{"method": "echo", "params": {"a": [1, 2.5, "x"]}}' --insecure
  bokbok call 127.0.0.1:7070 --method info --user alice --key-file alice.key --realm prod

Modes: exactly one of --keys and --insecure is required.
  --keys FILE  secure: clients authenticate as one of FILE's users with
               that user's key, and everything is encrypted. FILE has one
               "USER KEY" line per user, KEY in its text form (make one
               with "bokbok keygen"); blank lines and lines starting with
               "#" are ignored. A user may have two lines, two valid
               keys, while a key is rotated. SIGHUP re-reads FILE (a
               file with a bad line is reported, and the keys in use
               stay). Clients must pass the same --realm as the
               server. Keep FILE private (chmod 600).
  --insecure   no authentication and no encryption: anyone who can reach
               the address can call; for trusted networks and Unix sockets.

ADDR is host:port (127.0.0.1:0 picks a free port), tcp://host:port, a Unix
socket path with a "/" in it (./bokbok.sock) or unix:///abs/path.sock.

Once listening, the server prints one line on standard output, "bokbok
serve: listening on ADDR (MODE)", with the real address (and port). It logs
connections, refusals (with the reason), notifications and failed
requests (method, user, duration, error code and message) on standard
error; with --verbose, every request too, when it arrives (with its
message) and when it is answered. Keys and metadata values are never
logged, only metadata keys. SIGINT or SIGTERM stops it: requests in flight
get --grace to finish, then it exits with status 0.

Exit status: 0 when stopped by a signal; 2 if it cannot listen on ADDR; 64
for bad flags or a bad keys file (each bad line is reported as FILE:LINE).`

func runServe(ctx context.Context, e *env, args []string) int {
	fs := newFlags(e, "serve", "serve --listen ADDR (--keys FILE | --insecure) [--realm REALM] [--grace D] [--verbose]", serveAbout)
	var (
		listen   = fs.String("listen", "", "`ADDR` to listen on (required): host:port, tcp://host:port, ./path.sock or unix:///abs/path.sock")
		keysFile = fs.String("keys", "", "serve securely, to the users in `FILE`, a file of \"USER KEY\" lines")
		insecure = fs.Bool("insecure", false, "serve without authentication or encryption (trusted networks only)")
		realm    = fs.String("realm", "", "this server's `REALM`; secure clients must pass the same --realm")
		grace    = fs.Duration("grace", 5*time.Second, "on SIGINT or SIGTERM, give requests in flight up to `D` (e.g. 500ms, 1m) to finish, then close the connections")
		verbose  = fs.Bool("verbose", false, "log every request too (at level DEBUG), not only connections, notifications and failed requests")
	)
	if _, code, ok := parseArgs(fs, args); !ok {
		return code
	}
	usageErr := func(format string, a ...any) int {
		fmt.Fprintf(e.stderr, "bokbok serve: "+format+"\n", a...)
		return exitUsage
	}
	switch {
	case *listen == "":
		return usageErr("--listen ADDR is required, e.g. --listen 127.0.0.1:7070 or --listen ./bokbok.sock")
	case *keysFile != "" && *insecure:
		return usageErr("--keys and --insecure cannot be combined: pass --keys FILE to serve securely, or --insecure alone to serve without authentication")
	case *keysFile == "" && !*insecure:
		return usageErr("pass --keys FILE to serve securely (a file of \"USER KEY\" lines; make keys with \"bokbok keygen\"), or --insecure to serve without authentication or encryption")
	case len(*realm) > 255:
		return usageErr("--realm is %d bytes long; a realm has at most 255", len(*realm))
	case *grace < 0:
		return usageErr("--grace is %v; want 0 or more (0 closes connections at once)", *grace)
	}
	if _, err := bokbok.ParseAddr(*listen); err != nil {
		return usageErr("--listen: %s", trimBokbok(err))
	}

	var users *bokbok.KeysFile
	if *keysFile != "" {
		var ok bool
		if users, ok = openKeys(e, "serve", *keysFile, noUsersInsecure); !ok {
			return exitUsage
		}
	}

	level := slog.LevelInfo
	if *verbose {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(e.stderr, &slog.HandlerOptions{Level: level}))
	// The library's own records at info and above: its debug records
	// repeat what this command logs.
	libLog := slog.New(slog.NewTextHandler(e.stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	if users != nil {
		stopReload := watchKeys(log, users, noUsersInsecure)
		defer stopReload()
	}

	ln, err := bokbok.Listen(*listen)
	if err != nil {
		msg := fmt.Sprintf("bokbok serve: cannot listen on %s: %s", *listen, trimBokbok(err))
		if a, _ := bokbok.ParseAddr(*listen); errors.Is(err, syscall.EADDRINUSE) && a.Network != "unix" {
			msg += " (another program listens there: stop it or pick another port)" // Listen explains a Unix socket in use itself
		}
		fmt.Fprintln(e.stderr, msg)
		return exitConnect
	}
	where := bokbok.Addr{Network: ln.Addr().Network(), Address: ln.Addr().String()}.String()

	h := newInspector(log, *realm, users != nil)
	srv := &bokbok.Server{
		Config: bokbok.Config{
			Realm:   *realm,
			Handler: h.handler(),
			Logger:  libLog,
			OnClose: func(c *bokbok.Conn, reason error) {
				log.Info("connection closed", connAttrs(c, "reason", closeReason(reason))...)
			},
		},
		OnOpen: func(c *bokbok.Conn) error {
			log.Info("connection opened", connAttrs(c)...)
			return nil
		},
	}
	mode := "insecure: no authentication, no encryption"
	hint := "--insecure"
	if users != nil {
		srv.UserKeys = users.UserKeys
		mode = fmt.Sprintf("secure, %d user%s, realm %q", users.Users(), pluralS(users.Users()), *realm)
		hint = "--user USER --key-file FILE"
		if *realm != "" {
			hint += " --realm " + shellQuote(*realm)
		}
	}
	fmt.Fprintf(e.stdout, "bokbok serve: listening on %s (%s)\n", where, mode)
	fmt.Fprintf(e.stderr, "bokbok serve: try: bokbok call %s --method info %s\n", shellQuote(where), hint)

	srv.OnRefused = func(remote net.Addr, err error) {
		attrs := []any{"remote", remoteName(remote), "reason", trimBokbok(err)}
		if hint := refusalHint(err, users != nil); hint != "" {
			attrs = append(attrs, "hint", hint)
		}
		log.Info("connection refused", attrs...)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	select {
	case <-ctx.Done():
	case err := <-served: // the listener failed
		log.Error("stopped serving", "err", trimBokbok(err))
		srv.Close()
		srv.Wait()
		return exitConnect
	}
	log.Info("stopping", "grace", *grace)
	sctx, cancel := context.WithTimeout(context.Background(), *grace)
	err = srv.Shutdown(sctx)
	cancel()
	var unfinished *bokbok.ShutdownError
	switch {
	case errors.As(err, &unfinished) && errors.Is(err, context.DeadlineExceeded):
		log.Warn("grace period over: closed the connections still busy", "grace", *grace, "requests_cut", unfinished.Incoming)
	case errors.As(err, &unfinished):
		log.Warn("connections closed by their peers during the shutdown", "requests_cut", unfinished.Incoming)
	case err != nil && *grace > 0:
		log.Warn("grace period over: closed the connections still busy", "grace", *grace)
	}
	<-served
	srv.Wait()
	log.Info("stopped")
	return exitOK
}

// summary renders a message as JSON for the log, cut short if long.
func messageSummary(req *bokbok.Request) string {
	const max = 200
	s, err := replyJSON(req.Decode, "")
	if err != nil {
		return fmt.Sprintf("(%d bytes that do not decode: %v)", len(req.Raw()), err)
	}
	if len(s) > max {
		s = s[:max] + fmt.Sprintf("... (%d bytes of JSON)", len(s))
	}
	return s
}

// connAttrs returns the log attributes that identify a connection,
// followed by more.
func connAttrs(c *bokbok.Conn, more ...any) []any {
	attrs := []any{"remote", remoteName(c.RemoteAddr())}
	if u := c.User(); u != "" {
		attrs = append(attrs, "user", u)
	}
	return append(attrs, more...)
}

// remoteName shows a network address; a Unix socket's client has none.
func remoteName(a net.Addr) string {
	if a == nil || a.String() == "" || a.String() == "@" {
		return "(unix socket client)"
	}
	return a.String()
}

// closeReason says in words why a connection closed.
func closeReason(err error) string {
	switch {
	case err == nil, errors.Is(err, io.EOF):
		return "closed by the client"
	case errors.Is(err, bokbok.ErrShutdown):
		return "shut down"
	case errors.Is(err, bokbok.ErrKeepaliveTimeout):
		return "the client went silent (keepalive timeout)"
	}
	return trimBokbok(err)
}

// refusalHint says what a client refused for err should change, if there
// is a simple answer.
func refusalHint(err error, secure bool) string {
	switch {
	case errors.Is(err, bokbok.ErrMode) && secure:
		return "this server is secure: the client must pass --user and --key-file (not --insecure)"
	case errors.Is(err, bokbok.ErrMode):
		return "this server is insecure: the client must pass --insecure (not --user and --key-file)"
	case errors.Is(err, bokbok.ErrAuth):
		return "the client's user, key and realm must match a line of --keys and this server's --realm"
	}
	return ""
}

// trimBokbok returns err's text without the "bokbok: " its messages (and
// the messages they wrap) start with, for messages that already say which
// command speaks.
func trimBokbok(err error) string {
	return strings.ReplaceAll(err.Error(), "bokbok: ", "")
}

func pluralS(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}

var shellSafe = regexp.MustCompile(`^[A-Za-z0-9@%+=:,./_-]+$`)

// shellQuote quotes s for a POSIX shell, if it needs it.
func shellQuote(s string) string {
	if shellSafe.MatchString(s) {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
