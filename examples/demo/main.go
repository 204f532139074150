// Command demo runs a bokbok server and a bokbok client in one process,
// over a real loopback TCP socket, and prints a transcript of what passes
// between them: a secure connection authenticated with a pre-shared key,
// clients the server refuses (a wrong key, an unknown user, a wrong realm,
// an insecure client), calls both ways, a callback made while a request is
// being served, concurrent calls answered out of order, a notification,
// remote errors and a recovered panic, a cancelled call, messages that are
// too large, an actor reference passed across and called back (package
// ocap), and a graceful shutdown.
//
//	go run ./examples/demo                      # secure: a generated key
//	go run ./examples/demo -passphrase 'a long passphrase'
//	go run ./examples/demo -insecure            # no keys, nothing encrypted
//
// -passphrase derives the key with bokbok.PassphraseToKey instead of
// generating it, which takes a noticeable fraction of a second by design.
//
// Both sides' Handler is an ocap.Node, which serves capability messages
// and hands every other message to its Fallback, so one connection carries
// plain calls and actor messages alike. Each side's Fallback is a
// bokbok.Mux of typed handlers, for the methods declared below with
// bokbok.Method, which the other side calls with Method.Call.
//
// It exits 0 if everything happened as expected and 1 otherwise.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/bokbok-go/bokbok"
	"github.com/bokbok-go/bokbok/ocap"
)

// The methods, each a name with its request and reply types. The server
// serves all but name, which the client serves; both serve add and upper.
// A request may be any value MessagePack can encode.
var (
	add     = bokbok.Method[[]int64, int64]("add")
	upper   = bokbok.Method[string, string]("upper")
	greet   = bokbok.Method[struct{}, string]("greet") // calls the client's name back
	name    = bokbok.Method[struct{}, string]("name")
	step    = bokbok.Method[int, string]("step")
	divide  = bokbok.Method[[2]int64, int64]("divide")
	explode = bokbok.Method[struct{}, string]("explode")
	slow    = bokbok.Method[struct{}, string]("slow")
	repeat  = bokbok.Method[repeatArgs, string]("repeat")
	finish  = bokbok.Method[struct{}, string]("finish")
	noop    = bokbok.Method[struct{}, struct{}]("noop")
)

// repeatArgs is the request of repeat.
type repeatArgs struct {
	Text  string `msgpack:"text"`
	Count int    `msgpack:"count"`
}

// logMethod is the notification the client sends: a string.
const logMethod = "log"

// The secure connection's realm and user.
const (
	realm = "bokbok-demo"
	user  = "alice"
)

func main() {
	insecure := flag.Bool("insecure", false, "run the demo over an insecure connection")
	passphrase := flag.String("passphrase", "", "derive the user's key from this passphrase (bokbok.PassphraseToKey) instead of generating one")
	flag.Parse()
	if *insecure && *passphrase != "" {
		fmt.Fprintln(os.Stderr, "demo: -passphrase makes no sense with -insecure")
		os.Exit(2)
	}

	// The demo takes milliseconds; if something hangs, fail loudly.
	watchdog := time.AfterFunc(20*time.Second, func() {
		fmt.Fprintln(os.Stderr, "demo: timed out")
		os.Exit(1)
	})
	defer watchdog.Stop()
	if err := run(!*insecure, *passphrase); err != nil {
		fmt.Fprintln(os.Stderr, "demo: UNEXPECTED:", err)
		os.Exit(1)
	}
	fmt.Println("== all done")
}

// demo holds what the two sides share. Both run in this process, so the
// handlers report to the transcript through channels, which keeps the
// transcript in a fixed order.
type demo struct {
	mu sync.Mutex // serializes output

	serverConn chan *bokbok.Conn // the server's side of the connection, from OnOpen
	closed     chan error        // the server's OnClose reason
	notes      chan string       // notifications the server handled

	stepsArrived sync.WaitGroup   // the three concurrent "step" calls
	gate         [4]chan struct{} // gate[k] opens the reply to "step k"
	slowStarted  chan bool        // "slow" started; whether its context has a deadline
	slowEnded    chan error       // why the context of "slow" ended
	finishStart  chan struct{}    // "finish" started
	finishGo     chan struct{}    // lets "finish" return
	served       chan error       // what Server.Serve returned
}

func (d *demo) say(format string, args ...any) {
	d.mu.Lock()
	defer d.mu.Unlock()
	fmt.Printf(format+"\n", args...)
}

// show formats a reply: strings quoted, anything else as fmt prints it.
func show(v any) string {
	if s, ok := v.(string); ok {
		return strconv.Quote(s)
	}
	return fmt.Sprint(v)
}

// describe formats an error the way the transcript shows it.
func describe(err error) string {
	var re *bokbok.RemoteError
	if errors.As(err, &re) {
		return fmt.Sprintf("remote error: code %q, message %q", re.Code, re.Message)
	}
	return "error: " + err.Error()
}

// args formats a request as the transcript shows it, as a list of
// arguments: a list as it is, a struct as its fields, and any other value
// as a list of one.
func args(req any) string {
	v := reflect.ValueOf(req)
	switch v.Kind() {
	case reflect.Slice, reflect.Array:
		return fmt.Sprint(req)
	case reflect.Struct:
		fields := make([]any, v.NumField())
		for i := range fields {
			fields[i] = v.Field(i).Interface()
		}
		return fmt.Sprint(fields)
	}
	return fmt.Sprintf("[%v]", req)
}

// call makes one typed call of method m on c, printing it and its answer.
func call[Req, Reply any](ctx context.Context, d *demo, c *bokbok.Conn, from, to, indent string, m bokbok.Method[Req, Reply], req Req) (Reply, error) {
	d.say("%s%s -> %s: %s %s", indent, from, to, m, args(req))
	reply, err := m.Call(ctx, c, req)
	if err != nil {
		d.say("%s%s -> %s: %s", indent, to, from, describe(err))
		return reply, err
	}
	d.say("%s%s -> %s: %s", indent, to, from, show(reply))
	return reply, nil
}

// expect checks a reply.
func expect(got, want any) error {
	if show(got) != show(want) {
		return fmt.Errorf("got %s, want %s", show(got), show(want))
	}
	return nil
}

// expectRemote checks that err is a *RemoteError with the given code.
func expectRemote(err error, code string) error {
	var re *bokbok.RemoteError
	if !errors.As(err, &re) || re.Code != code {
		return fmt.Errorf("got %v, want a remote error with code %q", err, code)
	}
	return nil
}

// wait receives from ch, or fails after a while.
func wait[T any](ch <-chan T, what string) (T, error) {
	select {
	case v := <-ch:
		return v, nil
	case <-time.After(5 * time.Second):
		var zero T
		return zero, fmt.Errorf("timed out waiting for %s", what)
	}
}

// handleCommon registers the methods both sides serve on mux.
func handleCommon(mux *bokbok.Mux) {
	add.Handle(mux, func(ctx context.Context, nums []int64) (int64, error) {
		var sum int64
		for _, n := range nums {
			sum += n
		}
		return sum, nil
	})
	upper.Handle(mux, func(ctx context.Context, s string) (string, error) {
		return strings.ToUpper(s), nil
	})
}

// serverMux returns the server's methods.
func (d *demo) serverMux() *bokbok.Mux {
	mux := bokbok.NewMux()
	handleCommon(mux)
	greet.Handle(mux, func(ctx context.Context, _ struct{}) (string, error) {
		// A callback: while serving the client's request, ask the client,
		// on the connection the request came on.
		conn := bokbok.RequestFromContext(ctx).Conn()
		n, err := call(ctx, d, conn, "server", "client", "    ", name, struct{}{})
		if err != nil {
			return "", err
		}
		return fmt.Sprintf("Hello, %s!", n), nil
	})
	step.Handle(mux, func(ctx context.Context, k int) (string, error) {
		if k < 1 || k > 3 {
			return "", bokbok.Errorf("bad_args", "step takes 1, 2 or 3")
		}
		d.stepsArrived.Done()
		d.stepsArrived.Wait() // all three are running at once
		select {
		case <-d.gate[k]:
		case <-ctx.Done():
			return "", ctx.Err()
		}
		return fmt.Sprintf("step %d done", k), nil
	})
	divide.Handle(mux, func(ctx context.Context, n [2]int64) (int64, error) {
		if n[1] == 0 {
			return 0, bokbok.Errorf("division_by_zero", "cannot divide %d by zero", n[0])
		}
		return n[0] / n[1], nil
	})
	explode.Handle(mux, func(ctx context.Context, _ struct{}) (string, error) {
		panic("boom")
	})
	slow.Handle(mux, func(ctx context.Context, _ struct{}) (string, error) {
		_, hasDeadline := ctx.Deadline()
		d.slowStarted <- hasDeadline
		<-ctx.Done()
		d.slowEnded <- ctx.Err()
		return "", ctx.Err()
	})
	repeat.Handle(mux, func(ctx context.Context, r repeatArgs) (string, error) {
		return strings.Repeat(r.Text, r.Count), nil
	})
	finish.Handle(mux, func(ctx context.Context, _ struct{}) (string, error) {
		close(d.finishStart)
		<-d.finishGo
		return "finished", nil
	})
	noop.Handle(mux, func(ctx context.Context, _ struct{}) (struct{}, error) {
		return struct{}{}, nil
	})
	bokbok.HandleNotification(mux, logMethod, func(ctx context.Context, text string) error {
		d.notes <- text
		return nil
	})
	return mux
}

// clientMux returns the client's methods: the server calls them back.
func clientMux() *bokbok.Mux {
	mux := bokbok.NewMux()
	handleCommon(mux)
	name.Handle(mux, func(ctx context.Context, _ struct{}) (string, error) {
		return "demo-client", nil
	})
	return mux
}

// describeUser says who a connection is authenticated as.
func describeUser(c *bokbok.Conn) string {
	if c.User() == "" {
		return " (insecure: no user)"
	}
	return fmt.Sprintf(", authenticated as user %q", c.User())
}

// refusals dials the secure server as clients it must refuse, and checks
// that each is refused for the right reason.
func (d *demo) refusals(ctx context.Context, addr string, key bokbok.Key) error {
	d.say("== clients the secure server refuses")
	wrongKey, err := bokbok.GenerateKey()
	if err != nil {
		return err
	}
	var authErrs []string
	for _, tc := range []struct {
		what string
		cfg  *bokbok.Config
		want error
	}{
		{fmt.Sprintf("client as %q with a wrong key", user), &bokbok.Config{Key: &wrongKey, User: user, Realm: realm}, bokbok.ErrAuth},
		{fmt.Sprintf("client as \"mallory\", no such user, with %s's key", user), &bokbok.Config{Key: &key, User: "mallory", Realm: realm}, bokbok.ErrAuth},
		{fmt.Sprintf("client as %q with the right key, in realm \"elsewhere\"", user), &bokbok.Config{Key: &key, User: user, Realm: "elsewhere"}, bokbok.ErrAuth},
		{"insecure client", nil, bokbok.ErrMode},
	} {
		c, err := bokbok.Dial(ctx, addr, tc.cfg)
		if err == nil {
			c.Close()
			return fmt.Errorf("the server accepted the %s", tc.what)
		}
		d.say("%s: refused: %v", tc.what, err)
		if !errors.Is(err, tc.want) {
			return fmt.Errorf("%s: got %v, want an error matching %v", tc.what, err, tc.want)
		}
		if tc.want == bokbok.ErrAuth {
			authErrs = append(authErrs, strings.ReplaceAll(err.Error(), `"mallory"`, `"`+user+`"`))
		}
	}
	if authErrs[0] != authErrs[1] {
		return fmt.Errorf("a wrong key and an unknown user give different errors: %q and %q", authErrs[0], authErrs[1])
	}
	d.say("(a wrong key and an unknown user get the same error: clients cannot tell which user names exist)")
	return nil
}

func run(secure bool, passphrase string) error {
	ctx := context.Background()
	d := &demo{
		serverConn:  make(chan *bokbok.Conn, 1),
		closed:      make(chan error, 1),
		notes:       make(chan string, 1),
		slowStarted: make(chan bool, 1),
		slowEnded:   make(chan error, 1),
		finishStart: make(chan struct{}),
		finishGo:    make(chan struct{}),
		served:      make(chan error, 1),
	}
	for k := range d.gate {
		d.gate[k] = make(chan struct{})
	}

	say := d.say
	var key bokbok.Key
	if secure {
		say("== a key")
		if passphrase != "" {
			start := time.Now()
			key = bokbok.PassphraseToKey(passphrase, realm, user)
			say("server and client: derived %s's key from a passphrase with bokbok.PassphraseToKey (argon2id, %v)",
				user, time.Since(start).Round(time.Millisecond))
		} else {
			var err error
			if key, err = bokbok.GenerateKey(); err != nil {
				return err
			}
			say("server and client: share %s's key, made with bokbok.GenerateKey (printed as %v)", user, key)
		}
		say("server: realm %q; knows one user, %q", realm, user)
	}

	// Each side's Handler is a capability Node; messages that are not
	// capability messages go to its Fallback. The server binds its board
	// actor, in a vat of its own, under a name clients can fetch.
	serverVat := ocap.NewVat("server")
	defer serverVat.Close()
	serverNode := &ocap.Node{Fallback: d.serverMux()}
	serverNode.Bind("board", serverVat.Spawn(&board{d: d}))
	clientNode := &ocap.Node{Fallback: clientMux()}

	say("== dial")
	srv := &bokbok.Server{
		Config: bokbok.Config{
			Handler:        serverNode,
			OnClose:        func(c *bokbok.Conn, reason error) { d.closed <- reason },
			MaxMessageSize: 1024, // the server accepts messages of up to 1 KiB
		},
		OnOpen: func(c *bokbok.Conn) error {
			d.serverConn <- c
			return nil
		},
	}
	clientCfg := &bokbok.Config{
		Handler:        clientNode,
		MaxMessageSize: 64 << 10, // the client accepts messages of up to 64 KiB
	}
	mode := "insecure"
	if secure {
		mode = "secure"
		// The server looks up the key of the user each client claims to
		// be; false means no such user.
		srv.UserKey = func(name string) (bokbok.Key, bool) {
			if name != user {
				return bokbok.Key{}, false
			}
			return key, true
		}
		srv.Realm = realm
		clientCfg.Key, clientCfg.User, clientCfg.Realm = &key, user, realm
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	go func() { d.served <- srv.Serve(ln) }()
	defer srv.Close() // in case of an early return
	say("server: listening on %s (%s)", ln.Addr(), mode)

	client, err := bokbok.Dial(ctx, ln.Addr().String(), clientCfg)
	if err != nil {
		return err
	}
	defer client.Close()
	say("client: connected to %s%s", client.RemoteAddr(), describeUser(client))
	server, err := wait(d.serverConn, "the server's OnOpen")
	if err != nil {
		return err
	}
	say("server: accepted a connection from %s%s", server.RemoteAddr(), describeUser(server))
	wantUser := ""
	if secure {
		wantUser = user
	}
	if client.User() != wantUser || server.User() != wantUser {
		return fmt.Errorf("the connection's user is %q on the client and %q on the server, want %q", client.User(), server.User(), wantUser)
	}

	if secure {
		if err := d.refusals(ctx, ln.Addr().String(), key); err != nil {
			return err
		}
	}

	say("== a call each way")
	sum, err := call(ctx, d, client, "client", "server", "", add, []int64{2, 3})
	if err != nil {
		return err
	}
	if err := expect(sum, 5); err != nil {
		return err
	}
	text, err := call(ctx, d, server, "server", "client", "", upper, "hello from the server")
	if err != nil {
		return err
	}
	if err := expect(text, "HELLO FROM THE SERVER"); err != nil {
		return err
	}

	say("== a callback while a request is being served")
	text, err = call(ctx, d, client, "client", "server", "", greet, struct{}{})
	if err != nil {
		return err
	}
	if err := expect(text, "Hello, demo-client!"); err != nil {
		return err
	}

	say("== concurrent calls, answered out of order")
	// The server holds each reply until the one before it in reverse
	// order has reached the client, so the order shown is always 3, 2, 1.
	close(d.gate[3])
	d.stepsArrived.Add(3)
	say("client -> server: step [1], step [2] and step [3], at once from three goroutines")
	var (
		wg    sync.WaitGroup
		omu   sync.Mutex
		order []int
		errs  = make(chan error, 3)
	)
	for k := 1; k <= 3; k++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, err := step.Call(ctx, client, k)
			if err != nil {
				errs <- err
			} else {
				say("server -> client: %q", r)
			}
			omu.Lock()
			order = append(order, k)
			omu.Unlock()
			if k > 1 {
				close(d.gate[k-1])
			}
		}()
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return err
	}
	if fmt.Sprint(order) != "[3 2 1]" {
		return fmt.Errorf("steps finished in order %v, want [3 2 1]", order)
	}

	say("== a notification (no reply)")
	note := "the client says hi"
	say("client -> server (notification): %s [%s]", logMethod, note)
	if err := client.NotifyMethod(ctx, logMethod, note); err != nil {
		return err
	}
	got, err := wait(d.notes, "the notification")
	if err != nil {
		return err
	}
	say("server: handled notification %s [%s]", logMethod, got)
	if got != note {
		return fmt.Errorf("notification %q arrived as %q", note, got)
	}

	say("== a remote error")
	_, err = call(ctx, d, client, "client", "server", "", divide, [2]int64{1, 0})
	if err := expectRemote(err, "division_by_zero"); err != nil {
		return err
	}

	say("== a handler panic, recovered and returned as a remote error")
	_, err = call(ctx, d, client, "client", "server", "", explode, struct{}{})
	if err := expectRemote(err, bokbok.CodePanic); err != nil {
		return err
	}
	// The connection is still fine.
	if _, err := call(ctx, d, client, "client", "server", "", add, []int64{40, 2}); err != nil {
		return err
	}

	say("== cancelling a call reaches the remote handler")
	slowCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	slowErr := make(chan error, 1)
	say("client -> server: slow [] (with a 30s deadline)")
	go func() {
		_, err := slow.Call(slowCtx, client, struct{}{})
		slowErr <- err
	}()
	hasDeadline, err := wait(d.slowStarted, `"slow" to start`)
	if err != nil {
		return err
	}
	say("server: slow is running; its context carries the caller's deadline: %v", hasDeadline)
	if !hasDeadline {
		return errors.New("the handler's context has no deadline")
	}
	say("client: cancelling the call")
	cancel()
	err, werr := wait(slowErr, "the cancelled call to return")
	if werr != nil {
		return werr
	}
	say("client: the call returned: %v", err)
	if !errors.Is(err, context.Canceled) {
		return fmt.Errorf("cancelled call returned %v", err)
	}
	herr, werr := wait(d.slowEnded, "the handler to see the cancellation")
	if werr != nil {
		return werr
	}
	say("server: the handler's context ended: %v", herr)
	if !errors.Is(herr, context.Canceled) {
		return fmt.Errorf("the handler's context ended with %v", herr)
	}

	say("== messages that are too large")
	say("client -> server: upper [%d bytes] (the server accepts at most 1024)", 2000)
	_, err = upper.Call(ctx, client, strings.Repeat("x", 2000))
	say("client: refused before sending: %v", err)
	var tooLarge *bokbok.MessageTooLargeError
	if !errors.As(err, &tooLarge) {
		return fmt.Errorf("oversized call returned %v", err)
	}
	say("(the client accepts at most 64 KiB, so the server will not send it a larger reply)")
	_, err = call(ctx, d, client, "client", "server", "", repeat, repeatArgs{"ab", 50000})
	if err := expectRemote(err, bokbok.CodeTooLarge); err != nil {
		return err
	}
	if !errors.Is(err, bokbok.ErrMessageTooLarge) {
		return fmt.Errorf("%v does not match ErrMessageTooLarge", err)
	}

	if err := d.capabilities(ctx, clientNode.Session(client)); err != nil {
		return err
	}

	say("== graceful shutdown")
	finished := make(chan error, 1)
	var finishReply string
	say("client -> server: finish [] (still running when the server shuts down)")
	go func() {
		var err error
		finishReply, err = finish.Call(ctx, client, struct{}{})
		finished <- err
	}()
	if _, err := wait(d.finishStart, `"finish" to start`); err != nil {
		return err
	}
	say("server: Shutdown: no new requests; waiting for the one in flight")
	shutdownCtx, cancelShutdown := context.WithTimeout(ctx, 5*time.Second)
	defer cancelShutdown()
	shutdown := make(chan error, 1)
	go func() { shutdown <- srv.Shutdown(shutdownCtx) }()
	// Once the client has heard of the shutdown, new calls fail at once
	// without being sent. Until then they are still served.
	for {
		_, err := noop.Call(ctx, client, struct{}{})
		if errors.Is(err, bokbok.ErrShutdown) {
			say("client: a new call is refused: %v", err)
			break
		}
		if err != nil {
			return fmt.Errorf("call during shutdown: %v", err)
		}
		time.Sleep(time.Millisecond)
	}
	close(d.finishGo)
	if err, werr := wait(finished, `"finish" to return`); werr != nil {
		return werr
	} else if err != nil {
		return fmt.Errorf("the call in flight failed: %v", err)
	}
	say("server -> client: %q (the call in flight completed)", finishReply)
	if _, err := wait(client.Done(), "the client's connection to close"); err != nil {
		return err
	}
	say("client: connection closed: %v", client.Err())
	if !errors.Is(client.Err(), bokbok.ErrClosed) || !errors.Is(client.Err(), bokbok.ErrShutdown) {
		return fmt.Errorf("the client's connection closed with %v", client.Err())
	}
	if err, werr := wait(shutdown, "Server.Shutdown"); werr != nil {
		return werr
	} else if err != nil {
		return fmt.Errorf("Server.Shutdown: %v", err)
	}
	reason, err := wait(d.closed, "the server's OnClose")
	if err != nil {
		return err
	}
	say("server: OnClose: %v", reason)
	if !errors.Is(reason, bokbok.ErrShutdown) {
		return fmt.Errorf("the server's connection closed with %v", reason)
	}
	serveErr, err := wait(d.served, "Serve to return")
	if err != nil {
		return err
	}
	say("server: stopped; Serve returned: %v", serveErr)
	if !errors.Is(serveErr, bokbok.ErrServerClosed) {
		return fmt.Errorf("Serve returned %v", serveErr)
	}
	return nil
}

// board is the server's actor, bound as "board". Its vat runs it one
// message at a time.
type board struct{ d *demo }

// Subscribe gets a reference to the caller's listener inside the message,
// and calls the listener back: three notes, then "count". It answers with
// the promise for the count, so the caller's promise settles as that one
// does: with the listener's own answer.
func (b *board) Subscribe(l ocap.Ref) *ocap.Promise {
	b.d.say("server: the board got %s, a reference to the client's listener", l)
	b.d.say("server -> client's listener: hear [sunny], hear [windy], hear [rain later], count []")
	for _, news := range []string{"sunny", "windy", "rain later"} {
		l.SendOnly("hear", news)
	}
	return l.Send("count")
}

// Echo answers the reference it is given.
func (b *board) Echo(r ocap.Ref) ocap.Ref { return r }

// listener is the client's actor. The server calls it back; it runs in
// the client's vat.
type listener struct {
	d     *demo
	heard []string
}

func (l *listener) Hear(news string) {
	l.d.say("client: the listener heard %q (running in the client's vat)", news)
	l.heard = append(l.heard, news)
}

func (l *listener) Count() int { return len(l.heard) }

// capabilities passes a reference to a client actor to the server, which
// calls it back across the connection.
func (d *demo) capabilities(ctx context.Context, s *ocap.Session) error {
	d.say("== capabilities: an actor reference passed across and called back")
	if s == nil {
		return errors.New("the client's connection has closed")
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	vat := ocap.NewVat("client")
	defer vat.Close()
	l := vat.Spawn(&listener{d: d})
	d.say("client: spawned %s", l)

	// Both messages go out at once: subscribe is addressed to the answer
	// of fetch, before it exists (promise pipelining).
	d.say("client -> server: fetch [board], then subscribe [a reference to the listener], without waiting")
	boardP := s.Fetch("board")
	r, err := boardP.Send("subscribe", l).Await(ctx)
	if err != nil {
		d.say("server -> client: %s", describe(err))
		return err
	}
	var count int
	if err := r.Decode(&count); err != nil {
		return err
	}
	d.say("server -> client: %d (the listener's own answer to count, passed on by the board)", count)
	if count != 3 {
		return fmt.Errorf("the listener counted %d notes, want 3", count)
	}

	// The server's import of the listener, sent back, arrives as the
	// client's own actor: no proxy of a proxy.
	d.say("client -> server: echo [a reference to the listener]")
	r, err = boardP.Send("echo", l).Await(ctx)
	if err != nil {
		d.say("server -> client: %s", describe(err))
		return err
	}
	back, err := r.Ref()
	if err != nil {
		return err
	}
	d.say("server -> client: %s, the listener itself and not a proxy (== the client's reference: %v)", back, back == l)
	if back != l {
		return errors.New("the listener came back as another reference")
	}
	return nil
}
