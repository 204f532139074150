package bokbok

import (
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// faultProxy is a TCP proxy for tests: it sits between a real client and a
// real server on loopback and injects network faults into the byte
// stream, separately in each direction: added latency and jitter, a
// bandwidth limit, a connection reset (RST) after a chosen number of
// bytes, a black hole (nothing more gets through, not even a FIN, while
// both sockets stay open), and corrupted bytes at chosen offsets. The faults in force can be
// changed at any time with set; each proxied connection (a link) applies
// them to the bytes it reads from then on.
//
// It is our own rather than toxiproxy because it is small and adds no
// dependencies (toxiproxy brings its server, HTTP API and their dependency
// tree into the module); it runs inside the test process, so a test
// switches faults between two calls with a function call; and its faults
// hit exact byte offsets of a stream, which the reset and corruption tests
// need in order to be deterministic (toxiproxy resets after a time, not at
// a byte, and has no fault that corrupts bytes).
type faultProxy struct {
	ln     net.Listener
	target string
	read   [2]atomic.Int64 // bytes read in each direction, over all links
	wg     sync.WaitGroup  // the accept loop and every link's goroutines

	mu      sync.Mutex // guards the fields below
	faults  [2]faults
	changed chan struct{} // closed and replaced when the faults change
	rng     *rand.Rand
	links   map[*faultLink]struct{}
	closed  bool
}

// faultDir is one direction of a proxied connection.
type faultDir int

const (
	toServer faultDir = iota // bytes the client sends
	toClient                 // bytes the server sends
)

func (d faultDir) String() string { return [...]string{"to server", "to client"}[d] }

// faults are what the proxy does to one direction. The zero value
// forwards bytes unchanged. Offsets count that direction's bytes on each
// link, from 0.
type faults struct {
	Latency    time.Duration // added to every byte's trip
	Jitter     time.Duration // up to this much more at random; bytes stay in order
	Bandwidth  int           // bytes per second; 0 means unlimited
	ResetAfter int64         // forward this many bytes, then reset both sockets; 0 means never
	Corrupt    []int64       // offsets of bytes whose bits are all flipped
	// BlackHole stops forwarding: the proxy stops reading, so nothing
	// more arrives (not even a FIN) and, once the socket buffers are
	// full, the sender's writes block, as on a path that silently drops
	// everything. The sockets stay open.
	BlackHole bool
}

// newFaultProxy starts a proxy to target on 127.0.0.1 and closes it, with
// every link, when the test ends. seed makes the jitter repeatable.
func newFaultProxy(t testing.TB, target string, seed uint64) *faultProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	p := &faultProxy{
		ln:      ln,
		target:  target,
		rng:     rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)),
		links:   make(map[*faultLink]struct{}),
		changed: make(chan struct{}),
	}
	p.wg.Add(1)
	go p.serve()
	t.Cleanup(p.close)
	return p
}

// addr is the address clients dial instead of target.
func (p *faultProxy) addr() string { return p.ln.Addr().String() }

// set replaces the faults of direction d.
func (p *faultProxy) set(d faultDir, f faults) {
	p.mu.Lock()
	p.faults[d] = f
	close(p.changed)
	p.changed = make(chan struct{})
	p.mu.Unlock()
}

// offset is how many bytes the proxy has read in direction d, over all
// links: with a single link, the offset of the next byte.
func (p *faultProxy) offset(d faultDir) int64 { return p.read[d].Load() }

// close stops accepting, closes every link and waits for all goroutines.
func (p *faultProxy) close() {
	p.mu.Lock()
	p.closed = true
	links := make([]*faultLink, 0, len(p.links))
	for l := range p.links {
		links = append(links, l)
	}
	p.mu.Unlock()
	p.ln.Close()
	for _, l := range links {
		l.shut(false)
	}
	p.wg.Wait()
}

func (p *faultProxy) serve() {
	defer p.wg.Done()
	for {
		nc, err := p.ln.Accept()
		if err != nil {
			return
		}
		up, err := net.DialTimeout("tcp", p.target, 5*time.Second)
		if err != nil {
			nc.Close() // the client sees its connection end, as if refused
			continue
		}
		l := &faultLink{p: p, side: [2]*net.TCPConn{nc.(*net.TCPConn), up.(*net.TCPConn)}, stop: make(chan struct{})}
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			l.shut(false)
			return
		}
		p.links[l] = struct{}{}
		p.wg.Add(4) // a reader and a writer per direction
		p.mu.Unlock()
		go l.pump(toServer)
		go l.pump(toClient)
	}
}

// faultLink is one proxied connection: side[0] is the client's socket,
// side[1] the server's. Direction d reads side[d] and writes side[1-d].
type faultLink struct {
	p     *faultProxy
	side  [2]*net.TCPConn
	stop  chan struct{} // closed when the link is shut
	once  sync.Once
	ended atomic.Int32 // directions finished; at 2 the link is shut
}

// chunk is a run of bytes on its way, or the end of a direction.
type chunk struct {
	b     []byte
	due   time.Time // when it may be written
	eof   bool      // then half-close the destination
	reset bool      // then reset the link
}

// shut closes both sockets, with RST if reset (SO_LINGER 0), and wakes
// the link's goroutines.
func (l *faultLink) shut(reset bool) {
	l.once.Do(func() {
		close(l.stop)
		for _, s := range l.side {
			if reset {
				s.SetLinger(0)
			}
			s.Close()
		}
		l.p.mu.Lock()
		delete(l.p.links, l)
		l.p.mu.Unlock()
	})
}

// sleepUntil waits until t or until the link is shut, and reports whether
// the link is still up.
func (l *faultLink) sleepUntil(t time.Time) bool {
	d := time.Until(t)
	if d <= 0 {
		return true
	}
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case <-tm.C:
		return true
	case <-l.stop:
		return false
	}
}

// current returns the faults of direction d, once it is not a black hole
// (or false if the link was shut while it waited), and the jitter for the
// next chunk.
func (l *faultLink) current(d faultDir) (faults, time.Duration, bool) {
	for {
		l.p.mu.Lock()
		f, changed := l.p.faults[d], l.p.changed
		var jitter time.Duration
		if f.Jitter > 0 {
			jitter = time.Duration(l.p.rng.Int64N(int64(f.Jitter)))
		}
		l.p.mu.Unlock()
		if !f.BlackHole {
			return f, jitter, true
		}
		select {
		case <-changed:
		case <-l.stop:
			return f, 0, false
		}
	}
}

// pump reads direction d, applies the faults, and hands the bytes to its
// writer goroutine (deliver) with the time each chunk is due.
func (l *faultLink) pump(d faultDir) {
	defer l.p.wg.Done()
	ch := make(chan chunk, 16)
	go l.deliver(d, ch)
	defer close(ch)
	send := func(c chunk) bool {
		select {
		case ch <- c:
			return true
		case <-l.stop:
			return false
		}
	}
	var (
		off     int64     // offset of the next byte read
		pace    time.Time // when the bandwidth limit lets the next byte go
		lastDue time.Time // chunks leave in order, whatever their jitter
	)
	for {
		f, _, ok := l.current(d)
		if !ok {
			return
		}
		size := 16 << 10
		if f.Bandwidth > 0 {
			size = max(512, min(size, f.Bandwidth/20)) // a chunk is at most ~50ms of the limit
		}
		b := make([]byte, size) // the writer owns it once sent
		n, err := l.side[d].Read(b)
		l.p.read[d].Add(int64(n))
		f, jitter, ok := l.current(d) // the faults in force when the bytes arrived
		if !ok {
			return
		}
		b = b[:n]
		for _, at := range f.Corrupt {
			if at >= off && at < off+int64(n) {
				b[at-off] ^= 0xff
			}
		}
		reset := f.ResetAfter > 0 && off+int64(n) >= f.ResetAfter
		if reset {
			b = b[:max(0, f.ResetAfter-off)]
		}
		off += int64(n)
		now := time.Now()
		if f.Bandwidth > 0 && len(b) > 0 {
			if pace.Before(now) {
				pace = now
			}
			pace = pace.Add(time.Duration(len(b)) * time.Second / time.Duration(f.Bandwidth))
			if !l.sleepUntil(pace) {
				return
			}
			now = time.Now()
		}
		due := now.Add(f.Latency + jitter)
		if due.Before(lastDue) {
			due = lastDue
		}
		lastDue = due
		c := chunk{b: b, due: due, reset: reset}
		if err != nil && !reset {
			// The source closed (EOF: pass on the FIN) or failed (pass
			// on a reset), after the bytes before it.
			c.eof, c.reset = errors.Is(err, io.EOF), !errors.Is(err, io.EOF)
		}
		if !send(c) || reset || err != nil {
			return
		}
	}
}

// deliver writes direction d's chunks when they are due and ends the
// direction as its reader says. The link is shut when both directions
// have ended.
func (l *faultLink) deliver(d faultDir, ch <-chan chunk) {
	defer l.p.wg.Done()
	dst := l.side[1-d]
	defer func() {
		if l.ended.Add(1) == 2 {
			l.shut(false)
		}
	}()
	for c := range ch {
		if !l.sleepUntil(c.due) {
			return
		}
		if len(c.b) > 0 {
			if _, err := dst.Write(c.b); err != nil {
				l.shut(true) // the destination is gone: the source learns by a reset
				return
			}
		}
		switch {
		case c.reset:
			l.shut(true)
			return
		case c.eof:
			dst.CloseWrite()
		}
	}
}
