package jetstream

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/bokbok-go/bokbok"
	"github.com/bokbok-go/bokbok/pipes"
	"github.com/stretchr/testify/require"
)

// A test starts this test binary as a hub process, configured by the
// environment, to kill it with SIGKILL:
//
//	PIPES_JS_HUB   the NATS URLs of the cluster, comma-separated
//	PIPES_JS_KEYS  the users' keys, "user=key" in the key's text form, space-separated
//
// The child prints "addr HOST:PORT" once it serves.
const childHubEnv = "PIPES_JS_HUB"

func runChildHub() int {
	time.AfterFunc(3*time.Minute, func() {
		fmt.Fprintln(os.Stderr, "child hub: still running after 3 minutes")
		os.Exit(4)
	})
	if err := childHub(); err != nil {
		fmt.Fprintln(os.Stderr, "child hub:", err)
		return 1
	}
	return 0
}

func childHub() error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	keys := testKeys{}
	for _, f := range strings.Fields(os.Getenv("PIPES_JS_KEYS")) {
		user, text, _ := strings.Cut(f, "=")
		k, err := bokbok.ParseKey(text)
		if err != nil {
			return err
		}
		keys[user] = k
	}
	l, err := Open(ctx, Config{URL: os.Getenv(childHubEnv), Timeout: 20 * time.Second})
	if err != nil {
		return err
	}
	defer l.Close()
	h, err := pipes.NewHub(pipes.HubConfig{Log: l, UserKeys: keys.UserKeys, MaxWait: 5 * time.Second})
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	fmt.Println("addr", ln.Addr())
	return h.Run(ctx, ln, 2*time.Second)
}

// childHubProc is a hub in a process of its own.
type childHubProc struct {
	cmd  *exec.Cmd
	addr string
}

// startChildHub starts a hub process on the cluster; it is killed at the
// end of the test if still running.
func startChildHub(t *testing.T, c *cluster, keys testKeys) *childHubProc {
	t.Helper()
	var kv []string
	for u, k := range keys {
		text, err := k.MarshalText()
		require.NoError(t, err)
		kv = append(kv, u+"="+string(text))
	}
	cmd := exec.Command(os.Args[0], "-test.run=^$", "-test.count=1")
	cmd.Env = append(os.Environ(), childHubEnv+"="+c.urls(), "PIPES_JS_KEYS="+strings.Join(kv, " "))
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	ch := &childHubProc{cmd: cmd}
	t.Cleanup(ch.kill)
	addr := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if a, ok := strings.CutPrefix(sc.Text(), "addr "); ok {
				addr <- a
			}
		}
		close(addr)
	}()
	select {
	case a, ok := <-addr:
		require.True(t, ok, "the hub process ended before it served")
		ch.addr = a
	case <-time.After(60 * time.Second):
		t.Fatal("the hub process did not serve within a minute")
	}
	return ch
}

// kill ends the hub process with SIGKILL: no close, no goodbye.
func (ch *childHubProc) kill() {
	if ch.cmd.ProcessState == nil {
		ch.cmd.Process.Kill()
		ch.cmd.Wait()
	}
}
