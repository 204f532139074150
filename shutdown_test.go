package bokbok

import (
	"context"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestCloseFailsEveryPendingCall(t *testing.T) {
	const pending = 50
	cases := []struct {
		name        string
		closeCaller bool
	}{
		{"the caller closes", true},
		{"the peer closes", false},
	}
	for _, tr := range specTransports[:2] {
		for _, tc := range cases {
			t.Run(tr.name+"/"+tc.name, func(t *testing.T) {
				ctx := testCtx(t)
				b := newSpecBlocker(t)
				b.let() // handlers return as soon as their context ends
				clientLog, serverLog := newSpecCloseLog(), newSpecCloseLog()
				client, server := tr.open(t,
					&Config{OnClose: clientLog.onClose},
					&Config{Handler: b, OnClose: serverLog.onClose})

				errs := make(chan error, pending)
				for range pending {
					go func() { errs <- client.Call(ctx, specMsg{Op: "wait"}, nil) }()
				}
				for range pending {
					specAwait(t, ctx, b.started, "the handlers to start")
				}
				require.NoError(t, client.Err(), "Err is nil while the connection is open")
				require.NoError(t, server.Err())
				select {
				case <-client.Done():
					t.Fatal("Done closed on an open connection")
				default:
				}

				closing := client
				if !tc.closeCaller {
					closing = server
				}
				require.NoError(t, closing.Close())

				for range pending {
					err := specAwait(t, ctx, errs, "a pending call to fail")
					assert.ErrorIs(t, err, ErrClosed)
				}
				specAwait(t, ctx, client.Done(), "the caller's Done")
				specAwait(t, ctx, server.Done(), "the peer's Done")
				for range pending {
					assert.ErrorIs(t, specAwait(t, ctx, b.ended, "a handler's context to end"), context.Canceled,
						"the running handlers see their context cancelled")
				}

				for side, l := range map[string]*specCloseLog{"caller": clientLog, "peer": serverLog} {
					reasons := l.wait(t, ctx)
					require.Len(t, reasons, 1, "%s: OnClose runs once", side)
					assert.ErrorIs(t, reasons[0], ErrClosed, "%s: OnClose reason", side)
				}
				assert.ErrorIs(t, client.Err(), ErrClosed)
				assert.ErrorIs(t, server.Err(), ErrClosed)

				// Everything after the close fails with ErrClosed, on both sides.
				for _, c := range []*Conn{client, server} {
					assert.ErrorIs(t, c.Call(ctx, specMsg{Op: "late"}, nil), ErrClosed)
					assert.ErrorIs(t, c.Notify(ctx, "late"), ErrClosed)
					_, err := c.Ping(ctx)
					assert.ErrorIs(t, err, ErrClosed)
				}

				// Closing again does nothing; OnClose still ran only once.
				require.NoError(t, client.Close())
				require.NoError(t, server.Close())
				require.Len(t, clientLog.wait(t, ctx), 1)
				require.Len(t, serverLog.wait(t, ctx), 1)
			})
		}
	}
}

// specWaiter is a handler for the shutdown specs. Requests:
//
//	wait:  reports on started, waits for release, answers {name, 2n}
//	quick: answers {name, n} at once
//
// Notifications report on started, wait for release, then report on noted.
type specWaiter struct {
	name    string
	started chan struct{}
	release chan struct{}
	noted   chan struct{}
	ran     sync.Map // n of every quick request run -> true
}

func newSpecWaiter(name string, release chan struct{}) *specWaiter {
	return &specWaiter{name: name, started: make(chan struct{}, 100), release: release, noted: make(chan struct{}, 100)}
}

func (w *specWaiter) ServeBokbok(ctx context.Context, req *Request) (any, error) {
	if req.IsNotification() {
		w.started <- struct{}{}
		<-w.release
		w.noted <- struct{}{}
		return nil, nil
	}
	var m specMsg
	if err := req.Decode(&m); err != nil {
		return nil, err
	}
	switch m.Op {
	case "wait":
		w.started <- struct{}{}
		select {
		case <-w.release:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		return specReply{Side: w.name, N: 2 * m.N}, nil
	case "quick":
		w.ran.Store(m.N, true)
		return specReply{Side: w.name, N: m.N}, nil
	}
	return nil, errors.New("unknown op")
}

// specWaitRefused makes quick calls on c until one is refused because of a
// graceful shutdown, which it checks is a refusal (the request was never
// sent) and not a failure of the connection.
func specWaitRefused(t *testing.T, ctx context.Context, c *Conn) {
	t.Helper()
	for {
		err := c.Call(ctx, specMsg{Op: "quick"}, nil)
		if err == nil {
			continue // sent before this side knew of the shutdown, and answered
		}
		require.ErrorIs(t, err, ErrShutdown)
		require.NotErrorIs(t, err, ErrClosed, "a new request is refused, not failed")
		// From now on, every new request and notification is refused.
		assert.ErrorIs(t, c.Call(ctx, specMsg{Op: "quick"}, nil), ErrShutdown)
		assert.ErrorIs(t, c.Notify(ctx, "late"), ErrShutdown)
		return
	}
}

// specCallAsync makes a call on its own goroutine; the returned channel
// yields its error, or an error if the reply is not {side, want}.
func specCallAsync(ctx context.Context, c *Conn, msg specMsg, side string, want int) <-chan error {
	errc := make(chan error, 1)
	go func() {
		var r specReply
		err := c.Call(ctx, msg, &r)
		if err == nil && (r != specReply{Side: side, N: want}) {
			err = errors.New("wrong reply")
		}
		errc <- err
	}()
	return errc
}

func TestShutdownLetsWorkInFlightFinish(t *testing.T) {
	const each = 5
	for _, tr := range specTransports[:2] {
		t.Run(tr.name, func(t *testing.T) {
			ctx := testCtx(t)
			release, let := specReleaser(t)
			cw, sw := newSpecWaiter("client", release), newSpecWaiter("server", release)
			clientLog, serverLog := newSpecCloseLog(), newSpecCloseLog()
			client, server := tr.open(t,
				&Config{Handler: cw, OnClose: clientLog.onClose},
				&Config{Handler: sw, OnClose: serverLog.onClose})

			// Requests in flight both ways, and a notification being handled.
			var inFlight []<-chan error
			for i := range each {
				inFlight = append(inFlight,
					specCallAsync(ctx, client, specMsg{Op: "wait", N: i}, "server", 2*i),
					specCallAsync(ctx, server, specMsg{Op: "wait", N: i}, "client", 2*i))
			}
			require.NoError(t, server.Notify(ctx, "note"))
			for range each {
				specAwait(t, ctx, sw.started, "the server's handlers to start")
			}
			for range each + 1 {
				specAwait(t, ctx, cw.started, "the client's handlers to start")
			}

			shutdownCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			shutdown := make(chan error, 1)
			go func() { shutdown <- client.Shutdown(shutdownCtx) }()

			// New requests are refused on both sides.
			specWaitRefused(t, ctx, client)
			specWaitRefused(t, ctx, server)
			select {
			case err := <-shutdown:
				t.Fatalf("Shutdown returned %v while work was in flight", err)
			case <-client.Done():
				t.Fatal("the connection closed while work was in flight")
			default:
			}

			// The work in flight finishes and its replies are delivered.
			let()
			for _, errc := range inFlight {
				assert.NoError(t, specAwait(t, ctx, errc, "a call in flight"))
			}
			specAwait(t, ctx, cw.noted, "the notification to be handled")
			require.NoError(t, specAwait(t, ctx, shutdown, "Shutdown"))

			// Then both ends close, cleanly.
			specAwait(t, ctx, client.Done(), "the client to close")
			specAwait(t, ctx, server.Done(), "the server to close")
			for side, l := range map[string]*specCloseLog{"shutting down": clientLog, "peer": serverLog} {
				reasons := l.wait(t, ctx)
				require.Len(t, reasons, 1)
				assert.ErrorIs(t, reasons[0], ErrClosed, side)
				assert.ErrorIs(t, reasons[0], ErrShutdown, "%s: a graceful close says so", side)
			}
			assert.ErrorIs(t, client.Call(ctx, specMsg{Op: "quick"}, nil), ErrClosed)
			assert.ErrorIs(t, server.Call(ctx, specMsg{Op: "quick"}, nil), ErrClosed)
		})
	}
}

func TestShutdownGivesUpWhenContextEnds(t *testing.T) {
	ctx := testCtx(t)
	b := newSpecBlocker(t)
	b.let()
	client, server := pipePair(t, &Config{}, &Config{Handler: b})
	errc := make(chan error, 1)
	go func() { errc <- client.Call(ctx, specMsg{Op: "wait"}, nil) }()
	specAwait(t, ctx, b.started, "the handler to start")

	short, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	require.ErrorIs(t, client.Shutdown(short), context.DeadlineExceeded,
		"a handler that never finishes holds the shutdown until its context ends")
	specAwait(t, ctx, client.Done(), "the connection to close")
	assert.ErrorIs(t, specAwait(t, ctx, errc, "the pending call"), ErrClosed)
	specAwait(t, ctx, server.Done(), "the peer to close")
	require.NoError(t, client.Shutdown(ctx), "shutting down a closed connection does nothing")
}

func TestShutdownRacingRequestsAreAnsweredOrRefused(t *testing.T) {
	// While one side shuts down, the other keeps sending requests from
	// several goroutines until they are refused. A request that reached
	// the side shutting down must be answered: Shutdown waits for the
	// requests in flight (the peer's GOAWAY promises that every request it
	// sent arrived before it, PROTOCOL.md section 11). A request refused
	// with ErrShutdown was never sent, so it never ran.
	const rounds, senders = 30, 8
	for _, tr := range specTransports[:2] {
		t.Run(tr.name, func(t *testing.T) {
			for round := range rounds {
				ctx := testCtx(t)
				cw := newSpecWaiter("client", nil)
				client, server := tr.open(t, &Config{Handler: cw}, &Config{})

				var next, answered atomic.Int64
				warm := make(chan struct{})
				var once sync.Once
				type failure struct {
					n   int
					err error
				}
				final := make(chan failure, senders)
				for range senders {
					go func() {
						for {
							n := int(next.Add(1))
							var r specReply
							if err := server.Call(ctx, specMsg{Op: "quick", N: n}, &r); err != nil {
								final <- failure{n, err}
								return
							}
							if answered.Add(1) == 100 {
								once.Do(func() { close(warm) })
							}
						}
					}()
				}
				specAwait(t, ctx, warm, "requests to flow")
				require.NoError(t, client.Shutdown(ctx), "round %d", round)
				for range senders {
					f := specAwait(t, ctx, final, "a sender to stop")
					assert.ErrorIs(t, f.err, ErrShutdown, "round %d: request %d", round, f.n)
					_, ran := cw.ran.Load(f.n)
					assert.False(t, ran, "round %d: request %d ran on the peer, but its answer was lost: %v", round, f.n, f.err)
				}
				if t.Failed() {
					return
				}
			}
		})
	}
}

// specSendState reports the state of c's send queue: whether the writer
// holds frames it has not finished writing, and the bytes of control frames
// and number of messages waiting. (White-box.)
func specSendState(c *Conn) (writing bool, ctrlBytes, msgs int) {
	c.sendq.mu.Lock()
	defer c.sendq.mu.Unlock()
	return c.sendq.writing, len(c.sendq.ctrl), len(c.sendq.msgs)
}

func TestShutdownAnswersRequestSentBeforePeersGoAway(t *testing.T) {
	// The client shuts down. The server had already queued a request X
	// when the client's GOAWAY reached it, so X is in flight: the server's
	// GOAWAY in return must follow X on the wire (PROTOCOL.md section 11,
	// step 2), and the client must answer X before it closes.
	//
	// The client's reads go through a gate, so the test decides when each
	// of the server's frames arrives.
	ctx := testCtx(t)
	na, nb := net.Pipe()
	opening := 2*frameHeaderSize + len(settings{
		MaxMessageSize:        DefaultMaxMessageSize,
		NotifyWindow:          DefaultNotifyWindow,
		MaxConcurrentHandlers: DefaultMaxConcurrentHandlers,
		Headers:               headersVersion,
	}.encode()) // the server's preamble and SETTINGS
	gate := newSpecGateConn(na, int64(opening))
	cw := newSpecWaiter("client", nil)
	client, server := openPair(t, gate, nb, &Config{Handler: cw}, &Config{})
	specAwait(t, ctx, gate.starved, "the client to read the opening")

	// 1. The server's writer gets stuck writing a PING the client does not
	//    read yet.
	pinged := make(chan error, 1)
	go func() { _, err := server.Ping(ctx); pinged <- err }()
	require.Eventually(t, func() bool {
		writing, ctrl, msgs := specSendState(server)
		return writing && ctrl == 0 && msgs == 0
	}, 5*time.Second, time.Millisecond, "the server's writer takes the PING")

	// 2. The server sends request X: it waits in the send queue.
	x := specCallAsync(ctx, server, specMsg{Op: "quick", N: 1}, "client", 1)
	require.Eventually(t, func() bool { _, _, msgs := specSendState(server); return msgs == 1 },
		5*time.Second, time.Millisecond, "X is queued")

	// 3. The client shuts down; its GOAWAY reaches the server, which
	//    queues its own GOAWAY in return, after X.
	shutdown := make(chan error, 1)
	go func() { shutdown <- client.Shutdown(ctx) }()
	require.Eventually(t, func() bool {
		_, ctrl, msgs := specSendState(server)
		return specGoAwayRecv(server) && (ctrl > 0 || msgs > 1) // as a control frame or a message
	}, 5*time.Second, time.Millisecond, "the server queues its GOAWAY")

	// 4. The client reads the PING, then one more frame header: X's, as
	//    the stream is ordered - or the GOAWAY, if it overtook X.
	gate.grant(frameHeaderSize)
	require.NoError(t, specAwait(t, ctx, pinged, "the PING's answer"))
	specAwait(t, ctx, gate.starved, "the client to read the PING")
	gate.grant(frameHeaderSize)
	select {
	case <-gate.starved:
	case <-client.Done(): // it took the GOAWAY and closed
	case <-ctx.Done():
		t.Fatal("timed out")
	}
	gate.grant(-1)

	require.NoError(t, specAwait(t, ctx, x, "X"),
		"a request the server sent before it learned of the shutdown was dropped")
	require.NoError(t, specAwait(t, ctx, shutdown, "Shutdown"))
}

// specGoAwayRecv reports whether c has received the peer's GOAWAY.
// (White-box: there is no outside sign of it that sends nothing.)
func specGoAwayRecv(c *Conn) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.goAwayRecv
}

func TestShutdownFinishesWhenPartlyReceivedRequestIsCancelled(t *testing.T) {
	// The server shuts down while a large request from the client is half
	// received; the client then gives up on that request. The server must
	// not wait for the rest of a request that will never come.
	ctx := testCtx(t)
	na, nb := net.Pipe()
	gate := newSpecGateConn(nb, 256<<10)
	client, server := openPair(t, na, gate, &Config{}, &Config{Handler: HandlerFunc(specSizedHandler)})

	callCtx, cancelCall := context.WithCancel(ctx)
	defer cancelCall()
	bigErr := make(chan error, 1)
	go func() { bigErr <- client.Call(callCtx, specSized{Data: make([]byte, 4<<20)}, nil) }()
	specAwait(t, ctx, gate.starved, "the big request to start arriving")

	shutdownCtx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	shutdown := make(chan error, 1)
	go func() { shutdown <- server.Shutdown(shutdownCtx) }()
	require.Eventually(t, func() bool { return specGoAwayRecv(client) }, 5*time.Second, time.Millisecond)
	// Let the server read on until it has the client's GOAWAY in return;
	// the big request is still incomplete.
	for !specGoAwayRecv(server) {
		require.Less(t, gate.bytesRead(), int64(3<<20), "the client's GOAWAY never came")
		gate.grant(4 << 10)
		specAwait(t, ctx, gate.starved, "the server to read")
	}
	time.Sleep(50 * time.Millisecond) // let the server's Shutdown look at its state

	cancelCall()
	require.ErrorIs(t, specAwait(t, ctx, bigErr, "the cancelled call"), context.Canceled)
	gate.grant(-1)
	require.NoError(t, specAwait(t, ctx, shutdown, "Shutdown"),
		"Shutdown waited for a request the client had cancelled")
	specAwait(t, ctx, client.Done(), "the client to close")
}

func TestShutdownFinishesOnceLastNotificationIsHandled(t *testing.T) {
	// The server shuts down while its notification handler is busy; as
	// soon as the handler returns, nothing is left and Shutdown must
	// finish. Many rounds, as the moment that matters is short.
	const rounds = 1000
	for round := range rounds {
		ctx := testCtx(t)
		release, let := specReleaser(t)
		handler := HandlerFunc(func(context.Context, *Request) (any, error) { <-release; return nil, nil })
		client, server := pipePair(t, &Config{}, &Config{Handler: handler})
		require.NoError(t, client.Notify(ctx, "note"))

		shutdownCtx, cancel := context.WithTimeout(ctx, 2*time.Second)
		shutdown := make(chan error, 1)
		go func() { shutdown <- server.Shutdown(shutdownCtx) }()
		for !specGoAwayRecv(server) {
			time.Sleep(100 * time.Microsecond)
		}
		let()
		err := <-shutdown
		cancel()
		require.NoError(t, err, "round %d: Shutdown missed that the last notification was handled", round)
		specAwait(t, ctx, client.Done(), "the client to close")
	}
}

// specServe serves srv on a fresh loopback listener and dials it n times.
// It returns the clients and the server's ends of their connections (in
// no particular order), and the channel Serve's result arrives on.
func specServe(t *testing.T, srv *Server, n int, clientCfg func() *Config) (clients, serverConns []*Conn, addr string, served <-chan error) {
	t.Helper()
	ctx := testCtx(t)
	opened := make(chan *Conn, n)
	srv.OnOpen = func(c *Conn) error { opened <- c; return nil }
	ln, err := Listen("127.0.0.1:0")
	require.NoError(t, err)
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	t.Cleanup(func() { srv.Close(); srv.Wait() })
	for range n {
		c, err := Dial(ctx, ln.Addr().String(), clientCfg())
		require.NoError(t, err)
		t.Cleanup(func() { c.Close() })
		clients = append(clients, c)
		serverConns = append(serverConns, specAwait(t, ctx, opened, "the server to open a connection"))
	}
	return clients, serverConns, ln.Addr().String(), done
}

func TestServerShutdownDrainsConnections(t *testing.T) {
	const conns = 3
	ctx := testCtx(t)
	release, let := specReleaser(t)
	sw := newSpecWaiter("server", release)
	var closes atomic.Int64
	srv := &Server{Config: Config{Handler: sw, OnClose: func(c *Conn, reason error) {
		closes.Add(1)
		assert.ErrorIs(t, reason, ErrShutdown)
	}}}
	var cws []*specWaiter
	clients, serverConns, addr, served := specServe(t, srv, conns, func() *Config {
		cw := newSpecWaiter("client", release)
		cws = append(cws, cw)
		return &Config{Handler: cw}
	})

	var inFlight []<-chan error
	for i := range conns {
		inFlight = append(inFlight,
			specCallAsync(ctx, clients[i], specMsg{Op: "wait", N: i}, "server", 2*i),
			specCallAsync(ctx, serverConns[i], specMsg{Op: "wait", N: i}, "client", 2*i))
	}
	for range conns {
		specAwait(t, ctx, sw.started, "a server handler to start")
	}
	for _, cw := range cws {
		specAwait(t, ctx, cw.started, "a client handler to start")
	}

	shutdown := make(chan error, 1)
	go func() { shutdown <- srv.Shutdown(ctx) }()
	require.ErrorIs(t, specAwait(t, ctx, served, "Serve to return"), ErrServerClosed)
	_, err := Dial(ctx, addr, nil)
	require.Error(t, err, "the server no longer accepts connections")
	for i := range conns {
		specWaitRefused(t, ctx, clients[i])
		specWaitRefused(t, ctx, serverConns[i])
	}
	select {
	case err := <-shutdown:
		t.Fatalf("Server.Shutdown returned %v while work was in flight", err)
	default:
	}

	let()
	for _, errc := range inFlight {
		assert.NoError(t, specAwait(t, ctx, errc, "a call in flight"))
	}
	require.NoError(t, specAwait(t, ctx, shutdown, "Server.Shutdown"))
	waited := make(chan struct{})
	go func() { srv.Wait(); close(waited) }()
	specAwait(t, ctx, waited, "Server.Wait")
	for _, c := range clients {
		specAwait(t, ctx, c.Done(), "a client to close")
		assert.ErrorIs(t, c.Err(), ErrShutdown)
	}
	assert.EqualValues(t, conns, closes.Load(), "OnClose ran once per connection")
}

func TestServerCloseClosesAtOnce(t *testing.T) {
	const conns = 3
	ctx := testCtx(t)
	sb, cb := newSpecBlocker(t), newSpecBlocker(t)
	sb.let()
	cb.let()
	var closes atomic.Int64
	srv := &Server{Config: Config{Handler: sb, OnClose: func(c *Conn, reason error) {
		closes.Add(1)
		assert.ErrorIs(t, reason, ErrClosed)
	}}}
	clients, serverConns, _, served := specServe(t, srv, conns, func() *Config { return &Config{Handler: cb} })

	var inFlight []<-chan error
	for i := range conns {
		inFlight = append(inFlight,
			specCallAsync(ctx, clients[i], specMsg{Op: "wait"}, "", 0),
			specCallAsync(ctx, serverConns[i], specMsg{Op: "wait"}, "", 0))
	}
	for range conns {
		specAwait(t, ctx, sb.started, "a server handler to start")
		specAwait(t, ctx, cb.started, "a client handler to start")
	}

	require.NoError(t, srv.Close())
	for _, errc := range inFlight {
		assert.ErrorIs(t, specAwait(t, ctx, errc, "a call in flight"), ErrClosed)
	}
	require.ErrorIs(t, specAwait(t, ctx, served, "Serve to return"), ErrServerClosed)
	waited := make(chan struct{})
	go func() { srv.Wait(); close(waited) }()
	specAwait(t, ctx, waited, "Server.Wait")
	for _, c := range clients {
		specAwait(t, ctx, c.Done(), "a client to close")
	}
	assert.EqualValues(t, conns, closes.Load(), "OnClose ran once per connection, before Wait returned")
	require.NoError(t, srv.Shutdown(ctx), "shutting down a closed server does nothing")
}
