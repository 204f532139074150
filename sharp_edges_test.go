package bokbok

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/bokbok-go/bokbok/internal/testutil"
)

// Edges a newcomer hit by following the documentation.

func TestCallRefusesANonPointerBeforeSending(t *testing.T) {
	var ran atomic.Int32
	h := HandlerFunc(func(ctx context.Context, req *Request) (any, error) { ran.Add(1); return 1, nil })
	client, _ := pipePair(t, nil, &Config{Handler: h})
	ctx := testCtx(t)
	var n int
	var nilPtr *int
	for _, out := range []any{n, "x", nilPtr, struct{}{}} {
		err := client.Call(ctx, "x", out)
		require.ErrorIs(t, err, ErrNotPointer, "%T", out)
		require.ErrorIs(t, client.Invoke(ctx, "m", "x", out), ErrNotPointer)
	}
	assert.Zero(t, ran.Load(), "nothing was sent")
	require.NoError(t, client.Call(ctx, "x", &n))
	require.NoError(t, client.Call(ctx, "x", nil))
	assert.Equal(t, 1, n)
}

func TestDialRefusesAUserWithoutAKey(t *testing.T) {
	_, err := Dial(testCtx(t), "127.0.0.1:1", &Config{User: "alice"})
	require.ErrorIs(t, err, ErrUserWithoutKey)
	na, nb := net.Pipe()
	defer nb.Close()
	_, err = NewConn(testCtx(t), na, &Config{User: "alice"})
	require.ErrorIs(t, err, ErrUserWithoutKey)
	_, err = na.Write([]byte{0})
	require.ErrorIs(t, err, io.ErrClosedPipe, "the connection was closed")
}

func TestWrappedRemoteErrorIsSentOnce(t *testing.T) {
	cases := []struct {
		name     string
		err      error
		code     string
		message  string
		callerIs error
	}{
		{"bare", Errorf("kv.not_found", "no key %q", "x"), "kv.not_found", `no key "x"`, nil},
		{"wrapped", fmt.Errorf("lookup: %w", Errorf("kv.not_found", "no key %q", "x")), "kv.not_found", `lookup: no key "x"`, nil},
		{"wrapped twice", fmt.Errorf("get: %w", fmt.Errorf("lookup: %w", Errorf("kv.not_found", "no key"))), "kv.not_found", "get: lookup: no key", nil},
		{"wrapped, no code", fmt.Errorf("lookup: %w", &RemoteError{Message: "gone"}), "", "lookup: gone", nil},
		{"plain", errors.New("disk full"), "", "disk full", nil},
		{"context", fmt.Errorf("waiting: %w", context.DeadlineExceeded), CodeDeadline, "waiting: context deadline exceeded", context.DeadlineExceeded},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := HandlerFunc(func(ctx context.Context, req *Request) (any, error) { return nil, tc.err })
			client, _ := pipePair(t, nil, &Config{Handler: h})
			err := client.Call(testCtx(t), "x", nil)
			var re *RemoteError
			require.ErrorAs(t, err, &re)
			assert.Equal(t, tc.code, re.Code)
			assert.Equal(t, tc.message, re.Message)
			if tc.callerIs != nil {
				assert.ErrorIs(t, err, tc.callerIs)
			}
		})
	}
}

// TestSecureClientExitingWithoutCloseIsNoWarning: a secure client whose
// process ends without Close cuts its stream between records. The server
// logs that at debug level, not as a warning; a stream cut inside a
// record still warns.
func TestSecureClientExitingWithoutCloseIsNoWarning(t *testing.T) {
	cases := []struct {
		name string
		cut  func(nc net.Conn) // what the client's side does to its socket
		warn bool
	}{
		{"between records", func(nc net.Conn) { nc.Close() }, false},
		{"inside a record", func(nc net.Conn) { nc.Write([]byte{0, 0, 0, 40, 1, 2}); nc.Close() }, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var log testutil.SyncBuffer
			key := mustKey(t)
			closed := make(chan error, 1)
			srv := &Server{
				Config: Config{Handler: decodingEcho,
					Logger:  slog.New(slog.NewTextHandler(&log, &slog.HandlerOptions{Level: slog.LevelDebug})),
					OnClose: func(c *Conn, reason error) { closed <- reason }},
				UserKey: func(string) (Key, bool) { return key, true },
			}
			addr := hostileServer(t, srv)
			c, err := Dial(testCtx(t), addr, &Config{Key: &key, User: "alice"})
			require.NoError(t, err)
			require.NoError(t, c.Call(testCtx(t), 1, nil))
			tc.cut(c.nc)
			reason := <-closed
			require.ErrorIs(t, reason, ErrTruncated)
			assert.Equal(t, tc.warn, strings.Contains(log.String(), "level=WARN"), "server log:\n%s", log.String())
		})
	}
}
