package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"os"
	"regexp"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/bokbok-go/bokbok"
	"github.com/vmihailenco/msgpack/v5"
)

const serveAbout = `Run a small inspection server, to try out clients, keys, timeouts and
errors: point "bokbok call", "bokbok ping", "bokbok load" or your own
program at it.

Requests: a request names its method (as "bokbok call --method NAME" and
bokbok's Conn.RequestMethod do), and its message is the method's VALUE.
A request without a method name is a map {"method": NAME, "params":
VALUE}, where "params" may be left out; a bare string "NAME" is short for
{"method": "NAME"}. The methods:

  echo   VALUE     replies with VALUE, unchanged
  ping             replies "pong"
  info             replies with a map: "user" (the authenticated user, ""
                   when insecure), "remote" (the client's address), "realm"
                   (this server's), "secure" (true or false), "time" (the
                   server's clock, RFC 3339)
  sleep  MS        waits MS milliseconds, then replies {"slept_ms": MS}; it
                   stops early, with an error, when the caller cancels or
                   its deadline passes (try "bokbok call --timeout 1s");
                   when the server begins a graceful shutdown it stops at
                   once and replies {"slept_ms": T, "cut_short": REASON},
                   T being the time it did sleep
  error  {"code": C, "message": M}
                   fails with a remote error of code C and message M (both
                   optional; a bare string is the message), to try a
                   client's error handling
  metadata         replies with the request's metadata, a map (echo also
                   sends the request's metadata back with its reply)

A request for any other method fails with code "bokbok.no_method"; a
message without a method name of another shape with code "bad_request";
wrong params with "bad_params". Notifications are logged and otherwise
ignored.

  bokbok call 127.0.0.1:7070 --method echo '{"a": [1, 2.5, "x"]}' --meta tenant=t1 --insecure
  bokbok call 127.0.0.1:7070 '{"method": "echo", "params": {"a": [1, 2.5, "x"]}}' --insecure
  bokbok call 127.0.0.1:7070 '"info"' --user alice --key-file alice.key --realm prod

Modes: exactly one of --keys and --insecure is required.
  --keys FILE  secure: clients authenticate as one of FILE's users with
               that user's key, and everything is encrypted. FILE has one
               "USER KEY" line per user, KEY in its text form (make one
               with "bokbok keygen"); blank lines and lines starting with
               "#" are ignored. Clients must pass the same --realm as the
               server. Keep FILE private (chmod 600).
  --insecure   no authentication and no encryption: anyone who can reach
               the address can call; for trusted networks and Unix sockets.

ADDR is host:port (127.0.0.1:0 picks a free port), tcp://host:port, a Unix
socket path with a "/" in it (./bokbok.sock) or unix:///abs/path.sock.

Once listening, the server prints one line on standard output, "bokbok
serve: listening on ADDR (MODE)", with the real address (and port). It logs
connections, refusals (with the reason) and notifications on standard
error; keys are never logged. SIGINT or SIGTERM stops it: requests in flight
get --grace to finish, then it exits with status 0.

Exit status: 0 when stopped by a signal; 2 if it cannot listen on ADDR; 64
for bad flags or a bad keys file (each bad line is reported as FILE:LINE).`

// Remote error codes of the inspection server (an unknown method gets
// bokbok.CodeNoMethod).
const (
	codeBadRequest = "bad_request"
	codeBadParams  = "bad_params"
)

// maxSleep bounds the sleep method.
const maxSleep = 24 * time.Hour

func runServe(ctx context.Context, e *env, args []string) int {
	fs := newFlags(e, "serve", "serve --listen ADDR (--keys FILE | --insecure) [--realm REALM] [--grace D] [--verbose]", serveAbout)
	var (
		listen   = fs.String("listen", "", "`ADDR` to listen on (required): host:port, tcp://host:port, ./path.sock or unix:///abs/path.sock")
		keysFile = fs.String("keys", "", "serve securely, to the users in `FILE`, a file of \"USER KEY\" lines")
		insecure = fs.Bool("insecure", false, "serve without authentication or encryption (trusted networks only)")
		realm    = fs.String("realm", "", "this server's `REALM`; secure clients must pass the same --realm")
		grace    = fs.Duration("grace", 5*time.Second, "on SIGINT or SIGTERM, give requests in flight up to `D` (e.g. 500ms, 1m) to finish, then close the connections")
		verbose  = fs.Bool("verbose", false, "log every request too, not only connections and notifications")
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

	var users map[string]bokbok.Key
	if *keysFile != "" {
		var err error
		if users, err = readKeysFile(*keysFile); err != nil {
			for _, line := range strings.Split(err.Error(), "\n") {
				fmt.Fprintf(e.stderr, "bokbok serve: %s\n", line)
			}
			return exitUsage
		}
	}

	log := slog.New(slog.NewTextHandler(e.stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	if *keysFile != "" {
		if st, err := os.Stat(*keysFile); err == nil && runtime.GOOS != "windows" && st.Mode().Perm()&0o077 != 0 {
			log.Warn("the keys file is readable by other users; make it private", "file", *keysFile, "mode", st.Mode().Perm().String(), "fix", "chmod 600 "+*keysFile)
		}
	}

	ln, err := bokbok.Listen(*listen)
	if err != nil {
		msg := fmt.Sprintf("bokbok serve: cannot listen on %s: %s", *listen, trimBokbok(err))
		if errors.Is(err, syscall.EADDRINUSE) {
			if a, _ := bokbok.ParseAddr(*listen); a.Network == "unix" {
				msg += fmt.Sprintf(" (if no server is running there, remove the stale socket file %s)", a.Address)
			} else {
				msg += " (another program listens there: stop it or pick another port)"
			}
		}
		fmt.Fprintln(e.stderr, msg)
		return exitConnect
	}
	where := bokbok.Addr{Network: ln.Addr().Network(), Address: ln.Addr().String()}.String()

	h := &inspector{log: log, realm: *realm, secure: users != nil, verbose: *verbose}
	srv := &bokbok.Server{
		Config: bokbok.Config{
			Realm:   *realm,
			Handler: h.handler(),
			Logger:  log,
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
		srv.UserKey = func(user string) (bokbok.Key, bool) {
			k, ok := users[user]
			return k, ok
		}
		mode = fmt.Sprintf("secure, %d user%s, realm %q", len(users), pluralS(len(users)), *realm)
		hint = "--user USER --key-file FILE"
		if *realm != "" {
			hint += " --realm " + shellQuote(*realm)
		}
	}
	fmt.Fprintf(e.stdout, "bokbok serve: listening on %s (%s)\n", where, mode)
	fmt.Fprintf(e.stderr, "bokbok serve: try: bokbok call %s '\"info\"' %s\n", shellQuote(where), hint)

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

// readKeysFile reads a keys file: "USER KEY" lines, blank lines and
// "#" comment lines. Its error names every bad line as FILE:LINE (one per
// line of the error's text, at most maxKeysErrors), and never shows a key.
func readKeysFile(path string) (map[string]bokbok.Key, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("--keys: %v", err)
	}
	defer f.Close()
	users := make(map[string]bokbok.Key)
	firstLine := make(map[string]int)
	var problems []string
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 64<<10)
	n := 0
	for sc.Scan() {
		n++
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		bad := func(format string, a ...any) {
			problems = append(problems, fmt.Sprintf("%s:%d: ", path, n)+fmt.Sprintf(format, a...))
		}
		fields := strings.Fields(line)
		if len(fields) != 2 {
			bad("want \"USER KEY\" (two fields separated by spaces), got %d field%s", len(fields), pluralS(len(fields)))
			continue
		}
		user := fields[0]
		if len(user) > 255 {
			bad("user name of %d bytes; at most 255", len(user))
			continue
		}
		key, err := bokbok.ParseKey(fields[1])
		if err != nil {
			bad("the key of user %q is not a key: %s (make one with \"bokbok keygen\")", user, strings.TrimPrefix(trimBokbok(err), "bad key: "))
			continue
		}
		if first, dup := firstLine[user]; dup {
			bad("user %q again (first on line %d): give each user one line", user, first)
			continue
		}
		users[user], firstLine[user] = key, n
	}
	if err := sc.Err(); err != nil {
		problems = append(problems, fmt.Sprintf("%s:%d: %v", path, n+1, err))
	}
	if len(problems) > 0 {
		const maxKeysErrors = 20
		if len(problems) > maxKeysErrors {
			problems = append(problems[:maxKeysErrors], fmt.Sprintf("%s: and %d more bad lines", path, len(problems)-maxKeysErrors))
		}
		return nil, errors.New(strings.Join(problems, "\n"))
	}
	if len(users) == 0 {
		return nil, fmt.Errorf("%s: no users: add a \"USER KEY\" line for each user (make keys with \"bokbok keygen\"), or serve with --insecure", path)
	}
	return users, nil
}

// parseServeMessage splits a request into its method and its params (nil if
// absent).
func parseServeMessage(req *bokbok.Request) (string, msgpack.RawMessage, error) {
	const shape = `send {"method": NAME, "params": VALUE} or "NAME"`
	var m map[string]msgpack.RawMessage
	if err := req.Decode(&m); err != nil {
		var name string
		if req.Decode(&name) == nil {
			return name, nil, nil
		}
		return "", nil, bokbok.Errorf(codeBadRequest, "the message is not a map with string keys: %s", shape)
	}
	rawMethod, ok := m["method"]
	if !ok {
		return "", nil, bokbok.Errorf(codeBadRequest, "the message has no \"method\": %s", shape)
	}
	var method string
	if err := msgpack.Unmarshal(rawMethod, &method); err != nil {
		return "", nil, bokbok.Errorf(codeBadRequest, "\"method\" is not a string: %s", shape)
	}
	for k := range m {
		if k != "method" && k != "params" {
			return "", nil, bokbok.Errorf(codeBadRequest, "unknown key %q in the message: %s", k, shape)
		}
	}
	return method, m["params"], nil
}

// serveSleep sleeps as asked, but not past the start of a graceful
// shutdown (draining), so that it never holds a drain until its deadline.
func serveSleep(ctx context.Context, params msgpack.RawMessage, draining <-chan struct{}) (any, error) {
	const want = `sleep wants the milliseconds to sleep as params, e.g. {"method": "sleep", "params": 500}`
	var ms float64
	if len(params) == 0 || msgpack.Unmarshal(params, &ms) != nil {
		return nil, bokbok.Errorf(codeBadParams, "%s", want)
	}
	if math.IsNaN(ms) || ms < 0 || ms > float64(maxSleep/time.Millisecond) {
		return nil, bokbok.Errorf(codeBadParams, "sleep: %v ms is out of range 0 to %d (%v)", ms, maxSleep/time.Millisecond, maxSleep)
	}
	start := time.Now()
	t := time.NewTimer(time.Duration(ms * float64(time.Millisecond)))
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
		return nil, ctx.Err() // sent as bokbok.canceled or bokbok.deadline_exceeded
	case <-draining:
		slept := time.Since(start).Milliseconds()
		return map[string]any{"slept_ms": slept, "cut_short": "the server is shutting down"}, nil
	}
	var slept any = ms
	if ms == math.Trunc(ms) {
		slept = int64(ms)
	}
	return map[string]any{"slept_ms": slept}, nil
}

// remoteErrorFor builds the error the error method returns.
func remoteErrorFor(params msgpack.RawMessage) error {
	e := &bokbok.RemoteError{Code: "example", Message: "an error, as requested"}
	if len(params) == 0 {
		return e
	}
	var msg string
	if msgpack.Unmarshal(params, &msg) == nil {
		if msg != "" {
			e.Message = msg
		}
		return e
	}
	var p struct {
		Code    *string `msgpack:"code"`
		Message *string `msgpack:"message"`
	}
	if msgpack.Unmarshal(params, &p) != nil {
		return bokbok.Errorf(codeBadParams, `error wants params {"code": CODE, "message": MESSAGE} (both optional) or a message string`)
	}
	if p.Code != nil {
		e.Code = *p.Code
	}
	if p.Message != nil {
		e.Message = *p.Message
	}
	return e
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
