package bokbok

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"runtime"
	"runtime/debug"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// childEnv, when set, makes the test binary act as a helper process (see
// runChild) instead of running tests.
const childEnv = "BOKBOK_TEST_CHILD"

// runChild is the entry point of helper processes started by tests. It
// returns the process exit code. The modes are in process_test.go.
func runChild() int {
	mode := os.Getenv(childEnv)
	run := childModes[mode]
	if run == nil {
		fmt.Fprintf(os.Stderr, "unknown %s mode %q\n", childEnv, mode)
		return 64
	}
	return run()
}

// testCtx returns a context that ends with the test or after 30 seconds.
func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// pipePair opens a bokbok connection over net.Pipe with the given configs
// for the two ends and closes both at the end of the test.
func pipePair(t testing.TB, a, b *Config) (*Conn, *Conn) {
	t.Helper()
	na, nb := net.Pipe()
	return openPair(t, na, nb, a, b)
}

// tcpPair does the same over a real loopback TCP connection, the second end
// served by a Server.
func tcpPair(t testing.TB, client *Config, server *Server) (*Conn, *Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { ln.Close() })
	accepted := make(chan *Conn, 1)
	go func() {
		nc, err := ln.Accept()
		if err != nil {
			accepted <- nil
			return
		}
		c, err := server.ServeConn(context.Background(), nc)
		if err != nil {
			t.Errorf("ServeConn: %v", err)
		}
		accepted <- c
	}()
	c, err := Dial(testCtx(t), ln.Addr().String(), client)
	require.NoError(t, err)
	s := <-accepted
	require.NotNil(t, s)
	t.Cleanup(func() { c.Close(); server.Close(); server.Wait() })
	return c, s
}

func openPair(t testing.TB, na, nb net.Conn, a, b *Config) (*Conn, *Conn) {
	t.Helper()
	type result struct {
		c   *Conn
		err error
	}
	ch := make(chan result, 1)
	go func() {
		c, err := NewConn(context.Background(), nb, b)
		ch <- result{c, err}
	}()
	ca, err := NewConn(testCtx(t), na, a)
	require.NoError(t, err)
	r := <-ch
	require.NoError(t, r.err)
	t.Cleanup(func() { ca.Close(); r.c.Close() })
	return ca, r.c
}

// countMatching counts the errors in errs that match target.
func countMatching(errs []error, target error) int {
	n := 0
	for _, err := range errs {
		if errors.Is(err, target) {
			n++
		}
	}
	return n
}

// allocsPerRun is testing.AllocsPerRun for code that involves other
// goroutines: the average number of allocations per run, on one P.
func allocsPerRun(runs int, f func()) float64 {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	f()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for range runs {
		f()
	}
	runtime.ReadMemStats(&after)
	return float64(after.Mallocs-before.Mallocs) / float64(runs)
}

// raceEnabled reports whether this test binary was built with -race.
func raceEnabled() bool {
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "-race" {
				return s.Value == "true"
			}
		}
	}
	return false
}
