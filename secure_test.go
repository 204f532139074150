package bokbok

import (
	"bytes"
	"context"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// secureServer returns a Server whose users are the given keys.
func secureServer(users map[string]Key, cfg Config) *Server {
	cfg.Handler = echoHandler
	return &Server{Config: cfg, UserKey: func(user string) (Key, bool) {
		k, ok := users[user]
		return k, ok
	}}
}

func mustKey(t testing.TB) Key {
	k, err := GenerateKey()
	require.NoError(t, err)
	return k
}

func TestSecureDowngradeRefused(t *testing.T) {
	alice := mustKey(t)
	t.Run("secure client, insecure server", func(t *testing.T) {
		srv := &Server{}
		ln, err := Listen("127.0.0.1:0")
		require.NoError(t, err)
		go srv.Serve(ln)
		defer func() { srv.Close(); srv.Wait() }()
		_, err = Dial(context.Background(), ln.Addr().String(), &Config{Key: &alice, User: "alice"})
		require.ErrorIs(t, err, ErrMode)
	})
	t.Run("insecure client, secure server", func(t *testing.T) {
		srv := secureServer(map[string]Key{"alice": alice}, Config{})
		ln, err := Listen("127.0.0.1:0")
		require.NoError(t, err)
		go srv.Serve(ln)
		defer func() { srv.Close(); srv.Wait() }()
		_, err = Dial(context.Background(), ln.Addr().String(), nil)
		require.ErrorIs(t, err, ErrMode)
	})
}

// TestKeyStaysOutOfLogs: however a Key is printed or logged, only its text
// form via MarshalText reveals it.
func TestKeyStaysOutOfLogs(t *testing.T) {
	k := mustKey(t)
	text, err := k.MarshalText()
	require.NoError(t, err)
	hexed := hex.EncodeToString(k[:])
	var logs bytes.Buffer
	slog.New(slog.NewTextHandler(&logs, nil)).Info("cfg", "key", k, "ptr", &k)
	slog.New(slog.NewJSONHandler(&logs, nil)).Info("cfg", "key", k, "cfg", Config{Key: &k})
	outs := []string{
		fmt.Sprint(k), fmt.Sprintf("%v %s %x %X %d %#v %+v", k, k, k, k, k, k, k),
		fmt.Sprintf("%v", &k), fmt.Sprintf("%+v", Config{Key: &k}), logs.String(),
	}
	for _, out := range outs {
		require.NotContains(t, out, string(text))
		require.NotContains(t, out, hexed)
		require.NotContains(t, out, fmt.Sprint(k[0], " ", k[1], " ", k[2]))
	}
	back, err := ParseKey(string(text))
	require.NoError(t, err)
	require.True(t, back.Equal(k))
}

func TestParseKeyRejects(t *testing.T) {
	for _, in := range []string{"", "abc", " " + strings.Repeat("A", 43), strings.Repeat("A", 43) + "!", strings.Repeat("A", 42) + "==", strings.Repeat("A", 45)} {
		_, err := ParseKey(in)
		require.Error(t, err, "%q", in)
		require.Contains(t, err.Error(), "bokbok: bad key")
	}
}

// TestServerOnRefused: a server hears about the connections it refused,
// with the reason, and OnOpen never sees them.
func TestServerOnRefused(t *testing.T) {
	alice, other := mustKey(t), mustKey(t)
	refused := make(chan error, 2)
	srv := secureServer(map[string]Key{"alice": alice}, Config{})
	srv.OnRefused = func(remote net.Addr, err error) { refused <- err }
	srv.OnOpen = func(*Conn) error { t.Error("OnOpen ran for a refused client"); return nil }
	ln, err := Listen("127.0.0.1:0")
	require.NoError(t, err)
	go srv.Serve(ln)
	defer func() { srv.Close(); srv.Wait() }()

	_, err = Dial(testCtx(t), ln.Addr().String(), &Config{Key: &other, User: "alice"})
	require.ErrorIs(t, err, ErrAuth)
	require.ErrorIs(t, <-refused, ErrAuth)
	_, err = Dial(testCtx(t), ln.Addr().String(), nil)
	require.ErrorIs(t, err, ErrMode)
	require.ErrorIs(t, <-refused, ErrMode)
}
