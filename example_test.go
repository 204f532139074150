package bokbok_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/bokbok-go/bokbok"
)

// A server that adds numbers, and a client that asks it to.
func Example() {
	ctx := context.Background()

	srv := &bokbok.Server{Config: bokbok.Config{
		Handler: bokbok.HandlerFunc(func(ctx context.Context, req *bokbok.Request) (any, error) {
			var nums []int
			if err := req.Decode(&nums); err != nil {
				return nil, err
			}
			sum := 0
			for _, n := range nums {
				sum += n
			}
			return sum, nil
		}),
	}}
	ln, err := bokbok.Listen("127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()

	conn, err := bokbok.Dial(ctx, ln.Addr().String(), nil)
	if err != nil {
		panic(err)
	}
	var sum int
	if err := conn.Call(ctx, []int{1, 2, 3}, &sum); err != nil {
		panic(err)
	}
	fmt.Println("sum:", sum)

	conn.Shutdown(ctx) // waits for calls in flight both ways, then closes
	srv.Shutdown(ctx)
	fmt.Println(<-served)
	// Output:
	// sum: 6
	// bokbok: server closed
}

// Dial opens a connection; Request sends a message and waits for the
// reply, which Decode unpacks. Decoded into an any, a MessagePack map is a
// map[string]any and an integer an int64.
func ExampleDial() {
	ctx := context.Background()
	srv := &bokbok.Server{Config: bokbok.Config{
		Handler: bokbok.HandlerFunc(func(ctx context.Context, req *bokbok.Request) (any, error) {
			var name string
			if err := req.Decode(&name); err != nil {
				return nil, err
			}
			return map[string]any{"greeting": "hello, " + name, "length": len(name)}, nil
		}),
	}}
	ln, err := bokbok.Listen("127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	go srv.Serve(ln)
	defer srv.Shutdown(ctx)

	// A nil Config: an insecure connection, all defaults, and no Handler
	// (this side serves no requests).
	conn, err := bokbok.Dial(ctx, ln.Addr().String(), nil)
	if err != nil {
		panic(err)
	}
	defer conn.Close()

	resp, err := conn.Request(ctx, "gopher")
	if err != nil {
		panic(err)
	}
	var reply map[string]any
	if err := resp.Decode(&reply); err != nil {
		panic(err)
	}
	fmt.Println(reply)
	fmt.Printf("%T\n", reply["length"])
	// Output:
	// map[greeting:hello, gopher length:6]
	// int64
}

// Calls with typed messages: structs travel as MessagePack maps keyed by
// their field names (or `msgpack` tags).
func ExampleConn_Call() {
	type Order struct {
		Item     string `msgpack:"item"`
		Quantity int    `msgpack:"quantity"`
	}
	type Receipt struct {
		Total  int    `msgpack:"total"`
		Status string `msgpack:"status"`
	}

	ctx := context.Background()
	srv := &bokbok.Server{Config: bokbok.Config{
		Handler: bokbok.HandlerFunc(func(ctx context.Context, req *bokbok.Request) (any, error) {
			var o Order
			if err := req.Decode(&o); err != nil {
				return nil, err
			}
			return Receipt{Total: 3 * o.Quantity, Status: "ordered " + o.Item}, nil
		}),
	}}
	ln, err := bokbok.Listen("127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	go srv.Serve(ln)
	defer srv.Shutdown(ctx)

	conn, err := bokbok.Dial(ctx, ln.Addr().String(), nil)
	if err != nil {
		panic(err)
	}
	defer conn.Close()

	var r Receipt
	if err := conn.Call(ctx, Order{Item: "pencils", Quantity: 4}, &r); err != nil {
		panic(err)
	}
	fmt.Printf("%+v\n", r)
	// Output:
	// {Total:12 Status:ordered pencils}
}

// A notification gets no reply. Notifications from one sender are handled
// in the order they were sent, one at a time.
func ExampleConn_Notify() {
	ctx := context.Background()
	got := make(chan string, 3)
	srv := &bokbok.Server{Config: bokbok.Config{
		Handler: bokbok.HandlerFunc(func(ctx context.Context, req *bokbok.Request) (any, error) {
			var s string
			if err := req.Decode(&s); err != nil {
				return nil, err // for a notification, only logged
			}
			if req.IsNotification() {
				got <- s
			}
			return nil, nil
		}),
	}}
	ln, err := bokbok.Listen("127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	go srv.Serve(ln)
	defer srv.Shutdown(ctx)

	conn, err := bokbok.Dial(ctx, ln.Addr().String(), nil)
	if err != nil {
		panic(err)
	}
	defer conn.Close()

	for _, s := range []string{"one", "two", "three"} {
		if err := conn.Notify(ctx, s); err != nil {
			panic(err)
		}
	}
	for range 3 {
		fmt.Println("handled:", <-got)
	}
	// Output:
	// handled: one
	// handled: two
	// handled: three
}

// Cancelling a call's context cancels the context of the handler serving
// it on the peer.
func ExampleConn_Request_cancel() {
	ctx := context.Background()
	started := make(chan struct{})
	stopped := make(chan error, 1)
	srv := &bokbok.Server{Config: bokbok.Config{
		Handler: bokbok.HandlerFunc(func(ctx context.Context, req *bokbok.Request) (any, error) {
			close(started)
			<-ctx.Done() // a long job that watches its context
			stopped <- ctx.Err()
			return nil, ctx.Err()
		}),
	}}
	ln, err := bokbok.Listen("127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	go srv.Serve(ln)
	defer srv.Shutdown(ctx)

	conn, err := bokbok.Dial(ctx, ln.Addr().String(), nil)
	if err != nil {
		panic(err)
	}
	defer conn.Close()

	callCtx, cancel := context.WithCancel(ctx)
	go func() {
		<-started
		cancel()
	}()
	_, err = conn.Request(callCtx, "a long job")
	fmt.Println("caller:", err)
	fmt.Println("handler:", <-stopped)
	// Output:
	// caller: context canceled
	// handler: context canceled
}

// A server whose OnOpen calls the new client back before serving it. The
// server's Handler can do the same during a request, through req.Conn().
func ExampleServer() {
	ctx := context.Background()
	srv := &bokbok.Server{
		Config: bokbok.Config{
			Handler: bokbok.HandlerFunc(func(ctx context.Context, req *bokbok.Request) (any, error) {
				var name string
				if err := req.Conn().Call(ctx, "name?", &name); err != nil {
					return nil, err
				}
				return "hello, " + name, nil
			}),
		},
		OnOpen: func(c *bokbok.Conn) error {
			var version string
			if err := c.Call(context.Background(), "version?", &version); err != nil {
				return err // refuses the connection
			}
			fmt.Println("server: client runs version", version)
			return nil
		},
	}
	ln, err := bokbok.Listen("127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()

	// The client serves the server's requests with its own Handler.
	client := bokbok.HandlerFunc(func(ctx context.Context, req *bokbok.Request) (any, error) {
		var q string
		if err := req.Decode(&q); err != nil {
			return nil, err
		}
		switch q {
		case "version?":
			return "1.0", nil
		case "name?":
			return "gopher", nil
		}
		return nil, bokbok.Errorf("unknown", "no answer to %q", q)
	})
	conn, err := bokbok.Dial(ctx, ln.Addr().String(), &bokbok.Config{Handler: client})
	if err != nil {
		panic(err)
	}
	var greeting string
	if err := conn.Call(ctx, "greet me", &greeting); err != nil {
		panic(err)
	}
	fmt.Println("client:", greeting)

	srv.Shutdown(ctx) // shuts down every connection gracefully
	<-conn.Done()
	fmt.Println("client: closed:", errors.Is(conn.Err(), bokbok.ErrClosed))
	fmt.Println("server:", <-served)
	// Output:
	// server: client runs version 1.0
	// client: hello, gopher
	// client: closed: true
	// server: bokbok: server closed
}

// Errors from the peer's handler arrive as *RemoteError. A handler picks
// the code with Errorf (or by returning a *RemoteError); any other error
// arrives with an empty code and its text as the message.
func ExampleRemoteError() {
	ctx := context.Background()
	srv := &bokbok.Server{Config: bokbok.Config{
		Handler: bokbok.HandlerFunc(func(ctx context.Context, req *bokbok.Request) (any, error) {
			var user string
			if err := req.Decode(&user); err != nil {
				return nil, err
			}
			switch user {
			case "root":
				return nil, errors.New("permission denied")
			case "panic":
				panic("oops")
			}
			return nil, bokbok.Errorf("not_found", "no user %q", user)
		}),
	}}
	ln, err := bokbok.Listen("127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	go srv.Serve(ln)
	defer srv.Shutdown(ctx)

	conn, err := bokbok.Dial(ctx, ln.Addr().String(), nil)
	if err != nil {
		panic(err)
	}
	defer conn.Close()

	for _, user := range []string{"alice", "root", "panic"} {
		err := conn.Call(ctx, user, nil)
		var re *bokbok.RemoteError
		if errors.As(err, &re) {
			fmt.Printf("%s: code %q, message %q\n", user, re.Code, re.Message)
		}
	}
	err = conn.Call(ctx, "alice", nil)
	fmt.Println(err)
	fmt.Println("busy?", errors.Is(err, bokbok.ErrBusy), "closed?", errors.Is(err, bokbok.ErrClosed))
	// Output:
	// alice: code "not_found", message "no user \"alice\""
	// root: code "", message "permission denied"
	// panic: code "bokbok.panic", message "handler panicked: oops"
	// bokbok: remote error [not_found]: no user "alice"
	// busy? false closed? false
}

func ExampleParseAddr() {
	for _, s := range []string{
		"localhost:7000",
		":7000",
		"tcp://[::1]:7000",
		"./bokbok.sock",
		"/run/app.sock",
		"unix:///run/app.sock",
		"bokbok.sock",
		"unix://app.sock",
	} {
		a, err := bokbok.ParseAddr(s)
		if err != nil {
			// The message says why and how to write it instead.
			fmt.Printf("%-20s error: %s\n", s, strings.TrimPrefix(err.Error(), "bokbok: "))
			continue
		}
		fmt.Printf("%-20s %-4s %-15s %s\n", s, a.Network, a.Address, a)
	}
	// Output:
	// localhost:7000       tcp  localhost:7000  tcp://localhost:7000
	// :7000                tcp  :7000           tcp://:7000
	// tcp://[::1]:7000     tcp  [::1]:7000      tcp://[::1]:7000
	// ./bokbok.sock        unix ./bokbok.sock   ./bokbok.sock
	// /run/app.sock        unix /run/app.sock   unix:///run/app.sock
	// unix:///run/app.sock unix /run/app.sock   unix:///run/app.sock
	// bokbok.sock          error: bad address "bokbok.sock": ambiguous: write "./bokbok.sock" for a Unix socket in this directory or "bokbok.sock:PORT" for TCP
	// unix://app.sock      error: bad address "unix://app.sock": unix:// needs an absolute path, as in "unix:///run/app.sock"; write a relative path without the scheme, as in "./app.sock"
}

// A secure server knows a key per user, and looks it up with UserKey. A
// client proves it has its user's key; a wrong key, or a user the server
// does not know, fails with ErrAuth.
func ExampleServer_secure() {
	ctx := context.Background()

	// In real life the key comes from a file (see ExampleGenerateKey), and
	// each user has its own.
	aliceKey, err := bokbok.GenerateKey()
	if err != nil {
		panic(err)
	}
	srv := &bokbok.Server{
		Config: bokbok.Config{
			Realm: "example.com", // clients must use the same realm
			Handler: bokbok.HandlerFunc(func(ctx context.Context, req *bokbok.Request) (any, error) {
				return "hello, " + req.Conn().User(), nil
			}),
		},
		UserKey: func(user string) (bokbok.Key, bool) {
			if user == "alice" {
				return aliceKey, true
			}
			return bokbok.Key{}, false // an unknown user
		},
	}
	ln, err := bokbok.Listen("127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()

	conn, err := bokbok.Dial(ctx, ln.Addr().String(), &bokbok.Config{
		Key:   &aliceKey,
		User:  "alice",
		Realm: "example.com",
	})
	if err != nil {
		panic(err)
	}
	fmt.Println("client: authenticated as", conn.User())
	var greeting string
	if err := conn.Call(ctx, "hi", &greeting); err != nil {
		panic(err)
	}
	fmt.Println("server:", greeting)

	otherKey, err := bokbok.GenerateKey()
	if err != nil {
		panic(err)
	}
	_, err = bokbok.Dial(ctx, ln.Addr().String(), &bokbok.Config{Key: &otherKey, User: "alice", Realm: "example.com"})
	fmt.Println("wrong key:", errors.Is(err, bokbok.ErrAuth))
	_, err = bokbok.Dial(ctx, ln.Addr().String(), &bokbok.Config{Key: &aliceKey, User: "bob", Realm: "example.com"})
	fmt.Println("unknown user:", errors.Is(err, bokbok.ErrAuth))
	_, err = bokbok.Dial(ctx, ln.Addr().String(), nil)
	fmt.Println("insecure client:", errors.Is(err, bokbok.ErrMode))

	conn.Shutdown(ctx)
	srv.Shutdown(ctx)
	fmt.Println(<-served)
	// Output:
	// client: authenticated as alice
	// server: hello, alice
	// wrong key: true
	// unknown user: true
	// insecure client: true
	// bokbok: server closed
}

// A generated key is the best kind. Its text form is what goes into
// configuration files: write it with MarshalText, read it with ParseKey.
func ExampleGenerateKey() {
	key, err := bokbok.GenerateKey()
	if err != nil {
		panic(err)
	}
	text, err := key.MarshalText() // 44 characters of base64; save it in a file
	if err != nil {
		panic(err)
	}

	parsed, err := bokbok.ParseKey(string(text)) // trim a trailing newline first
	if err != nil {
		panic(err)
	}
	fmt.Println("text length:", len(text))
	fmt.Println("round trip:", parsed == key)
	fmt.Println(key) // keys stay out of logs

	_, err = bokbok.ParseKey("not a key")
	fmt.Println(err)
	// Output:
	// text length: 44
	// round trip: true
	// bokbok.Key(redacted)
	// bokbok: bad key: 9 characters, want 44 (standard base64 of 32 bytes, as printed by GenerateKey's MarshalText)
}

// A key derived from a passphrase depends on the realm and the user too,
// so the same passphrase gives each user a different key. Derivation is
// slow on purpose (argon2id over 64 MiB); prefer GenerateKey when no
// person has to type the secret.
func ExamplePassphraseToKey() {
	const passphrase = "correct horse battery staple"
	alice := bokbok.PassphraseToKey(passphrase, "example.com", "alice")
	again := bokbok.PassphraseToKey(passphrase, "example.com", "alice")
	bob := bokbok.PassphraseToKey(passphrase, "example.com", "bob")
	fmt.Println("same passphrase, realm and user, same key:", alice == again)
	fmt.Println("another user, another key:", alice != bob)

	// Both sides derive the same key: the server in its UserKey (or once,
	// ahead of time), the client for its Config.
	cfg := &bokbok.Config{Key: &alice, User: "alice", Realm: "example.com"}
	fmt.Println("client config for", cfg.User)
	// Output:
	// same passphrase, realm and user, same key: true
	// another user, another key: true
	// client config for alice
}

// A long poll that a graceful shutdown ends early: the handler answers as
// soon as its connection starts draining, so Shutdown does not wait for
// its deadline, and returns nil because nothing was cut off.
func ExampleConn_Draining() {
	ctx := context.Background()
	polling := make(chan struct{})
	srv := &bokbok.Server{Config: bokbok.Config{
		Handler: bokbok.HandlerFunc(func(ctx context.Context, req *bokbok.Request) (any, error) {
			close(polling)
			select {
			case <-req.Conn().Draining():
				return "no news: shutting down", nil
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}),
	}}
	ln, err := bokbok.Listen("127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	go srv.Serve(ln)

	conn, err := bokbok.Dial(ctx, ln.Addr().String(), nil)
	if err != nil {
		panic(err)
	}
	answer := make(chan string, 1)
	go func() {
		var s string
		if err := conn.Call(ctx, "poll", &s); err != nil {
			s = err.Error()
		}
		answer <- s
	}()
	<-polling

	shutdownCtx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	fmt.Println("shutdown:", srv.Shutdown(shutdownCtx))
	fmt.Println("poll:", <-answer)
	// Output:
	// shutdown: <nil>
	// poll: no news: shutting down
}
