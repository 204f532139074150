package bokbok

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
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
