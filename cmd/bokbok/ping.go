package main

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"os"
	"strings"
	"syscall"
	"time"

	"github.com/bokbok-go/bokbok"
)

const pingAbout = `Connect to ADDR and measure round trips with the protocol's own PING and
PONG, which the peer's connection answers itself, whatever its handler: any
bokbok peer can be pinged. Print one line per round trip and, at the end or
on Ctrl-C, a summary: pings sent and received, the share lost, and the
min/avg/max/mdev round-trip time.

Pings go one at a time: each is sent --interval after the previous one was
sent (or as soon as that one is answered, if that took longer), and waits up
to --timeout (0: no limit) for its pong before it counts as lost. A ping
still waiting when Ctrl-C comes or the connection breaks is left out of the
counts.

The connection is secure unless --insecure is given: pass --user and
--key-file, and --realm if the server has one.

Exit status: 0 if every ping sent was answered (also after Ctrl-C); 1 if
some were lost; 2 if the connection could not be opened or authenticated,
or broke while pinging; 64 on bad usage.`

func runPing(ctx context.Context, e *env, args []string) int {
	fs := newFlags(e, "ping", "ping ADDR [--count N] [--interval D] [connection flags]", pingAbout)
	count := fs.Int("count", 4, "send `N` pings; 0 means until interrupted")
	interval := fs.Duration("interval", time.Second, "time (`D`) from the start of one ping to the start of the next")
	var cf connFlags
	cf.register(fs)
	pos, code, ok := parseArgs(fs, args, "ADDR")
	if !ok {
		return code
	}
	switch {
	case *count < 0:
		return badFlag(e, fs, "--count is %d, want 0 (until interrupted) or more", *count)
	case *interval < 0:
		return badFlag(e, fs, "--interval is %v, want 0 or more", *interval)
	case cf.timeout < 0:
		return badFlag(e, fs, "--timeout is %v, want 0 (no limit) or more", cf.timeout)
	}
	addr := pos[0]
	cfg, code, ok := checkPeerFlags(e, "ping", addr, &cf)
	if !ok {
		return code
	}
	t0 := time.Now()
	conn, err := dialWithin(ctx, addr, cfg, cf.timeout)
	if err != nil {
		fmt.Fprintf(e.stderr, "bokbok ping: %s\n", whyNoConn(ctx, err, addr, &cf))
		return exitConnect
	}
	defer conn.Close()
	fmt.Fprintf(e.stdout, "PING %s: connected in %s (%s)\n", addr, fmtMillis(time.Since(t0)), connSecurity(conn, &cf))

	var st pingStats
	start := time.Now()
	broke := false
	next := start
loop:
	for seq := 1; *count == 0 || seq <= *count; seq++ {
		if seq > 1 && !sleepUntil(ctx, next, conn.Done()) {
			if err := conn.Err(); err != nil && ctx.Err() == nil {
				fmt.Fprintf(e.stderr, "bokbok ping: connection to %s lost: %s\n", addr, plainErr(err))
				broke = true
			}
			break
		}
		next = time.Now().Add(*interval)
		pctx, cancel := ctxWithin(ctx, cf.timeout)
		rtt, err := conn.Ping(pctx)
		cancel()
		switch {
		case err == nil:
			st.add(rtt)
			fmt.Fprintf(e.stdout, "pong from %s: time=%s seq=%d\n", addr, fmtMillis(rtt), seq)
		case ctxOver(ctx):
			break loop // interrupted while waiting: this ping does not count
		case errors.Is(err, context.DeadlineExceeded):
			st.sent++
			fmt.Fprintf(e.stdout, "no pong from %s: seq=%d: no answer within --timeout %v\n", addr, seq, cf.timeout)
		default:
			// The connection broke: this ping cannot be answered, but it is
			// no more lost than the ones that would have followed.
			fmt.Fprintf(e.stderr, "bokbok ping: connection to %s lost: %s\n", addr, plainErr(err))
			broke = true
			break loop
		}
	}
	st.print(e, addr, time.Since(start))
	switch {
	case broke:
		return exitConnect
	case st.received < st.sent:
		return exitRemote
	}
	return exitOK
}

// pingStats accumulates round trips.
type pingStats struct {
	sent, received int
	min, max       time.Duration
	sum, sumSq     float64 // seconds, seconds²
}

func (s *pingStats) add(rtt time.Duration) {
	if s.received == 0 || rtt < s.min {
		s.min = rtt
	}
	if rtt > s.max {
		s.max = rtt
	}
	s.sent++
	s.received++
	x := rtt.Seconds()
	s.sum += x
	s.sumSq += x * x
}

// print writes the summary in the manner of the Unix ping tool.
func (s *pingStats) print(e *env, addr string, elapsed time.Duration) {
	lost := 0.0
	if s.sent > 0 {
		lost = 100 * float64(s.sent-s.received) / float64(s.sent)
	}
	fmt.Fprintf(e.stdout, "\n--- %s bokbok ping statistics ---\n", addr)
	fmt.Fprintf(e.stdout, "%d sent, %d received, %.3g%% lost, time %v\n", s.sent, s.received, lost, elapsed.Round(time.Millisecond))
	if s.received == 0 {
		return
	}
	n := float64(s.received)
	avg := s.sum / n
	mdev := math.Sqrt(max(0, s.sumSq/n-avg*avg))
	fmt.Fprintf(e.stdout, "rtt min/avg/max/mdev = %.3f/%.3f/%.3f/%.3f ms\n",
		millis(s.min), avg*1e3, millis(s.max), mdev*1e3)
}

// millis converts d to milliseconds.
func millis(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// fmtMillis formats d in milliseconds with three decimals ("1.234ms").
func fmtMillis(d time.Duration) string { return fmt.Sprintf("%.3fms", millis(d)) }

// sleepUntil waits until t, unless ctx ends or stop is closed first, and
// reports whether t came.
func sleepUntil(ctx context.Context, t time.Time, stop <-chan struct{}) bool {
	d := time.Until(t)
	if d <= 0 {
		return ctx.Err() == nil
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-timer.C:
		return true
	case <-ctx.Done():
		return false
	case <-stop:
		return false
	}
}

// The helpers below are shared by ping and load.

// plainErr returns err's text without the "bokbok: " in front, for
// messages that already start with the command's name.
func plainErr(err error) string { return strings.TrimPrefix(err.Error(), "bokbok: ") }

// ctxWithin returns a context that ends after d (--timeout), or only with
// ctx if d is 0.
func ctxWithin(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	if d <= 0 {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, d)
}

// ctxOver reports whether ctx has ended or its deadline has passed (a
// call may see the deadline pass before ctx.Err says so).
func ctxOver(ctx context.Context) bool {
	if ctx.Err() != nil {
		return true
	}
	d, ok := ctx.Deadline()
	return ok && !time.Now().Before(d)
}

// badFlag reports a bad flag value and the usage, and returns exitUsage.
func badFlag(e *env, fs interface{ Name() string }, format string, args ...any) int {
	fmt.Fprintf(e.stderr, "bokbok %s: %s\n", fs.Name(), fmt.Sprintf(format, args...))
	fmt.Fprintf(e.stderr, "Run \"bokbok %s --help\" for usage.\n", fs.Name())
	return exitUsage
}

// checkPeerFlags checks addr and the connection flags, and builds the Config
// to dial with. On a problem it reports it on stderr and ok is false.
func checkPeerFlags(e *env, cmd, addr string, cf *connFlags) (cfg *bokbok.Config, code int, ok bool) {
	if _, err := bokbok.ParseAddr(addr); err != nil {
		fmt.Fprintf(e.stderr, "bokbok %s: %s\n", cmd, plainErr(err))
		return nil, exitUsage, false
	}
	cfg, err := cf.config()
	if err != nil {
		fmt.Fprintf(e.stderr, "bokbok %s: %v\n", cmd, err)
		return nil, exitUsage, false
	}
	return cfg, exitOK, true
}

// dialWithin dials addr within timeout (which bounds connecting and the
// handshake; 0 means no limit beyond the handshake's own) and ctx.
func dialWithin(ctx context.Context, addr string, cfg *bokbok.Config, timeout time.Duration) (*bokbok.Conn, error) {
	dctx, cancel := ctxWithin(ctx, timeout)
	defer cancel()
	return bokbok.Dial(dctx, addr, cfg)
}

// connSecurity says how the connection is protected, for the first line
// of output.
func connSecurity(conn *bokbok.Conn, cf *connFlags) string {
	if conn.User() == "" {
		return "insecure"
	}
	if cf.realm != "" {
		return fmt.Sprintf("secure, user %q, realm %q", conn.User(), cf.realm)
	}
	return fmt.Sprintf("secure, user %q", conn.User())
}

// whyNoConn turns a failure to connect into one line that says what
// went wrong and, where it can tell, what to fix.
func whyNoConn(ctx context.Context, err error, addr string, cf *connFlags) string {
	cannot := "cannot connect to " + addr + ": "
	why := plainErr(err)
	switch {
	case ctx.Err() != nil:
		return "interrupted while connecting to " + addr
	case errors.Is(err, bokbok.ErrAuth):
		return cannot + why + "; check --user, --key-file and --realm against the server's configuration"
	case errors.Is(err, bokbok.ErrMode) && cf.insecure:
		return cannot + "the server is secure and refuses insecure clients: drop --insecure and pass --user and --key-file"
	case errors.Is(err, bokbok.ErrMode):
		return cannot + "the server is insecure and refuses secure clients: pass --insecure (without --user and --key-file)"
	case errors.Is(err, bokbok.ErrVersion):
		return cannot + why + "; upgrade the older side"
	case errors.Is(err, bokbok.ErrHandshakeTimeout):
		return cannot + why + "; is " + addr + " a bokbok server, and not overloaded?"
	case errors.Is(err, bokbok.ErrProtocol):
		return cannot + why + "; is " + addr + " a bokbok server?"
	case errors.Is(err, context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded):
		// our --timeout, while dialling or in the handshake
		return cannot + fmt.Sprintf("no connection within --timeout %v; is the address right and the server up?", cf.timeout)
	case errors.Is(err, syscall.ECONNREFUSED):
		return cannot + "connection refused; is the server running, and is the address right?"
	case errors.Is(err, syscall.ENOENT):
		return cannot + "no such socket file; is the server running, and is the path right?"
	}
	var dnsErr *net.DNSError
	if errors.As(err, &dnsErr) {
		return cannot + why + "; check the host name"
	}
	return cannot + why
}
