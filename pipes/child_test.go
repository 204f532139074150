package pipes

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/bokbok-go/bokbok"
)

// The process tests start this test binary as hubs and nodes, configured
// by environment variables:
//
//	PIPES_TEST_CHILD  "hub" or "node"
//	PIPES_ADDR        the hub's address (a Unix socket path)
//	PIPES_DIR         the hub's or node's directory
//	PIPES_KEYS        (hub) a keys file
//	PIPES_USER, PIPES_KEY (node) identity; the key in its text form
//	PIPES_LOG         (node) file the listener appends "seq id sender data" lines to
//	PIPES_PUT         (node) packets to put, data "PREFIX-i"
//	PIPES_PREFIX      (node) the data's prefix; the user by default
//	PIPES_PUT_EVERY   (node) pause between puts
//	PIPES_PUTLOG      (node) file each returned Put's id is appended to
//	PIPES_KILL_ACK    (node) SIGKILL itself after this many acknowledged puts, before the outbox update
//
// A child prints "ready" when it serves (hub) or has opened its
// directory (node), "put done" after its puts, and on SIGTERM stops
// cleanly, checks that its goroutines and file descriptors are back to
// where they were before it opened anything, and exits 0 (5 if not).
const childRoleEnv = "PIPES_TEST_CHILD"

func runChild(role string) int {
	time.AfterFunc(3*time.Minute, func() {
		fmt.Fprintln(os.Stderr, "child: still running after 3 minutes")
		os.Exit(4)
	})
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	baseG, baseFD := runtime.NumGoroutine(), countFDs()
	var err error
	switch role {
	case "hub":
		err = childHub(ctx)
	case "node":
		err = childNode(ctx)
	default:
		err = fmt.Errorf("unknown role %q", role)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		return 1
	}
	return checkBaseline(baseG, baseFD)
}

// checkBaseline waits briefly for goroutines to wind down, then compares.
func checkBaseline(baseG, baseFD int) int {
	deadline := time.Now().Add(5 * time.Second)
	for {
		g, fd := runtime.NumGoroutine(), countFDs()
		if g <= baseG && fd <= baseFD {
			fmt.Printf("clean: goroutines %d, fds %d\n", g, fd)
			return 0
		}
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<16)
			fmt.Fprintf(os.Stderr, "child: goroutines %d (base %d), fds %d (base %d)\n%s\n", g, baseG, fd, baseFD, buf[:runtime.Stack(buf, true)])
			return 5
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func countFDs() int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return 0
	}
	return len(ents)
}

func childHub(ctx context.Context) error {
	kf, err := bokbok.OpenKeysFile(os.Getenv("PIPES_KEYS"))
	if err != nil {
		return err
	}
	addr := os.Getenv("PIPES_ADDR")
	os.Remove(addr) // left behind by a killed hub
	ln, err := bokbok.Listen(addr)
	if err != nil {
		return err
	}
	h, err := NewHub(HubConfig{Dir: os.Getenv("PIPES_DIR"), UserKeys: kf.UserKeys})
	if err != nil {
		ln.Close()
		return err
	}
	fmt.Println("ready")
	return h.Run(ctx, ln, 2*time.Second)
}

func childNode(ctx context.Context) error {
	key, err := bokbok.ParseKey(os.Getenv("PIPES_KEY"))
	if err != nil {
		return err
	}
	if k, _ := strconv.Atoi(os.Getenv("PIPES_KILL_ACK")); k > 0 {
		var acks atomic.Int64
		testHookAcked = func() {
			if acks.Add(1) == int64(k) {
				syscall.Kill(os.Getpid(), syscall.SIGKILL)
				select {}
			}
		}
	}
	n, err := OpenNode(NodeConfig{Dir: os.Getenv("PIPES_DIR"), Hub: os.Getenv("PIPES_ADDR"), User: os.Getenv("PIPES_USER"), Key: key,
		Client: bokbok.ClientConfig{MinBackoff: 20 * time.Millisecond, MaxBackoff: 300 * time.Millisecond}})
	if err != nil {
		return err
	}
	defer n.Close()
	p, err := n.Pipeline("CHAT", &PipelineOptions{Persistent: true})
	if err != nil {
		return err
	}
	if path := os.Getenv("PIPES_LOG"); path != "" {
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
		if err != nil {
			return err
		}
		defer f.Close()
		p.Listen(func(pk Packet) {
			// One write per packet: a SIGKILL loses no line written.
			fmt.Fprintf(f, "%d %s %s %s\n", pk.Seq, pk.ID, pk.Sender, pk.Data)
		})
	}
	fmt.Println("ready")
	if count, _ := strconv.Atoi(os.Getenv("PIPES_PUT")); count > 0 {
		every, _ := time.ParseDuration(os.Getenv("PIPES_PUT_EVERY"))
		prefix := os.Getenv("PIPES_PREFIX")
		if prefix == "" {
			prefix = n.User()
		}
		var putlog *os.File
		if path := os.Getenv("PIPES_PUTLOG"); path != "" {
			if putlog, err = os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600); err != nil {
				return err
			}
			defer putlog.Close()
		}
		for i := range count {
			id, err := p.Put(ctx, fmt.Appendf(nil, "%s-%d", prefix, i))
			if err != nil {
				return err
			}
			if putlog != nil {
				fmt.Fprintf(putlog, "%s\n", id)
			}
			if every > 0 {
				select {
				case <-time.After(every):
				case <-ctx.Done():
					return nil
				}
			}
		}
		fmt.Println("put done")
	}
	<-ctx.Done()
	return nil
}

// childCmd makes the command that runs this test binary as a child.
func childCmd(role string, env ...string) *exec.Cmd {
	cmd := exec.Command(os.Args[0], "-test.run=^$", "-test.count=1")
	cmd.Env = append(append(os.Environ(), childRoleEnv+"="+role), env...)
	cmd.Env = append(cmd.Env, "GORACE="+strings.TrimSpace(os.Getenv("GORACE")+" atexit_sleep_ms=0"))
	return cmd
}

// logLine is one line of a node child's listener log.
type logLine struct {
	Seq    uint64
	ID     string
	Sender string
	Data   string
}

func readLog(path string) ([]logLine, error) {
	f, err := os.Open(path)
	if os.IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []logLine
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) != 4 {
			continue // a line cut short by SIGKILL cannot happen (one write), but be lenient
		}
		seq, err := strconv.ParseUint(fs[0], 10, 64)
		if err != nil {
			return nil, err
		}
		out = append(out, logLine{Seq: seq, ID: fs[1], Sender: fs[2], Data: fs[3]})
	}
	return out, sc.Err()
}
