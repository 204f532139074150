package bokbok

// The contract at a glance: the headline promises of bokbok, the ideas of
// the original Chicken Scheme egg, each proved by one or two tests below.
//
//   - Either side calls the other (TestBidirectionalCalls).
//   - Many calls at once on one connection, answered out of order, each
//     reply reaching its own caller (TestThousandsOfConcurrentRequestsOnOneConnection).
//   - A handler's error reaches the caller as a *RemoteError with a code
//     and a message, found with errors.As (TestHandlerErrorsComeBackAsRemoteErrors).
//   - user->key: a Server's UserKey callback authenticates users, and a
//     wrong key or an unknown user is refused (TestSecureRoundTrip,
//     TestSecureRefusals).
//   - passphrase->key: PassphraseToKey is the deterministic derivation
//     PROTOCOL.md specifies, so every implementation derives the same key
//     (TestPassphraseToKeyFollowsTheSpec).
//
// The detail lives in the other test files: the shared helpers (specSide,
// specTransports, specSlowEcho, secureServer, ...) are in conn_test.go,
// secure_test.go and helpers_test.go.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/crypto/argon2"
	"golang.org/x/crypto/blake2b"
)

func TestBidirectionalCalls(t *testing.T) {
	for _, tr := range specTransports {
		t.Run(tr.name, func(t *testing.T) {
			ctx := testCtx(t)
			client, server := tr.open(t,
				&Config{Handler: specSide("client")},
				&Config{Handler: specSide("server")})

			var r specReply
			require.NoError(t, client.Call(ctx, specMsg{Op: "double", N: 21}, &r),
				"the dialling side calls the accepting side")
			assert.Equal(t, specReply{Side: "server", N: 42}, r)

			require.NoError(t, server.Call(ctx, specMsg{Op: "double", N: 5}, &r),
				"the accepting side calls the dialling side on the same connection")
			assert.Equal(t, specReply{Side: "client", N: 10}, r)

			require.NoError(t, client.Call(ctx, specMsg{Op: "ask-back", N: 3}, &r),
				"a handler calls back into the side that is waiting for it")
			assert.Equal(t, specReply{Side: "server<-client", N: 7}, r)
			require.NoError(t, server.Call(ctx, specMsg{Op: "ask-back", N: 4}, &r))
			assert.Equal(t, specReply{Side: "client<-server", N: 9}, r)

			// Both directions at once, interleaved on the one connection.
			var wg sync.WaitGroup
			for i := range 100 {
				wg.Go(func() {
					var r specReply
					if assert.NoError(t, client.Call(ctx, specMsg{Op: "double", N: i}, &r)) {
						assert.Equal(t, specReply{Side: "server", N: 2 * i}, r)
					}
				})
				wg.Go(func() {
					var r specReply
					if assert.NoError(t, server.Call(ctx, specMsg{Op: "ask-back", N: i}, &r)) {
						assert.Equal(t, specReply{Side: "client<-server", N: 2*i + 1}, r)
					}
				})
			}
			wg.Wait()
			assert.NoError(t, client.Err())
			assert.NoError(t, server.Err())
		})
	}
}

func TestThousandsOfConcurrentRequestsOnOneConnection(t *testing.T) {
	const (
		forward = 1200 // client -> server, all at once
		reverse = 300  // server -> client, at the same time
	)
	ctx := testCtx(t)
	client, server := pipePair(t,
		&Config{Handler: HandlerFunc(specSlowEcho)},
		&Config{Handler: HandlerFunc(specSlowEcho)})

	start := make(chan struct{})
	var ok atomic.Int64
	var wg sync.WaitGroup
	call := func(c *Conn, id int) {
		<-start
		data := make([]byte, rand.IntN(2000))
		for i := range data {
			data[i] = byte(rand.IntN(256))
		}
		var got specEcho
		if !assert.NoError(t, c.Call(ctx, specEcho{ID: id, Data: data}, &got), "request %d", id) {
			return
		}
		if assert.Equal(t, id, got.ID, "reply matched to the wrong request") &&
			assert.True(t, bytes.Equal(specReversed(data), got.Data), "reply %d carries another request's data", id) {
			ok.Add(1)
		}
	}
	for id := range forward {
		wg.Go(func() { call(client, id) })
	}
	for id := range reverse {
		wg.Go(func() { call(server, forward+id) })
	}
	close(start)
	wg.Wait()
	assert.EqualValues(t, forward+reverse, ok.Load())
	assert.NoError(t, client.Err())
}

func TestHandlerErrorsComeBackAsRemoteErrors(t *testing.T) {
	cases := []struct {
		name     string
		handler  Handler // nil: the peer has no handler
		wantCode string
		wantMsg  string // a substring of Message
		is       error  // a sentinel the error must match, if any
	}{
		{
			name: "plain error",
			handler: HandlerFunc(func(context.Context, *Request) (any, error) {
				return nil, errors.New("boom")
			}),
			wantCode: "",
			wantMsg:  "boom",
		},
		{
			name: "Errorf keeps its code",
			handler: HandlerFunc(func(context.Context, *Request) (any, error) {
				return nil, Errorf("my.code", "bad thing %d", 7)
			}),
			wantCode: "my.code",
			wantMsg:  "bad thing 7",
		},
		{
			name: "wrapped Errorf keeps its code",
			handler: HandlerFunc(func(context.Context, *Request) (any, error) {
				return nil, fmt.Errorf("loading: %w", Errorf("app.not_found", "no such key"))
			}),
			wantCode: "app.not_found",
			wantMsg:  "no such key",
		},
		{
			name: "handler panics",
			handler: HandlerFunc(func(context.Context, *Request) (any, error) {
				panic("kaboom")
			}),
			wantCode: CodePanic,
			wantMsg:  "kaboom",
		},
		{
			name:     "no handler",
			handler:  nil,
			wantCode: CodeNoHandler,
		},
		{
			name: "reply that cannot be encoded",
			handler: HandlerFunc(func(context.Context, *Request) (any, error) {
				return make(chan int), nil
			}),
			wantCode: "",
			wantMsg:  "encoding the reply",
		},
		{
			name: "handler refuses with the busy code",
			handler: HandlerFunc(func(context.Context, *Request) (any, error) {
				return nil, Errorf(CodeBusy, "come back later")
			}),
			wantCode: CodeBusy,
			wantMsg:  "come back later",
			is:       ErrBusy,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ctx := testCtx(t)
			client, _ := pipePair(t, &Config{}, &Config{Handler: tc.handler})
			for range 3 { // and the connection keeps working afterwards
				err := client.Call(ctx, "hello", nil)
				var re *RemoteError
				require.ErrorAs(t, err, &re)
				assert.Equal(t, tc.wantCode, re.Code)
				assert.Contains(t, re.Message, tc.wantMsg)
				if tc.is != nil {
					assert.ErrorIs(t, err, tc.is)
				} else {
					assert.NotErrorIs(t, err, ErrBusy)
				}
				assert.NotErrorIs(t, err, ErrClosed)
				assert.NotErrorIs(t, err, ErrMessageTooLarge)
			}
			_, err := client.Ping(ctx)
			require.NoError(t, err)
			require.NoError(t, client.Err())
		})
	}
}

func TestSecureRoundTrip(t *testing.T) {
	alice := mustKey(t)
	srv := secureServer(map[string]Key{"alice": alice}, Config{Realm: "test"})
	c, s := tcpPair(t, &Config{Key: &alice, User: "alice", Realm: "test", Handler: echoHandler}, srv)
	require.Equal(t, "alice", c.User())
	require.Equal(t, "alice", s.User())
	ctx := testCtx(t)
	var out []byte
	require.NoError(t, c.Call(ctx, []byte("hello"), &out))
	require.Equal(t, "hello", string(out))
	big := make([]byte, 3<<20)
	for i := range big {
		big[i] = byte(i)
	}
	require.NoError(t, s.Call(ctx, big, &out))
	require.Equal(t, big, out)
}

func TestSecureRefusals(t *testing.T) {
	alice, other := mustKey(t), mustKey(t)
	cases := []struct {
		name  string
		user  string
		key   Key
		realm string
	}{
		{"wrong key", "alice", other, "test"},
		{"unknown user", "mallory", alice, "test"},
		{"wrong realm", "alice", alice, "elsewhere"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srv := secureServer(map[string]Key{"alice": alice}, Config{Realm: "test"})
			ln, err := Listen("127.0.0.1:0")
			require.NoError(t, err)
			go srv.Serve(ln)
			defer func() { srv.Close(); srv.Wait() }()
			_, err = Dial(context.Background(), ln.Addr().String(), &Config{Key: &tc.key, User: tc.user, Realm: tc.realm})
			require.ErrorIs(t, err, ErrAuth)
		})
	}
}

// TestPassphraseToKeyFollowsTheSpec derives a key by PROTOCOL.md's formula
// (section 17), step by step, and compares it with PassphraseToKey; the
// golden bytes in PROTOCOL.md pin the result itself.
func TestPassphraseToKeyFollowsTheSpec(t *testing.T) {
	realm, user, pass := "example.org", "alice", "correct horse battery staple"
	var in []byte
	in = append(in, "bokbok passphrase v1\x00"...)
	in = append(in, 0, 0, 0, byte(len(realm)))
	in = append(in, realm...)
	in = append(in, 0, 0, 0, byte(len(user)))
	in = append(in, user...)
	salt := blake2b.Sum256(in)
	want := argon2.IDKey([]byte(pass), salt[:], 3, 64*1024, 4, 32)
	got := PassphraseToKey(pass, realm, user)
	require.Equal(t, want, got[:])
	require.NotEqual(t, got, PassphraseToKey(pass, realm, "bob"), "another user, another key")
	require.NotEqual(t, got, PassphraseToKey(pass, "example.net", user), "another realm, another key")
}
