package bokbok

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Tests with a real second process. The test binary re-executes itself with
// BOKBOK_TEST_CHILD=<mode> and -test.run=^$; TestMain then calls runChild,
// which runs childModes[mode] instead of any test.

var childModes = map[string]func() int{
	// serve-block serves on a loopback TCP port (printed as "ADDR host:port"
	// on stdout) with a handler that notifies its caller "started" and then
	// blocks until its context ends.
	"serve-block": childServeBlocking,
	// decode decodes the hex in BOKBOK_TEST_INPUT into every target of
	// robDecodeAll and prints "decoded".
	"decode": childDecode,
	// deep-error-body makes a call whose answer is an ERROR with a deeply
	// nested body, and prints "call ended: <error>" if it survives.
	"deep-error-body": childDeepErrorBody,
}

// childGuard bounds a helper process: it exits with code 3 once its
// resident memory exceeds maxRSS, with code 4 after maxTime, and with code
// 0 when its stdin closes (the parent is gone).
func childGuard(maxRSS int64, maxTime time.Duration, watchStdin bool) {
	if watchStdin {
		go func() {
			io.Copy(io.Discard, os.Stdin)
			os.Exit(0)
		}()
	}
	time.AfterFunc(maxTime, func() {
		fmt.Fprintf(os.Stderr, "child guard: still running after %v\n", maxTime)
		os.Exit(4)
	})
	page := int64(os.Getpagesize())
	go func() {
		for range time.Tick(2 * time.Millisecond) {
			b, err := os.ReadFile("/proc/self/statm")
			if err != nil {
				return // not Linux: no memory guard
			}
			f := strings.Fields(string(b))
			if len(f) < 2 {
				return
			}
			pages, _ := strconv.ParseInt(f[1], 10, 64)
			if rss := pages * page; rss > maxRSS {
				fmt.Fprintf(os.Stderr, "child guard: resident memory %d MiB exceeds %d MiB\n", rss>>20, maxRSS>>20)
				os.Exit(3)
			}
		}
	}()
}

func childServeBlocking() int {
	childGuard(1<<30, time.Minute, true)
	srv := &Server{Config: Config{Handler: HandlerFunc(func(ctx context.Context, req *Request) (any, error) {
		if err := req.Conn().Notify(ctx, "started"); err != nil {
			return nil, err
		}
		<-ctx.Done()
		return nil, ctx.Err()
	})}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Printf("ADDR %s\n", ln.Addr())
	fmt.Fprintln(os.Stderr, srv.Serve(ln))
	return 1
}

func childDecode() int {
	childGuard(1<<30, 20*time.Second, false)
	raw, err := hex.DecodeString(os.Getenv("BOKBOK_TEST_INPUT"))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	v, err := robDecodeAll(raw)
	fmt.Printf("decoded: %T, %v\n", v, err)
	return 0
}

// robDeepErrorBody is an ERROR body {"x": [[[...nil...]]]} nested depth
// deep: the unknown key's value is skipped by the decoder, recursively.
func robDeepErrorBody(depth int) []byte {
	b := make([]byte, 0, depth+8)
	b = append(b, 0x81, 0xa1, 'x')
	b = append(b, bytes.Repeat([]byte{0x91}, depth)...)
	return append(b, 0xc0)
}

func childDeepErrorBody() int {
	childGuard(3<<30, time.Minute, false)
	na, nb := net.Pipe()
	rp := startRobPeer(nb)
	defer rp.close()
	c, err := robNewConn(na, nb, &Config{KeepaliveInterval: -1}, robSettings)
	if err != nil {
		fmt.Fprintln(os.Stderr, "NewConn:", err)
		return 1
	}
	defer c.Close()
	callErr := make(chan error, 1)
	go func() {
		_, err := c.Request(context.Background(), "anything")
		callErr <- err
	}()
	var req robFrame
	for req.kind != kindRequest {
		select {
		case req = <-rp.frames:
		case <-time.After(10 * time.Second):
			fmt.Fprintln(os.Stderr, "no REQUEST frame")
			return 1
		}
	}
	// 16 Mi levels: a 16 MiB body, within the default MaxMessageSize.
	body := robBody(0, robDeepErrorBody(16<<20))
	binary.BigEndian.PutUint32(body, uint32(len(body)-bodyLenSize))
	var wire []byte
	for len(body) > 0 {
		n := min(len(body), maxFramePayload)
		wire = append(wire, robFrameBytes(kindError, 0, req.id, body[:n])...)
		body = body[n:]
	}
	go nb.Write(wire) // may fail once the Conn closes
	select {
	case err := <-callErr:
		fmt.Printf("call ended: %v\n", err)
		return 0
	case <-time.After(30 * time.Second):
		fmt.Fprintln(os.Stderr, "the call did not end")
		return 1
	}
}

// robLines is an io.Writer for a child's stdout that hands on whole lines.
type robLines struct {
	mu    sync.Mutex
	buf   []byte
	all   bytes.Buffer
	lines chan string
}

func (w *robLines) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.all.Write(p)
	w.buf = append(w.buf, p...)
	for {
		i := bytes.IndexByte(w.buf, '\n')
		if i < 0 {
			return len(p), nil
		}
		select {
		case w.lines <- string(w.buf[:i]):
		default: // nobody is waiting for that many lines
		}
		w.buf = w.buf[i+1:]
	}
}

func (w *robLines) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.all.String()
}

// robChildCmd prepares the test binary as a helper process in mode.
func robChildCmd(mode string, env ...string) *exec.Cmd {
	cmd := exec.Command(os.Args[0], "-test.run=^$", "-test.count=1")
	cmd.Env = append(append(os.Environ(), childEnv+"="+mode), env...)
	// Under -race, a process sleeps 1 s at exit by default.
	cmd.Env = append(cmd.Env, "GORACE="+strings.TrimSpace(os.Getenv("GORACE")+" atexit_sleep_ms=0"))
	return cmd
}

// robRunChild runs a helper process to its end (killing it after timeout)
// and returns its exit code (-1 if killed by a signal) and output.
func robRunChild(t testing.TB, timeout time.Duration, mode string, env ...string) (code int, stdout, stderr string) {
	t.Helper()
	cmd := robChildCmd(mode, env...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	require.NoError(t, cmd.Start())
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(timeout):
		cmd.Process.Kill()
		<-done
		errOut.WriteString(fmt.Sprintf("\n[killed by the test after %v]", timeout))
	}
	return cmd.ProcessState.ExitCode(), out.String(), errOut.String()
}

// robHead returns at most the first n lines of s.
func robHead(s string, n int) string {
	lines := strings.SplitN(s, "\n", n+1)
	if len(lines) > n {
		lines = lines[:n]
	}
	return strings.Join(lines, "\n")
}

// robDecodeInChild decodes raw in a helper process, so that a decoder that
// exhausts memory or the stack kills the helper, not the test binary. It
// returns "" if the helper decoded (successfully or with an error) and
// exited normally, else a description of what happened.
func robDecodeInChild(t testing.TB, raw []byte) string {
	t.Helper()
	code, stdout, stderr := robRunChild(t, 30*time.Second, "decode", "BOKBOK_TEST_INPUT="+hex.EncodeToString(raw))
	if code == 0 && strings.Contains(stdout, "decoded") {
		return ""
	}
	return fmt.Sprintf("decoding % x: the helper process exited with code %d; stderr:\n%s", raw, code, robHead(stderr, 12))
}

// TestProcessPeerKilledMidCall: the peer process dies (SIGKILL) while
// several of our calls run in its handlers. Every pending call must fail
// promptly with an error matching ErrClosed.
func TestProcessPeerKilledMidCall(t *testing.T) {
	cmd := robChildCmd("serve-block")
	stdin, err := cmd.StdinPipe()
	require.NoError(t, err)
	stdout := &robLines{lines: make(chan string, 16)}
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = stdout, &stderr
	require.NoError(t, cmd.Start())
	var waitOnce sync.Once
	var waitErr error
	wait := func() error {
		waitOnce.Do(func() { waitErr = cmd.Wait() })
		return waitErr
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		stdin.Close()
		wait()
	})

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var addr string
	select {
	case line := <-stdout.lines:
		var ok bool
		addr, ok = strings.CutPrefix(line, "ADDR ")
		require.True(t, ok, "first line from the child: %q", line)
	case <-ctx.Done():
		t.Fatalf("the child printed no address; stderr:\n%s", robHead(stderr.String(), 20))
	}

	const calls = 5
	started := make(chan struct{}, calls)
	c, err := Dial(ctx, addr, &Config{
		KeepaliveInterval: -1, // detection must come from the socket, not keepalive
		Handler: HandlerFunc(func(ctx context.Context, req *Request) (any, error) {
			var s string
			if req.IsNotification() && req.Decode(&s) == nil && s == "started" {
				started <- struct{}{}
			}
			return nil, nil
		}),
	})
	require.NoError(t, err)
	defer c.Close()

	errs := make(chan error, calls)
	for i := range calls {
		go func() {
			_, err := c.Request(ctx, fmt.Sprintf("call %d", i))
			errs <- err
		}()
	}
	for i := range calls {
		select {
		case <-started:
		case <-ctx.Done():
			t.Fatalf("only %d of %d handlers started in the child", i, calls)
		}
	}

	require.NoError(t, cmd.Process.Kill())
	werr := wait()
	var exitErr *exec.ExitError
	if assert.ErrorAs(t, werr, &exitErr) {
		ws, ok := exitErr.Sys().(syscall.WaitStatus)
		assert.True(t, ok && ws.Signaled() && ws.Signal() == syscall.SIGKILL, "the child died of SIGKILL: %v", werr)
	}

	for i := range calls {
		select {
		case err := <-errs:
			assert.ErrorIs(t, err, ErrClosed, "call %d", i)
			assert.NotErrorIs(t, err, context.DeadlineExceeded, "call %d", i)
		case <-ctx.Done():
			t.Fatalf("%d of %d calls still pending 10 s after the peer was killed", calls-i, calls)
		}
	}
	select {
	case <-c.Done():
	case <-ctx.Done():
		t.Fatal("the connection did not close after its peer was killed")
	}
	assert.ErrorIs(t, c.Err(), ErrClosed)
	_, err = c.Request(context.Background(), "after")
	assert.ErrorIs(t, err, ErrClosed)
}

// TestKeepaliveBlackHole: a peer that completes the handshake and then goes
// silent without closing must be detected by keepalive.
func TestKeepaliveBlackHole(t *testing.T) {
	cfg := func(closed chan struct{}) *Config {
		return &Config{
			KeepaliveInterval: 50 * time.Millisecond,
			KeepaliveTimeout:  100 * time.Millisecond,
			OnClose:           func(*Conn, error) { close(closed) },
		}
	}
	// readOpening reads a Conn's preamble and SETTINGS frame.
	readOpening := func(nc net.Conn) error {
		b := make([]byte, preambleSize+frameHeaderSize)
		if _, err := io.ReadFull(nc, b); err != nil {
			return err
		}
		_, err := io.ReadFull(nc, make([]byte, binary.BigEndian.Uint16(b[preambleSize+2:])))
		return err
	}

	cases := []struct {
		name string
		// open returns our Conn and, once the peer is silent, a channel
		// with the frames (if any) the peer read afterwards.
		open func(t *testing.T, closed chan struct{}) (*Conn, <-chan []frameKind)
	}{
		{"pipe, peer neither reads nor writes", func(t *testing.T, closed chan struct{}) (*Conn, <-chan []frameKind) {
			na, nb := net.Pipe()
			t.Cleanup(func() { nb.Close() })
			peer := make(chan error, 1)
			go func() {
				if err := readOpening(nb); err != nil {
					peer <- err
					return
				}
				_, err := nb.Write(robOpening(robSettings))
				peer <- err
			}()
			c, err := NewConn(testCtx(t), na, cfg(closed))
			require.NoError(t, err)
			require.NoError(t, <-peer)
			return c, nil
		}},
		{"pipe, peer reads but never answers", func(t *testing.T, closed chan struct{}) (*Conn, <-chan []frameKind) {
			na, nb := net.Pipe()
			rp := startRobPeer(nb)
			t.Cleanup(rp.close)
			opened := make(chan error, 1)
			var c *Conn
			go func() {
				var err error
				c, err = NewConn(testCtx(t), na, cfg(closed))
				opened <- err
			}()
			_, err := nb.Write(robOpening(robSettings))
			require.NoError(t, err)
			require.NoError(t, <-opened)
			seen := make(chan []frameKind, 1)
			go func() {
				var kinds []frameKind
				for f := range robDrain(rp) {
					kinds = append(kinds, f.kind)
					if f.kind == kindPing && f.id != 0 {
						kinds = append(kinds, 0xff) // keepalive PINGs have id 0
					}
				}
				seen <- kinds
			}()
			return c, seen
		}},
		{"tcp, peer neither reads nor writes", func(t *testing.T, closed chan struct{}) (*Conn, <-chan []frameKind) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			require.NoError(t, err)
			t.Cleanup(func() { ln.Close() })
			peer := make(chan error, 1)
			go func() {
				nc, err := ln.Accept()
				if err != nil {
					peer <- err
					return
				}
				t.Cleanup(func() { nc.Close() })
				if err := readOpening(nc); err != nil {
					peer <- err
					return
				}
				_, err = nc.Write(robOpening(robSettings))
				peer <- err
			}()
			c, err := Dial(testCtx(t), ln.Addr().String(), cfg(closed))
			require.NoError(t, err)
			require.NoError(t, <-peer)
			return c, nil
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			closed := make(chan struct{})
			c, seen := tc.open(t, closed)
			defer c.Close()
			callErr := make(chan error, 1)
			go func() {
				_, err := c.Request(context.Background(), "into the void")
				callErr <- err
			}()

			bound := time.After(10 * time.Second)
			select {
			case <-c.Done():
			case <-bound:
				t.Fatal("keepalive did not close a silent connection within 10 s")
			}
			err := c.Err()
			assert.ErrorIs(t, err, ErrClosed)
			assert.ErrorIs(t, err, ErrKeepaliveTimeout)
			select {
			case err := <-callErr:
				assert.ErrorIs(t, err, ErrClosed)
				assert.ErrorIs(t, err, ErrKeepaliveTimeout)
			case <-bound:
				t.Fatal("the pending call did not fail")
			}
			select {
			case <-closed:
			case <-bound:
				t.Fatal("OnClose did not run")
			}
			if seen != nil {
				kinds := <-seen
				assert.Contains(t, kinds, kindRequest, "the peer received the call")
				assert.Contains(t, kinds, kindPing, "the peer received a keepalive PING")
				assert.NotContains(t, kinds, frameKind(0xff), "keepalive PINGs have id 0")
			}
		})
	}
}

// robDrain returns a channel of every frame rp receives, closed when its
// reader ends.
func robDrain(rp *robPeer) <-chan robFrame {
	ch := make(chan robFrame)
	go func() {
		defer close(ch)
		for {
			select {
			case f := <-rp.frames:
				ch <- f
			case <-rp.done:
				for {
					select {
					case f := <-rp.frames:
						ch <- f
					default:
						return
					}
				}
			}
		}
	}()
	return ch
}

// TestDecodeHostileLengthsInChild: Request.Decode and Response.Decode are
// given the peer's bytes. A body of 5 bytes that declares an array or map of
// 2^31 elements must fail to decode, not make the process allocate for 2^31
// elements (which kills it: "fatal error: runtime: out of memory", or the
// OOM killer). The decoding runs in a helper process so that the failure
// does not take the test binary down.
func TestDecodeHostileLengthsInChild(t *testing.T) {
	inputs := []string{
		"dd7fffffff", // array32 of 2^31-1 elements, no elements
		"df7fffffff", // map32 of 2^31-1 entries, no entries
		"dc0000",     // array16 of 0: a control that must pass
	}
	for _, in := range inputs {
		t.Run(in, func(t *testing.T) {
			t.Parallel()
			raw, err := hex.DecodeString(in)
			require.NoError(t, err)
			if failure := robDecodeInChild(t, raw); failure != "" {
				t.Error(failure)
			}
		})
	}
}

// TestDeeplyNestedErrorBodyInChild: the answer to one of our calls is an
// ERROR whose body is a map with an unknown key whose value is an array
// nested 16 Mi levels deep (16 MiB, within the default MaxMessageSize).
// parseErrorBody decodes it into errorBody, and the msgpack decoder skips
// the unknown value recursively: the reader goroutine overflows its 1 GB
// stack and the whole process dies ("fatal error: stack overflow"), which
// no recover can stop. The call should instead fail (or the connection
// close with a *ProtocolError). Run in a helper process.
func TestDeeplyNestedErrorBodyInChild(t *testing.T) {
	code, stdout, stderr := robRunChild(t, 2*time.Minute, "deep-error-body")
	if code != 0 || !strings.Contains(stdout, "call ended") {
		t.Errorf("the process making the call died (exit code %d); stderr:\n%s", code, robHead(stderr, 12))
	}
	t.Logf("child stdout: %s", strings.TrimSpace(stdout))
}
