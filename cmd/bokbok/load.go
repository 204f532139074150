package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"math/bits"
	"os"
	"reflect"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/bokbok-go/bokbok"
)

const loadAbout = `Run --concurrency callers against ADDR for --duration, over --connections
connections (caller i uses connection i mod C). Each caller sends a message,
waits for the reply, checks it, and sends the next, so at most
--concurrency calls are in flight.

The default message is {"method":"echo","params":BYTES}, with --size random
bytes that differ for every caller and every call; the inspection server of
"bokbok serve" answers it with BYTES, and the reply must be exactly those
bytes. --message sends a JSON value of your own instead (as MessagePack;
numbers without a fraction or exponent become integers). If it has the form
{"method":"echo","params":X}, the reply must equal X; any other message
counts as a success whenever the reply is not an error.

About once a second a progress line on stderr gives the calls/s, errors and
p50/p99 latency of the last second (rewritten in place when stderr is a
terminal). At the end, or on Ctrl-C, a summary table on stdout gives the
calls, errors by kind, calls/s and the latency of the successful calls:
min, p50, p90, p99 and max (percentiles within 1%). Each call waits up to
--timeout (0: no limit); calls in flight when --duration ends are waited
for, calls in flight at Ctrl-C are left out of the counts.

The connections are secure unless --insecure is given: pass --user and
--key-file, and --realm if the server has one.

Exit status: 0 if no call failed; 1 if some calls failed; 2 if a connection
could not be opened or authenticated, or broke during the run; 64 on bad
usage.`

// maxLoadSize bounds --size: every caller keeps a message of that size.
const maxLoadSize = 256 << 20

func runLoad(ctx context.Context, e *env, args []string) int {
	fs := newFlags(e, "load", "load ADDR [--concurrency N] [--duration D] [--size BYTES | --message JSON] [--connections C] [connection flags]", loadAbout)
	concurrency := fs.Int("concurrency", 16, "run `N` callers, each with one call in flight at a time")
	duration := fs.Duration("duration", 10*time.Second, "how long (`D`) to keep starting calls")
	size := fs.Int("size", 64, "put `BYTES` random bytes in the default echo message")
	message := fs.String("message", "", "send `JSON` (converted to MessagePack) instead of the default echo message")
	connections := fs.Int("connections", 1, "open `C` connections for the callers to share")
	var cf connFlags
	cf.register(fs)
	pos, code, ok := parseArgs(fs, args, "ADDR")
	if !ok {
		return code
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	switch {
	case *concurrency < 1:
		return badFlag(e, fs, "--concurrency is %d, want 1 or more", *concurrency)
	case *connections < 1:
		return badFlag(e, fs, "--connections is %d, want 1 or more", *connections)
	case *connections > *concurrency:
		return badFlag(e, fs, "--connections %d is more than --concurrency %d: every connection needs a caller", *connections, *concurrency)
	case *duration <= 0:
		return badFlag(e, fs, "--duration is %v, want more than 0", *duration)
	case *size < 0 || *size > maxLoadSize:
		return badFlag(e, fs, "--size is %d, want 0 to %d", *size, maxLoadSize)
	case set["size"] && set["message"]:
		return badFlag(e, fs, "--size applies to the default echo message only: drop --size or --message")
	case cf.timeout < 0:
		return badFlag(e, fs, "--timeout is %v, want 0 (no limit) or more", cf.timeout)
	}
	var custom *loadMessage
	if set["message"] {
		m, err := parseLoadMessage(*message)
		if err != nil {
			return badFlag(e, fs, "--message: %v", err)
		}
		custom = m
	}
	addr := pos[0]
	cfg, code, ok := checkPeerFlags(e, "load", addr, &cf)
	if !ok {
		return code
	}

	conns := make([]*bokbok.Conn, 0, *connections)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for range *connections {
		c, err := dialWithin(ctx, addr, cfg, cf.timeout)
		if err != nil {
			fmt.Fprintf(e.stderr, "bokbok load: %s\n", whyNoConn(ctx, err, addr, &cf))
			return exitConnect
		}
		conns = append(conns, c)
	}

	what := fmt.Sprintf("echo of %d bytes", *size)
	if custom != nil {
		what = "--message"
		if custom.echo {
			what += " (echo)"
		}
	}
	lr := newLoadRun(len(conns), *concurrency)
	callers := make([]*loadCaller, *concurrency)
	for i := range callers {
		lc := &loadCaller{conn: conns[i%len(conns)], connIndex: i % len(conns), shard: lr.shards[i%len(lr.shards)]}
		if custom != nil {
			lc.msg, lc.want, lc.checkWant = custom.msg, custom.want, custom.echo
		} else {
			lc.payload = make([]byte, *size)
			rand.Read(lc.payload)
			lc.msg = map[string]any{"method": "echo", "params": lc.payload}
		}
		callers[i] = lc
	}

	start := time.Now()
	deadline := start.Add(*duration)
	var wg sync.WaitGroup
	for _, lc := range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			lc.run(ctx, deadline, cf.timeout, lr)
		}()
	}
	callersDone := make(chan struct{})
	go func() {
		wg.Wait()
		close(callersDone)
	}()
	lr.report(e.stderr, progressToTerminal(e.stderr), start, callersDone)
	elapsed := time.Since(start)
	lr.collect() // the calls since the last progress line

	for i, err := range lr.lost {
		if err != nil {
			fmt.Fprintf(e.stderr, "bokbok load: connection %d of %d to %s lost: %s\n", i+1, len(conns), addr, plainErr(err))
		}
	}
	lr.summary(e.stdout, loadHeader{
		addr: addr, callers: *concurrency, conns: len(conns), what: what,
		interrupted: ctxOver(ctx), elapsed: elapsed,
	})
	switch {
	case lr.anyLost():
		return exitConnect
	case lr.total.failed > 0:
		return exitRemote
	}
	return exitOK
}

// loadMessage is a --message: what to send and what the reply must be.
type loadMessage struct {
	msg  any
	echo bool // {"method":"echo","params":X}: the reply must equal want
	want any  // X, normalized
}

// parseLoadMessage parses the JSON of --message, as "bokbok call" parses
// its MESSAGE (parseJSONMessage).
func parseLoadMessage(s string) (*loadMessage, error) {
	v, err := parseJSONMessage(s)
	if err != nil {
		return nil, err
	}
	m := &loadMessage{msg: v}
	if obj, ok := v.(map[string]any); ok && len(obj) == 2 && obj["method"] == "echo" {
		if x, ok := obj["params"]; ok {
			m.echo, m.want = true, normalizeValue(x)
		}
	}
	return m, nil
}

// normalizeValue makes a decoded reply and a sent value comparable with
// reflect.DeepEqual: integers become int64 (or uint64 above its range),
// floats float64, and maps with string keys map[string]any.
func normalizeValue(v any) any {
	rv := reflect.ValueOf(v)
	switch rv.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return rv.Int()
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		if u := rv.Uint(); u > 1<<63-1 {
			return u
		}
		return int64(rv.Uint())
	case reflect.Float32, reflect.Float64:
		return rv.Float()
	case reflect.Slice:
		if b, ok := v.([]byte); ok {
			return b
		}
		out := make([]any, rv.Len())
		for i := range out {
			out[i] = normalizeValue(rv.Index(i).Interface())
		}
		return out
	case reflect.Map:
		out := make(map[string]any, rv.Len())
		for it := rv.MapRange(); it.Next(); {
			out[fmt.Sprint(it.Key().Interface())] = normalizeValue(it.Value().Interface())
		}
		return out
	}
	return v
}

// loadCaller is one caller: it sends its message until the run ends.
type loadCaller struct {
	conn      *bokbok.Conn
	connIndex int
	shard     *loadShard
	msg       any

	payload []byte // default echo: the params, which the reply must equal; changed per call

	checkWant bool // --message echo: the reply must equal want
	want      any
}

var errWrongReply = errors.New("wrong reply")

func (lc *loadCaller) run(ctx context.Context, deadline time.Time, timeout time.Duration, lr *loadRun) {
	for n := uint64(1); !ctxOver(ctx) && time.Now().Before(deadline); n++ {
		if lc.payload != nil {
			// Make every call's payload differ, so that a reply delivered to
			// the wrong call shows.
			var ctr [8]byte
			binary.LittleEndian.PutUint64(ctr[:], n)
			copy(lc.payload, ctr[:])
		}
		cctx, cancel := ctxWithin(ctx, timeout)
		t0 := time.Now()
		resp, err := lc.conn.Request(cctx, lc.msg)
		lat := time.Since(t0)
		cancel()
		if err == nil {
			err = lc.check(resp)
		}
		if err != nil && ctxOver(ctx) {
			return // interrupted: this call does not count
		}
		if err != nil {
			lc.shard.fail(loadErrKind(err))
			if errors.Is(err, bokbok.ErrClosed) || errors.Is(err, bokbok.ErrShutdown) {
				lr.connLost(lc.connIndex, err)
				return
			}
			continue
		}
		lc.shard.ok(lat)
	}
}

// check checks a reply.
func (lc *loadCaller) check(resp *bokbok.Response) error {
	switch {
	case lc.payload != nil:
		var got []byte
		if err := resp.Decode(&got); err != nil {
			return fmt.Errorf("%w: %v", errWrongReply, err)
		}
		if !bytes.Equal(got, lc.payload) {
			return errWrongReply
		}
	case lc.checkWant:
		var got any
		if err := resp.Decode(&got); err != nil {
			return fmt.Errorf("%w: %v", errWrongReply, err)
		}
		if !reflect.DeepEqual(normalizeValue(got), lc.want) {
			return errWrongReply
		}
	}
	return nil
}

// loadErrKind names the kind of a failed call, for the summary.
func loadErrKind(err error) string {
	var re *bokbok.RemoteError
	var tooLarge *bokbok.MessageTooLargeError
	switch {
	case errors.Is(err, errWrongReply):
		return "wrong reply (not the echo of the message)"
	case errors.Is(err, bokbok.ErrClosed):
		return "connection closed"
	case errors.Is(err, bokbok.ErrShutdown):
		return "server shutting down"
	case errors.Is(err, bokbok.ErrBusy):
		return "busy (server at its handler limit)"
	case errors.As(err, &tooLarge):
		return fmt.Sprintf("message too large (%d bytes; the server accepts %d)", tooLarge.Size, tooLarge.Limit)
	case errors.Is(err, bokbok.ErrMessageTooLarge):
		return "reply too large"
	case errors.Is(err, context.DeadlineExceeded):
		return "timeout (--timeout)"
	case errors.As(err, &re) && re.Code != "":
		return "remote error [" + re.Code + "]"
	case errors.As(err, &re):
		return "remote error: " + clip(re.Message, 60)
	}
	return clip(plainErr(err), 60)
}

func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

// maxErrKinds bounds the error kinds kept apart; the rest are "other".
const maxErrKinds = 16

// loadCounts are the counts of some calls.
type loadCounts struct {
	succeeded, failed uint64
	errs              map[string]uint64
	min, max          time.Duration // of the successful calls
	hist              latencyHist
}

func (c *loadCounts) addErr(kind string, n uint64) {
	if c.errs == nil {
		c.errs = make(map[string]uint64)
	}
	if _, ok := c.errs[kind]; !ok && len(c.errs) >= maxErrKinds {
		kind = "other"
	}
	c.errs[kind] += n
	c.failed += n
}

// merge adds o to c.
func (c *loadCounts) merge(o *loadCounts) {
	if o.succeeded > 0 {
		if c.succeeded == 0 || o.min < c.min {
			c.min = o.min
		}
		c.max = max(c.max, o.max)
	}
	c.succeeded += o.succeeded
	c.hist.merge(&o.hist)
	for k, n := range o.errs {
		c.addErr(k, n)
	}
}

func (c *loadCounts) reset() {
	c.succeeded, c.failed, c.min, c.max = 0, 0, 0, 0
	clear(c.errs)
	c.hist.reset()
}

// loadShard collects the calls of some callers between two collections.
type loadShard struct {
	mu sync.Mutex
	loadCounts
}

func (s *loadShard) ok(lat time.Duration) {
	s.mu.Lock()
	if s.succeeded == 0 || lat < s.min {
		s.min = lat
	}
	s.max = max(s.max, lat)
	s.succeeded++
	s.hist.add(lat)
	s.mu.Unlock()
}

func (s *loadShard) fail(kind string) {
	s.mu.Lock()
	s.addErr(kind, 1)
	s.mu.Unlock()
}

// maxLoadShards bounds the shards: callers share them round robin.
const maxLoadShards = 32

// loadRun is the state of a run.
type loadRun struct {
	shards []*loadShard
	last   loadCounts // the calls of the last collection; owned by the collector
	total  loadCounts // every call collected so far; owned by the collector

	mu   sync.Mutex
	lost []error // per connection: why it broke, or nil
}

func newLoadRun(conns, callers int) *loadRun {
	lr := &loadRun{lost: make([]error, conns)}
	for range min(callers, maxLoadShards) {
		lr.shards = append(lr.shards, &loadShard{})
	}
	return lr
}

func (lr *loadRun) connLost(i int, err error) {
	lr.mu.Lock()
	if lr.lost[i] == nil {
		lr.lost[i] = err
	}
	lr.mu.Unlock()
}

func (lr *loadRun) anyLost() bool {
	lr.mu.Lock()
	defer lr.mu.Unlock()
	for _, err := range lr.lost {
		if err != nil {
			return true
		}
	}
	return false
}

// collect moves the shards' counts into lr.last (replacing it) and
// lr.total. Only one goroutine at a time may collect.
func (lr *loadRun) collect() {
	lr.last.reset()
	for _, s := range lr.shards {
		s.mu.Lock()
		lr.last.merge(&s.loadCounts)
		s.reset()
		s.mu.Unlock()
	}
	lr.total.merge(&lr.last)
}

// loadProgressEvery is how often load writes a progress line.
var loadProgressEvery = time.Second

// report writes a progress line to w every loadProgressEvery until done
// is closed. On a terminal the line is rewritten in place.
func (lr *loadRun) report(w io.Writer, terminal bool, start time.Time, done <-chan struct{}) {
	tick := time.NewTicker(loadProgressEvery)
	defer tick.Stop()
	prev, width := start, 0
	for {
		select {
		case <-done:
			if terminal && width > 0 {
				fmt.Fprintln(w)
			}
			return
		case now := <-tick.C:
			lr.collect()
			line := lr.progressLine(now.Sub(start), now.Sub(prev))
			prev = now
			if terminal {
				fmt.Fprintf(w, "\r%-*s", width, line)
				width = max(width, len(line))
			} else {
				fmt.Fprintln(w, line)
			}
		}
	}
}

func (lr *loadRun) progressLine(at, span time.Duration) string {
	c := &lr.last
	rate := float64(c.succeeded+c.failed) / span.Seconds()
	p50, p99 := "-", "-"
	if c.succeeded > 0 {
		p50 = fmtMillis(c.quantile(0.50))
		p99 = fmtMillis(c.quantile(0.99))
	}
	return fmt.Sprintf("[%3.0fs] %.0f calls/s, %s, p50 %s, p99 %s (total %s, %s)",
		at.Seconds(), rate, loadPlural(c.failed, "error"), p50, p99,
		loadPlural(lr.total.succeeded+lr.total.failed, "call"), loadPlural(lr.total.failed, "error"))
}

// quantile returns the q-quantile of the successful calls' latency.
func (c *loadCounts) quantile(q float64) time.Duration {
	return min(max(c.hist.quantile(q), c.min), c.max)
}

type loadHeader struct {
	addr           string
	callers, conns int
	what           string
	interrupted    bool
	elapsed        time.Duration
}

// summary writes the final table.
func (lr *loadRun) summary(w io.Writer, h loadHeader) {
	c := &lr.total
	note := ""
	if h.interrupted {
		note = " (interrupted)"
	}
	fmt.Fprintf(w, "--- bokbok load %s: %s on %s, %s ---\n", h.addr, loadPlural(uint64(h.callers), "caller"), loadPlural(uint64(h.conns), "connection"), h.what)
	row := func(name, format string, args ...any) {
		fmt.Fprintf(w, "%-13s%s\n", name, fmt.Sprintf(format, args...))
	}
	calls := c.succeeded + c.failed
	row("calls", "%d in %v%s", calls, h.elapsed.Round(time.Millisecond), note)
	row("calls/s", "%.1f", float64(calls)/h.elapsed.Seconds())
	if c.failed == 0 {
		row("errors", "0")
	} else {
		row("errors", "%d (%.2f%%), of which:", c.failed, 100*float64(c.failed)/float64(calls))
		kinds := make([]string, 0, len(c.errs))
		for k := range c.errs {
			kinds = append(kinds, k)
		}
		sort.Slice(kinds, func(i, j int) bool {
			if c.errs[kinds[i]] != c.errs[kinds[j]] {
				return c.errs[kinds[i]] > c.errs[kinds[j]]
			}
			return kinds[i] < kinds[j]
		})
		width := len(strconv.FormatUint(c.errs[kinds[0]], 10))
		for _, k := range kinds {
			row("", "%*d  %s", width, c.errs[k], k)
		}
	}
	if c.succeeded == 0 {
		row("latency", "- (no successful call)")
		return
	}
	lat := []struct {
		name string
		d    time.Duration
	}{
		{"min", c.min}, {"p50", c.quantile(0.50)}, {"p90", c.quantile(0.90)},
		{"p99", c.quantile(0.99)}, {"max", c.max},
	}
	width := len(fmtMillis(c.max))
	for _, l := range lat {
		row("latency "+l.name, "%*s", width, fmtMillis(l.d))
	}
}

// loadPlural returns "1 call", "2 calls".
func loadPlural(n uint64, word string) string {
	if n == 1 {
		return fmt.Sprintf("%d %s", n, word)
	}
	return fmt.Sprintf("%d %ss", n, word)
}

// progressToTerminal reports whether w is a terminal, where a progress
// line can be rewritten in place with "\r".
func progressToTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0 && f.Name() != os.DevNull
}

// latencyHist is a log-linear histogram of durations: exact below 128ns,
// then 64 buckets per power of two, so a bucket's middle is within 0.8% of
// every value in it. Durations from 2^38ns (about 4.6 minutes) up share
// the last bucket.
type latencyHist struct {
	counts [histBuckets]uint64
	n      uint64
}

const (
	histSubBits = 6 // 64 buckets per power of two
	histSub     = 1 << histSubBits
	histMaxBits = 38
	histBuckets = 2*histSub + (histMaxBits-histSubBits-1)*histSub
)

func histIndex(d time.Duration) int {
	v := uint64(max(d, 0))
	if v < 2*histSub {
		return int(v)
	}
	if v >= 1<<histMaxBits {
		return histBuckets - 1
	}
	shift := bits.Len64(v) - histSubBits - 1 // v>>shift is in [histSub, 2*histSub)
	return 2*histSub + (shift-1)*histSub + int(v>>shift) - histSub
}

// histMiddle returns the middle of bucket i.
func histMiddle(i int) time.Duration {
	if i < 2*histSub {
		return time.Duration(i)
	}
	shift := (i-2*histSub)/histSub + 1
	m := uint64((i-2*histSub)%histSub + histSub)
	lo := m << shift
	return time.Duration(lo + (uint64(1)<<shift)/2)
}

func (h *latencyHist) add(d time.Duration) {
	h.counts[histIndex(d)]++
	h.n++
}

func (h *latencyHist) merge(o *latencyHist) {
	if o.n == 0 {
		return
	}
	for i, n := range o.counts {
		h.counts[i] += n
	}
	h.n += o.n
}

func (h *latencyHist) reset() {
	if h.n != 0 {
		clear(h.counts[:])
		h.n = 0
	}
}

// quantile returns the middle of the bucket holding the q-quantile, or 0
// for an empty histogram.
func (h *latencyHist) quantile(q float64) time.Duration {
	if h.n == 0 {
		return 0
	}
	rank := uint64(math.Ceil(q * float64(h.n)))
	rank = min(max(rank, 1), h.n)
	var seen uint64
	for i, n := range h.counts {
		seen += n
		if seen >= rank {
			return histMiddle(i)
		}
	}
	return histMiddle(histBuckets - 1)
}
