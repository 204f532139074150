package bokbok

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// rawServer listens on loopback and, for each connection, writes the
// given pieces with a pause between them, then holds the connection open
// until the test ends.
func rawServer(t *testing.T, pieces ...string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	done := make(chan struct{})
	served := make(chan struct{})
	t.Cleanup(func() { close(done); ln.Close(); <-served })
	go func() {
		defer close(served)
		nc, err := ln.Accept()
		if err != nil {
			return
		}
		defer nc.Close()
		for i, p := range pieces {
			if i > 0 {
				time.Sleep(20 * time.Millisecond)
			}
			if _, err := nc.Write([]byte(p)); err != nil {
				return
			}
		}
		<-done
	}()
	return ln.Addr().String()
}

// TestDialFailsAtTheFirstWrongByte: a peer that is not speaking bokbok is
// found out as soon as its bytes cannot start a preamble, while it keeps
// the connection open, long before the handshake timeout.
func TestDialFailsAtTheFirstWrongByte(t *testing.T) {
	cases := []struct {
		name   string
		pieces []string
		first  string // the bytes the error quotes
	}{
		{name: "an SSH banner", pieces: []string{"SSH-2.0-OpenSSH_9.6\r\n"}, first: "53 53 48"},
		{name: "an HTTP answer", pieces: []string{"HTTP/1.1 400 Bad Request\r\n"}, first: "48 54 54 50"},
		{name: "a short banner", pieces: []string{"+OK\r\n"}, first: "2b 4f 4b 0d 0a"},
		{name: "a right start, then a wrong byte", pieces: []string{"bo", "kX"}, first: "62 6f 6b 58"},
		{name: "one wrong byte", pieces: []string{"\x00"}, first: "00"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			addr := rawServer(t, tc.pieces...)
			for _, cfg := range []*Config{{HandshakeTimeout: time.Minute}, {User: "u", Key: &Key{1}, HandshakeTimeout: time.Minute}} {
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				c, err := Dial(ctx, addr, cfg)
				cancel()
				if c != nil {
					c.Close()
				}
				require.ErrorIs(t, err, ErrProtocol)
				assert.NotErrorIs(t, err, ErrHandshakeTimeout)
				assert.NotErrorIs(t, err, context.DeadlineExceeded)
				assert.ErrorContains(t, err, "peer is not speaking bokbok (first bytes "+tc.first)
				addr = rawServer(t, tc.pieces...) // a fresh peer for the secure dial
			}
		})
	}
}

// TestDialSilentPeer: a server that sends nothing (here an HTTP server,
// which waits for a request line) can only be found out by the handshake
// timeout; the error says that nothing came, or how much of a preamble.
func TestDialSilentPeer(t *testing.T) {
	httpSrv := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	defer httpSrv.Close()
	cases := []struct {
		name string
		addr string
		want string
	}{
		{name: "nothing", addr: strings.TrimPrefix(httpSrv.URL, "http://"), want: "the peer sent nothing"},
		{name: "part of a preamble", addr: rawServer(t, "bok"), want: "the peer sent 3 of the 8 bytes of its preamble"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Dial(testCtx(t), tc.addr, &Config{HandshakeTimeout: 200 * time.Millisecond})
			if c != nil {
				c.Close()
			}
			require.ErrorIs(t, err, ErrHandshakeTimeout)
			assert.ErrorContains(t, err, tc.want)
		})
	}
}

// TestServerRefusesHTTPAtOnce: a bokbok server given an HTTP request
// closes the connection at once, not after its handshake timeout, and
// reports it as a protocol error.
func TestServerRefusesHTTPAtOnce(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	refused := make(chan error, 1)
	srv := &Server{Config: Config{HandshakeTimeout: time.Minute},
		OnRefused: func(_ net.Addr, err error) { refused <- err }}
	go srv.Serve(ln)
	defer srv.Close()

	nc, err := net.Dial("tcp", ln.Addr().String())
	require.NoError(t, err)
	defer nc.Close()
	_, err = nc.Write([]byte("G")) // one byte is enough
	require.NoError(t, err)
	nc.SetReadDeadline(time.Now().Add(30 * time.Second))
	got, err := io.ReadAll(nc)
	require.NoError(t, err, "the server closes the connection")
	assert.True(t, bytes.HasPrefix(got, appendPreamble(nil, modeInsecure)), "the server's own opening, then the close: % x", got)
	select {
	case err := <-refused:
		require.ErrorIs(t, err, ErrProtocol)
		assert.ErrorContains(t, err, "not speaking bokbok (first bytes 47)")
	case <-time.After(30 * time.Second):
		t.Fatal("OnRefused was not called")
	}
}

// TestReadPreambleReadsNoFurther: the preamble reader stops at the
// preamble's last byte, whatever the reader hands it at once, so what
// follows is left for the frame reader.
func TestReadPreambleReadsNoFurther(t *testing.T) {
	rest := []byte("what follows")
	for _, size := range []int{16, 64, 4096} {
		br := bufio.NewReaderSize(io.MultiReader(bytes.NewReader(append(appendPreamble(nil, modeSecure), rest...))), size)
		require.NoError(t, readPreamble(br, modeSecure))
		got, err := io.ReadAll(br)
		require.NoError(t, err)
		assert.Equal(t, rest, got)
	}
	// One byte at a time: each is checked as it comes.
	r := &byteAtATime{b: []byte("bokXbok\x01\x01")}
	err := readPreamble(r, modeSecure)
	require.ErrorIs(t, err, ErrProtocol)
	assert.Equal(t, 4, r.read, "stopped at the first wrong byte")
	assert.False(t, errors.Is(err, io.ErrUnexpectedEOF))
}

type byteAtATime struct {
	b    []byte
	read int
}

func (r *byteAtATime) Read(p []byte) (int, error) {
	if r.read == len(r.b) {
		return 0, io.EOF
	}
	if len(p) == 0 {
		return 0, nil
	}
	p[0] = r.b[r.read]
	r.read++
	return 1, nil
}
