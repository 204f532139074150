package bokbok

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

func init() {
	// serve-count serves on BOKBOK_TEST_ADDR; its handler appends each
	// request's message (a string) as a line to the file BOKBOK_TEST_LOG,
	// then echoes it. SIGTERM shuts it down gracefully.
	childModes["serve-count"] = childServeCount
}

func childServeCount() int {
	childGuard(1<<30, 2*time.Minute, true)
	f, err := os.OpenFile(os.Getenv("BOKBOK_TEST_LOG"), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	var mu sync.Mutex // one line per write
	srv := &Server{Config: Config{Handler: HandlerFunc(func(ctx context.Context, req *Request) (any, error) {
		var id string
		if err := req.Decode(&id); err != nil {
			return nil, err
		}
		mu.Lock()
		_, err := f.WriteString(id + "\n")
		mu.Unlock()
		return id, err
	})}}
	ln, err := Listen(os.Getenv("BOKBOK_TEST_ADDR"))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Printf("ADDR %s\n", ln.Addr())
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	if err := srv.Run(ctx, ln, 2*time.Second); err != nil {
		fmt.Fprintln(os.Stderr, err)
	}
	return 0
}

// callLedger records the fate of every call a test made, by its id.
type callLedger struct {
	mu       sync.Mutex
	ok       map[string]bool // answered
	notSent  map[string]bool // failed with ErrNotSent: must never have run
	maybe    int             // failed with an unknown fate
	untyped  []error
	answered atomic.Int64
}

func newCallLedger() *callLedger {
	return &callLedger{ok: map[string]bool{}, notSent: map[string]bool{}}
}

func (l *callLedger) record(id string, got string, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case err == nil && got == id:
		l.ok[id] = true
		l.answered.Add(1)
	case err == nil:
		l.untyped = append(l.untyped, fmt.Errorf("call %s answered %q", id, got))
	case errors.Is(err, ErrNotSent):
		l.notSent[id] = true
	case errors.Is(err, ErrClosed), errors.Is(err, context.DeadlineExceeded):
		l.maybe++
	default:
		l.untyped = append(l.untyped, fmt.Errorf("call %s: %w", id, err))
	}
}

// check compares the ledger with how many times each id ran: answered
// calls exactly once, calls never sent not at all, none twice.
func (l *callLedger) check(t *testing.T, runs map[string]int) {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, err := range l.untyped {
		t.Errorf("a call ended without a typed error: %v", err)
	}
	for id, n := range runs {
		if n > 1 {
			t.Errorf("call %s ran %d times", id, n)
		}
	}
	for id := range l.ok {
		if runs[id] != 1 {
			t.Errorf("call %s was answered but ran %d times", id, runs[id])
		}
	}
	for id := range l.notSent {
		if runs[id] != 0 {
			t.Errorf("call %s failed as not sent but ran %d times", id, runs[id])
		}
	}
	t.Logf("%d calls answered, %d never sent, %d of unknown fate, %d handler runs", len(l.ok), len(l.notSent), l.maybe, len(runs))
}

// loadCalls runs callers goroutines calling c with fresh ids until stop
// closes.
func loadCalls(c *Client, callers int, ledger *callLedger, stop <-chan struct{}) *sync.WaitGroup {
	var wg sync.WaitGroup
	for w := range callers {
		wg.Go(func() {
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				id := fmt.Sprintf("w%d-%d", w, n)
				ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
				var got string
				err := c.Call(ctx, id, &got)
				cancel()
				ledger.record(id, got, err)
			}
		})
	}
	return &wg
}

// A server process killed (or stopped with SIGTERM) and restarted 20
// times under a steady load of calls: every call is answered or fails
// with a typed error, none runs twice, none that failed as not sent ran,
// and the client's goroutines are gone once it is closed.
func TestClientSurvivesServerRestarts(t *testing.T) {
	if testing.Short() {
		t.Skip("starts 21 processes")
	}
	baseline := goleak.IgnoreCurrent()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	ln.Close()
	logFile := filepath.Join(t.TempDir(), "runs.log")

	start := func() *exec.Cmd {
		cmd := robChildCmd("serve-count", "BOKBOK_TEST_ADDR="+addr, "BOKBOK_TEST_LOG="+logFile)
		out := &robLines{lines: make(chan string, 1)}
		var stderr strings.Builder
		cmd.Stdout, cmd.Stderr = out, &stderr
		_, err := cmd.StdinPipe() // the child exits if this test process dies
		require.NoError(t, err)
		require.NoError(t, cmd.Start())
		select {
		case line := <-out.lines:
			require.True(t, strings.HasPrefix(line, "ADDR "), "child said %q", line)
		case <-time.After(30 * time.Second):
			cmd.Process.Kill()
			cmd.Wait()
			t.Fatalf("the server did not start: %s", stderr.String())
		}
		return cmd
	}

	cmd := start()
	c, err := NewClient(addr, &ClientConfig{MinBackoff: 5 * time.Millisecond, MaxBackoff: 50 * time.Millisecond, DialTimeout: 5 * time.Second})
	require.NoError(t, err)
	ledger := newCallLedger()
	stop := make(chan struct{})
	wg := loadCalls(c, 6, ledger, stop)

	const restarts = 20
	for i := range restarts {
		// Let each server answer some calls, so that the client is seen
		// to come back every time.
		before := ledger.answered.Load()
		deadline := time.Now().Add(30 * time.Second)
		for ledger.answered.Load() < before+20 {
			if time.Now().After(deadline) {
				close(stop)
				wg.Wait()
				c.Close()
				cmd.Process.Kill()
				cmd.Wait()
				t.Fatalf("restart %d: no calls answered for 30s", i)
			}
			time.Sleep(5 * time.Millisecond)
		}
		sig := os.Signal(syscall.SIGKILL)
		if i%2 == 1 {
			sig = syscall.SIGTERM // a graceful stop: the client moves off at once
		}
		require.NoError(t, cmd.Process.Signal(sig))
		cmd.Wait()
		cmd = start()
	}
	time.Sleep(50 * time.Millisecond)
	close(stop)
	wg.Wait()
	require.NoError(t, c.Close())
	cmd.Process.Signal(syscall.SIGTERM)
	cmd.Wait()

	runs := map[string]int{}
	f, err := os.Open(logFile)
	require.NoError(t, err)
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		runs[sc.Text()]++
	}
	require.NoError(t, sc.Err())
	ledger.check(t, runs)
	assert.GreaterOrEqual(t, len(ledger.ok), 20*restarts)
	goleak.VerifyNone(t, baseline)
}

// The fault proxy resets every connection after a few kilobytes, in one
// direction or the other: the client reconnects each time, and no call
// runs twice.
func TestClientThroughResettingProxy(t *testing.T) {
	baseline := goleak.IgnoreCurrent()
	var (
		mu   sync.Mutex
		runs = map[string]int{}
	)
	srv := &Server{Config: Config{Handler: HandlerFunc(func(ctx context.Context, req *Request) (any, error) {
		var id string
		if err := req.Decode(&id); err != nil {
			return nil, err
		}
		mu.Lock()
		runs[id]++
		mu.Unlock()
		return id, nil
	})}}
	s := startClientServer(t, "", srv)
	proxy := newFaultProxy(t, s.addr, 1)
	proxy.set(toServer, faults{ResetAfter: 3000})
	proxy.set(toClient, faults{ResetAfter: 2000})

	c, err := NewClient(proxy.addr(), &ClientConfig{MinBackoff: time.Millisecond, MaxBackoff: 20 * time.Millisecond})
	require.NoError(t, err)
	ledger := newCallLedger()
	stop := make(chan struct{})
	wg := loadCalls(c, 4, ledger, stop)
	deadline := time.Now().Add(60 * time.Second)
	for ledger.answered.Load() < 500 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	close(stop)
	wg.Wait()
	require.NoError(t, c.Close())
	s.stop()
	proxy.close()

	mu.Lock()
	defer mu.Unlock()
	ledger.check(t, runs)
	assert.GreaterOrEqual(t, len(ledger.ok), 500)
	goleak.VerifyNone(t, baseline)
}
