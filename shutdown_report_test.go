package bokbok

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// What a graceful shutdown reports, and how handlers learn that one has
// begun.

// cutHandler blocks until its connection is cut (its context ends) and
// reports each start.
type cutHandler struct{ started chan struct{} }

func newCutHandler() *cutHandler { return &cutHandler{started: make(chan struct{}, 16)} }

func (h *cutHandler) ServeBokbok(ctx context.Context, req *Request) (any, error) {
	if req.IsNotification() {
		return nil, nil
	}
	h.started <- struct{}{}
	<-ctx.Done()
	return nil, ctx.Err()
}

// requireUnfinished checks that err is a *ShutdownError with the given
// counts whose cause matches cause.
func requireUnfinished(t *testing.T, err error, outgoing, incoming int, cause error) {
	t.Helper()
	require.ErrorIs(t, err, ErrUnfinished)
	require.ErrorIs(t, err, cause)
	var se *ShutdownError
	require.True(t, errors.As(err, &se), "%v is a *ShutdownError", err)
	assert.Equal(t, outgoing, se.Outgoing, "outgoing")
	assert.Equal(t, incoming, se.Incoming, "incoming")
}

func TestShutdownReportsWorkCutOff(t *testing.T) {
	t.Run("the context ends first", func(t *testing.T) {
		ctx := testCtx(t)
		h := newCutHandler()
		srv := &Server{Config: Config{Handler: h}}
		clients, _, _, _ := specServe(t, srv, 1, func() *Config { return &Config{} })
		errc := make(chan error, 1)
		go func() { _, err := clients[0].Request(ctx, "wait"); errc <- err }()
		specAwait(t, ctx, h.started, "the handler to start")

		short, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
		defer cancel()
		requireUnfinished(t, srv.Shutdown(short), 0, 1, context.DeadlineExceeded)
		require.ErrorIs(t, specAwait(t, ctx, errc, "the call"), ErrClosed)
	})
	t.Run("the peer cuts the connection", func(t *testing.T) {
		ctx := testCtx(t)
		h := newCutHandler()
		srv := &Server{Config: Config{Handler: h}}
		clients, _, _, _ := specServe(t, srv, 1, func() *Config { return &Config{} })
		go clients[0].Request(ctx, "wait")
		specAwait(t, ctx, h.started, "the handler to start")

		shut := make(chan error, 1)
		go func() { shut <- srv.Shutdown(ctx) }()
		specAwait(t, ctx, clients[0].Draining(), "the client to learn of the shutdown")
		clients[0].Close()
		err := specAwait(t, ctx, shut, "Shutdown")
		requireUnfinished(t, err, 0, 1, ErrClosed)
		require.NotErrorIs(t, err, context.DeadlineExceeded)
	})
	t.Run("this side's call is cut", func(t *testing.T) {
		ctx := testCtx(t)
		h := newCutHandler()
		client, server := pipePair(t, &Config{}, &Config{Handler: h})
		go client.Request(ctx, "wait")
		specAwait(t, ctx, h.started, "the handler to start")
		shut := make(chan error, 1)
		go func() { shut <- client.Shutdown(ctx) }()
		specAwait(t, ctx, server.Draining(), "the server to learn of the shutdown")
		server.Close()
		requireUnfinished(t, specAwait(t, ctx, shut, "Shutdown"), 1, 0, ErrClosed)
	})
	t.Run("nothing in flight", func(t *testing.T) {
		ctx := testCtx(t)
		client, server := pipePair(t, &Config{}, &Config{Handler: newCutHandler()})
		require.NoError(t, client.Shutdown(ctx))
		specAwait(t, ctx, server.Done(), "the peer to close")
		require.NoError(t, server.Shutdown(ctx), "already closed")
	})
}

// longPoll waits for an event that never comes, but answers early once a
// graceful shutdown has begun, as a long poll or watch should.
type longPoll struct{ started chan struct{} }

func (h longPoll) ServeBokbok(ctx context.Context, req *Request) (any, error) {
	h.started <- struct{}{}
	select {
	case <-req.Conn().Draining():
		return "no news", nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func TestDrainingEndsLongPollsFromEitherSide(t *testing.T) {
	for _, side := range []string{"this side shuts down", "the peer shuts down"} {
		t.Run(side, func(t *testing.T) {
			ctx := testCtx(t)
			h := longPoll{started: make(chan struct{}, 1)}
			client, server := pipePair(t, &Config{}, &Config{Handler: h})
			select {
			case <-server.Draining():
				t.Fatal("Draining is closed before any shutdown")
			default:
			}
			reply := make(chan string, 1)
			go func() {
				var s string
				if err := client.Call(ctx, "poll", &s); err != nil {
					s = err.Error()
				}
				reply <- s
			}()
			specAwait(t, ctx, h.started, "the poll to start")
			shutting := server
			if side == "the peer shuts down" {
				shutting = client
			}
			require.NoError(t, shutting.Shutdown(ctx), "the poll ends early, so the drain finishes")
			require.Equal(t, "no news", specAwait(t, ctx, reply, "the poll's answer"))
		})
	}
}

func TestDrainingClosesWhenTheConnectionCloses(t *testing.T) {
	ctx := testCtx(t)
	client, _ := pipePair(t, &Config{}, &Config{})
	client.Close()
	specAwait(t, ctx, client.Draining(), "Draining to close")
}
