package bokbok

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Run serves until its context ends, lets a request in flight finish,
// and leaves no socket file behind.
func TestServerRunGraceful(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "run.sock")
	ln, err := Listen(sock)
	require.NoError(t, err)
	started := make(chan struct{})
	srv := &Server{Config: Config{Handler: HandlerFunc(func(ctx context.Context, req *Request) (any, error) {
		close(started)
		time.Sleep(50 * time.Millisecond)
		return "done", nil
	})}}
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	go func() { ran <- srv.Run(ctx, ln, time.Minute) }()

	c, err := Dial(context.Background(), sock, nil)
	require.NoError(t, err)
	defer c.Close()
	reply := make(chan error, 1)
	go func() {
		var s string
		err := c.Call(context.Background(), "x", &s)
		if err == nil && s != "done" {
			err = errors.New("reply " + s)
		}
		reply <- err
	}()
	<-started
	cancel()
	assert.NoError(t, <-reply, "the request in flight finishes")
	assert.NoError(t, <-ran)
	_, err = os.Stat(sock)
	assert.True(t, errors.Is(err, os.ErrNotExist), "the socket file is removed: %v", err)
}

// Run returns the error of a listener that fails, having closed the
// server.
func TestServerRunListenerFails(t *testing.T) {
	ln, err := Listen("127.0.0.1:0")
	require.NoError(t, err)
	ln.Close()
	srv := &Server{}
	err = srv.Run(context.Background(), ln, time.Second)
	require.Error(t, err)
	assert.False(t, errors.Is(err, ErrServerClosed), "%v", err)
}

func TestListenStaleSocket(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "stale.sock")
	// A socket file nobody listens on: what a killed server leaves.
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: sock, Net: "unix"})
	require.NoError(t, err)
	l.SetUnlinkOnClose(false)
	l.Close()

	_, err = Listen(sock)
	require.Error(t, err)
	assert.ErrorIs(t, err, syscall.EADDRINUSE)
	assert.Contains(t, err.Error(), "is stale: no server answers there; remove it")

	// A live server there: Listen says so, and leaves it alone.
	require.NoError(t, os.Remove(sock))
	live, err := Listen(sock)
	require.NoError(t, err)
	defer live.Close()
	_, err = Listen(sock)
	assert.ErrorIs(t, err, syscall.EADDRINUSE)
	assert.Contains(t, err.Error(), "a server is listening on "+sock)
}

func TestListenerAddr(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	ln, err := Listen("./node.sock")
	require.NoError(t, err)
	a, err := ListenerAddr(ln)
	ln.Close()
	require.NoError(t, err)
	assert.Equal(t, Addr{Network: "unix", Address: filepath.Join(dir, "node.sock")}, a)

	ln, err = Listen("127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	a, err = ListenerAddr(ln)
	require.NoError(t, err)
	assert.Equal(t, ln.Addr().String(), a.Address)
	p, err := ParseAddr(a.String())
	require.NoError(t, err)
	assert.Equal(t, a, p, "ParseAddr reads it back")
}

func TestReadKeyFile(t *testing.T) {
	k, err := GenerateKey()
	require.NoError(t, err)
	text, _ := k.MarshalText()
	dir := t.TempDir()
	good := filepath.Join(dir, "good.key")
	require.NoError(t, os.WriteFile(good, append(text, '\n'), 0o600))
	got, err := ReadKeyFile(good)
	require.NoError(t, err)
	assert.True(t, got.Equal(k))

	bad := filepath.Join(dir, "bad.key")
	require.NoError(t, os.WriteFile(bad, []byte("not-a-key-SECRETSECRET\n"), 0o600))
	_, err = ReadKeyFile(bad)
	require.Error(t, err)
	assert.Contains(t, err.Error(), bad)
	assert.NotContains(t, err.Error(), "SECRET", "the error never shows the file's contents")

	_, err = ReadKeyFile(filepath.Join(dir, "missing.key"))
	assert.ErrorIs(t, err, os.ErrNotExist)
}
