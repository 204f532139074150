package jetstream

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/bokbok-go/bokbok/pipes"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func testCtx(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func sender(user string, node byte) pipes.Sender {
	s := pipes.Sender{User: user}
	s.Node[0] = node
	return s
}

func entries(from, to uint64) []pipes.Entry {
	var es []pipes.Entry
	for n := from; n <= to; n++ {
		es = append(es, pipes.Entry{N: n, Data: fmt.Appendf(nil, "packet %d", n)})
	}
	return es
}

// readAll reads a pipeline from after to its end.
func readAll(t testing.TB, ctx context.Context, l *Log, name string, after uint64, max, maxBytes int) ([]pipes.Record, []pipes.Gap) {
	t.Helper()
	var recs []pipes.Record
	var gaps []pipes.Gap
	for {
		res, err := l.Read(ctx, name, after, max, maxBytes)
		require.NoError(t, err)
		if res.Gap != nil {
			gaps = append(gaps, *res.Gap)
			after = res.Gap.To
		}
		recs = append(recs, res.Records...)
		if len(res.Records) > 0 {
			after = res.Records[len(res.Records)-1].Seq
		}
		if len(res.Records) == 0 && res.Gap == nil {
			return recs, gaps
		}
	}
}

func TestConfigValidation(t *testing.T) {
	for _, cfg := range []Config{
		{},
		{URL: "nats://127.0.0.1:1", Prefix: "a.b"},
		{URL: "nats://127.0.0.1:1", Prefix: "0123456789012345678901234567890123"},
		{URL: "nats://127.0.0.1:1", Replicas: 7},
		{URL: "nats://127.0.0.1:1", Retention: pipes.Retention{MaxAge: time.Millisecond}},
	} {
		_, err := Open(context.Background(), cfg)
		require.Error(t, err, "%+v", cfg)
	}
	cfg := Config{URL: "x"}
	require.NoError(t, cfg.setDefaults())
	require.Equal(t, DefaultPrefix, cfg.Prefix)
	require.Equal(t, DefaultReplicas, cfg.Replicas)
	require.Equal(t, DefaultTimeout, cfg.Timeout)
	require.Equal(t, pipes.DefaultTransientWindow, cfg.TransientWindow)
}

func TestRecordFormat(t *testing.T) {
	from := sender("zoë", 7)
	b := encodeRecord(nil, 0, 1234567890123, from, 42, []byte("data"))
	r, err := decodeRecord(9, b)
	require.NoError(t, err)
	require.Equal(t, pipes.Record{Seq: 9, Time: time.Unix(0, 1234567890123), Sender: from, N: 42, Data: []byte("data")}, r)
	r, err = decodeRecord(9, encodeRecord(nil, 8, 1, from, 42, nil))
	require.NoError(t, err)
	require.Equal(t, uint64(8), r.Seq, "the record's own Seq")
	tm, n, ok := recordTimeN(b)
	require.True(t, ok)
	require.Equal(t, int64(1234567890123), tm)
	require.Equal(t, uint64(42), n)
	_, err = decodeRecord(1, b[:20])
	require.Error(t, err)
	require.Len(t, pipeKey("x"), 32)
	require.NotEqual(t, senderKey(sender("a", 1)), senderKey(sender("a", 2)))
}

// TestLogContract runs the contract tests on one 3-server cluster, each
// on its own pipelines, with two logs as two hubs.
func TestLogContract(t *testing.T) {
	c := startCluster(t, 3)
	a, b := c.openLog(0), c.openLog(1)
	t.Run("CreateRace", func(t *testing.T) { testCreateRace(t, a, b) })
	t.Run("Unknown", func(t *testing.T) { testUnknown(t, a) })
	t.Run("DedupAcrossLogs", func(t *testing.T) { testDedupAcrossLogs(t, a, b) })
	t.Run("DedupRace", func(t *testing.T) { testDedupRace(t, a, b) })
	t.Run("ReadPaging", func(t *testing.T) { testReadPaging(t, a, b) })
	t.Run("TimesNeverGoBack", func(t *testing.T) { testTimes(t, c) })
	t.Run("Watch", func(t *testing.T) { testWatch(t, a, b) })
	t.Run("SetMembers", func(t *testing.T) { testSetMembers(t, a, b) })
	t.Run("TransientWindow", func(t *testing.T) { testTransientWindow(t, c) })
	t.Run("Retention", func(t *testing.T) { testRetention(t, c) })
}

func testCreateRace(t *testing.T, a, b *Log) {
	ctx := testCtx(t, 60*time.Second)
	for i := range 5 {
		name := fmt.Sprintf("race/%d", i)
		var wg sync.WaitGroup
		infos := make([]pipes.PipelineInfo, 8)
		errs := make([]error, 8)
		for j := range 8 {
			l := a
			if j%2 == 1 {
				l = b
			}
			wg.Go(func() {
				infos[j], errs[j] = l.Create(ctx, pipes.PipelineSpec{Name: name, Persistent: j%3 != 0, Owner: fmt.Sprint("u", j)})
			})
		}
		wg.Wait()
		for j := range 8 {
			require.NoError(t, errs[j])
			require.Equal(t, infos[0].Epoch, infos[j].Epoch, "one creation wins")
			require.Equal(t, infos[0].PipelineSpec, infos[j].PipelineSpec)
		}
		in, err := b.Info(ctx, name)
		require.NoError(t, err)
		require.Equal(t, infos[0].Epoch, in.Epoch)
		require.Equal(t, uint64(1), in.First)
		require.Equal(t, uint64(0), in.Last)
	}
	ps, err := a.Pipelines(ctx)
	require.NoError(t, err)
	names := map[string]bool{}
	for _, p := range ps {
		names[p.Name] = true
	}
	for i := range 5 {
		require.True(t, names[fmt.Sprintf("race/%d", i)])
	}
	_, err = a.Create(ctx, pipes.PipelineSpec{Name: "bad\x01name"})
	require.ErrorIs(t, err, pipes.ErrBadName)
}

func testUnknown(t *testing.T, a *Log) {
	ctx := testCtx(t, 30*time.Second)
	_, err := a.Info(ctx, "nowhere")
	require.ErrorIs(t, err, pipes.ErrUnknownPipeline)
	_, err = a.Append(ctx, "nowhere", sender("u", 1), entries(1, 1))
	require.ErrorIs(t, err, pipes.ErrUnknownPipeline)
	_, err = a.Read(ctx, "nowhere", 0, 10, 1<<20)
	require.ErrorIs(t, err, pipes.ErrUnknownPipeline)
	_, err = a.SetMembers(ctx, "nowhere", []string{"x"})
	require.ErrorIs(t, err, pipes.ErrUnknownPipeline)
	_, err = a.Append(ctx, "nowhere", sender("u", 1), []pipes.Entry{{N: 2}, {N: 1}})
	require.ErrorIs(t, err, pipes.ErrBadRequest)
}

func testDedupAcrossLogs(t *testing.T, a, b *Log) {
	ctx := testCtx(t, 60*time.Second)
	const name = "dedup"
	_, err := a.Create(ctx, pipes.PipelineSpec{Name: name, Persistent: true})
	require.NoError(t, err)
	alice := sender("alice", 1)
	acks, err := a.Append(ctx, name, alice, entries(1, 3))
	require.NoError(t, err)
	for i, ack := range acks {
		require.Equal(t, uint64(i+1), ack.Seq)
		require.False(t, ack.Dup)
	}
	// The resend through the other hub is a duplicate; the packets after
	// it are appended.
	acks, err = b.Append(ctx, name, alice, entries(2, 5))
	require.NoError(t, err)
	require.True(t, acks[0].Dup)
	require.True(t, acks[1].Dup)
	require.Equal(t, uint64(4), acks[2].Seq)
	require.Equal(t, uint64(5), acks[3].Seq)
	// And back through the first, whose cache is stale.
	acks, err = a.Append(ctx, name, alice, entries(5, 6))
	require.NoError(t, err)
	require.True(t, acks[0].Dup)
	require.Equal(t, uint64(6), acks[1].Seq)
	// Another node of the same user is another sender.
	acks, err = b.Append(ctx, name, sender("alice", 2), entries(1, 1))
	require.NoError(t, err)
	require.Equal(t, uint64(7), acks[0].Seq)
	// A single packet, all duplicates.
	acks, err = b.Append(ctx, name, alice, entries(6, 6))
	require.NoError(t, err)
	require.True(t, acks[0].Dup)
	recs, gaps := readAll(t, ctx, b, name, 0, 100, 1<<20)
	require.Empty(t, gaps)
	require.Len(t, recs, 7)
	for i, r := range recs {
		require.Equal(t, uint64(i+1), r.Seq)
	}
	require.Equal(t, []uint64{1, 2, 3, 4, 5, 6, 1}, nsOf(recs))
	require.Equal(t, "alice", recs[0].Sender.User)
	require.Equal(t, alice.Node, recs[0].Sender.Node)
	require.Equal(t, []byte("packet 4"), recs[3].Data)
}

func nsOf(recs []pipes.Record) []uint64 {
	var ns []uint64
	for _, r := range recs {
		ns = append(ns, r.N)
	}
	return ns
}

// testDedupRace has both logs append the same packets of several senders
// at once, as a node failing over between hubs might: each packet is
// appended exactly once, and each Ack that is not a duplicate names its
// record.
func testDedupRace(t *testing.T, a, b *Log) {
	ctx := testCtx(t, 90*time.Second)
	const name = "dedup-race"
	_, err := a.Create(ctx, pipes.PipelineSpec{Name: name, Persistent: true})
	require.NoError(t, err)
	type appended struct {
		from pipes.Sender
		n    uint64
	}
	var mu sync.Mutex
	bySeq := map[uint64]appended{}
	var wg sync.WaitGroup
	for s := range 3 {
		from := sender("racer", byte(s))
		for _, l := range []*Log{a, b} {
			wg.Go(func() {
				for n := uint64(1); n <= 60; n += 4 {
					es := entries(n, n+3)
					acks, err := l.Append(ctx, name, from, es)
					if !assert.NoError(t, err) {
						return
					}
					mu.Lock()
					for i, ack := range acks {
						if !ack.Dup {
							_, dup := bySeq[ack.Seq]
							assert.False(t, dup, "seq %d acknowledged twice", ack.Seq)
							bySeq[ack.Seq] = appended{from, es[i].N}
						}
					}
					mu.Unlock()
				}
			})
		}
	}
	wg.Wait()
	recs, _ := readAll(t, ctx, a, name, 0, 256, 1<<20)
	require.Len(t, recs, 3*60, "every packet once")
	seen := map[appended]bool{}
	for i, r := range recs {
		require.Equal(t, uint64(i+1), r.Seq)
		k := appended{r.Sender, r.N}
		require.False(t, seen[k], "%v appended twice", k)
		seen[k] = true
		require.Equal(t, k, bySeq[r.Seq], "the ack of seq %d", r.Seq)
	}
	require.Len(t, bySeq, len(recs))
}

func testReadPaging(t *testing.T, a, b *Log) {
	ctx := testCtx(t, 60*time.Second)
	const name = "paging"
	_, err := a.Create(ctx, pipes.PipelineSpec{Name: name, Persistent: true})
	require.NoError(t, err)
	from := sender("pager", 1)
	for n := uint64(1); n <= 1000; n += 250 {
		_, err := a.Append(ctx, name, from, entries(n, n+249))
		require.NoError(t, err)
	}
	// max bounds the count.
	res, err := b.Read(ctx, name, 0, 100, 1<<20)
	require.NoError(t, err)
	require.Len(t, res.Records, 100)
	require.Equal(t, uint64(1000), res.Last)
	require.Nil(t, res.Gap)
	// maxBytes bounds the bytes beyond the first.
	one := len("packet 100") + len("pager") + recordOverhead
	res, err = b.Read(ctx, name, 99, 100, 5*one)
	require.NoError(t, err)
	require.Len(t, res.Records, 5)
	require.Equal(t, uint64(100), res.Records[0].Seq)
	res, err = b.Read(ctx, name, 99, 100, 1)
	require.NoError(t, err)
	require.Len(t, res.Records, 1, "the first is always sent")
	// Paging through all of it.
	recs, gaps := readAll(t, ctx, b, name, 0, 64, 2000)
	require.Empty(t, gaps)
	require.Len(t, recs, 1000)
	for i, r := range recs {
		require.Equal(t, uint64(i+1), r.Seq)
		require.Equal(t, uint64(i+1), r.N)
	}
	// Nothing after the end.
	res, err = a.Read(ctx, name, 1000, 10, 1<<20)
	require.NoError(t, err)
	require.Empty(t, res.Records)
	require.Nil(t, res.Gap)
	require.Equal(t, uint64(1000), res.Last)
}

// testTimes appends from two logs whose clocks disagree by an hour: the
// record times never go back.
func testTimes(t *testing.T, c *cluster) {
	ctx := testCtx(t, 60*time.Second)
	a, b := c.openLog(0), c.openLog(2)
	b.now = func() time.Time { return time.Now().Add(-time.Hour) }
	const name = "times"
	_, err := a.Create(ctx, pipes.PipelineSpec{Name: name, Persistent: true})
	require.NoError(t, err)
	for i := range 10 {
		l := a
		if i%2 == 1 {
			l = b
		}
		acks, err := l.Append(ctx, name, sender("clock", byte(i)), entries(1, 3))
		require.NoError(t, err)
		require.Len(t, acks, 3)
	}
	recs, _ := readAll(t, ctx, a, name, 0, 100, 1<<20)
	require.Len(t, recs, 30)
	for i := 1; i < len(recs); i++ {
		require.False(t, recs[i].Time.Before(recs[i-1].Time), "record %d's time goes back", recs[i].Seq)
	}
}

func testWatch(t *testing.T, a, b *Log) {
	ctx := testCtx(t, 60*time.Second)
	type ev struct {
		c pipes.Change
	}
	got := make(chan pipes.Change, 1000)
	var calls atomic.Int64
	stop := b.Watch(func(c pipes.Change) {
		calls.Add(1)
		select {
		case got <- c:
		default:
		}
	})
	wait := func(want pipes.Change) {
		t.Helper()
		for {
			select {
			case c := <-got:
				if c == want {
					return
				}
			case <-ctx.Done():
				t.Fatalf("no change %+v", want)
			}
		}
	}
	const name = "watched"
	_, err := a.Create(ctx, pipes.PipelineSpec{Name: name, Persistent: true})
	require.NoError(t, err)
	wait(pipes.Change{Pipeline: name, Meta: true})
	_, err = a.Append(ctx, name, sender("w", 1), entries(1, 1))
	require.NoError(t, err)
	wait(pipes.Change{Pipeline: name})
	_, err = a.SetMembers(ctx, name, []string{"w"})
	require.NoError(t, err)
	wait(pipes.Change{Pipeline: name, Meta: true})
	// A transient pipeline's packets too.
	_, err = a.Create(ctx, pipes.PipelineSpec{Name: "watched-t"})
	require.NoError(t, err)
	_, err = a.Append(ctx, "watched-t", sender("w", 1), entries(1, 1))
	require.NoError(t, err)
	wait(pipes.Change{Pipeline: "watched-t"})
	stop()
	n := calls.Load()
	_, err = a.Append(ctx, name, sender("w", 1), entries(2, 2))
	require.NoError(t, err)
	time.Sleep(100 * time.Millisecond)
	require.Equal(t, n, calls.Load(), "no call after stop")
	stop()
}

func testSetMembers(t *testing.T, a, b *Log) {
	ctx := testCtx(t, 60*time.Second)
	const name = "members"
	_, err := a.Create(ctx, pipes.PipelineSpec{Name: name, Persistent: true, Encrypted: true, Owner: "o", Members: []string{"o"}})
	require.NoError(t, err)
	var wg sync.WaitGroup
	for i := range 6 {
		l := a
		if i%2 == 1 {
			l = b
		}
		wg.Go(func() {
			_, err := l.SetMembers(ctx, name, []string{"o", fmt.Sprint("m", i)})
			assert.NoError(t, err)
		})
	}
	wg.Wait()
	in, err := b.Info(ctx, name)
	require.NoError(t, err)
	require.Len(t, in.Members, 2)
	require.True(t, in.Encrypted)
	require.Equal(t, "o", in.Owner)
	in2, err := a.SetMembers(ctx, name, []string{"o", "x", "y"})
	require.NoError(t, err)
	require.Equal(t, []string{"o", "x", "y"}, in2.Members)
	in, err = b.Info(ctx, name)
	require.NoError(t, err)
	require.Equal(t, []string{"o", "x", "y"}, in.Members)
	require.Equal(t, in2.Epoch, in.Epoch)
}

func testTransientWindow(t *testing.T, c *cluster) {
	ctx := testCtx(t, 60*time.Second)
	a := c.openLog(0, func(cfg *Config) { cfg.TransientWindow = 10 })
	const name = "window"
	in, err := a.Create(ctx, pipes.PipelineSpec{Name: name})
	require.NoError(t, err)
	require.False(t, in.Persistent)
	from := sender("t", 1)
	for n := uint64(1); n <= 25; n++ {
		acks, err := a.Append(ctx, name, from, entries(n, n))
		require.NoError(t, err)
		require.Equal(t, n, acks[0].Seq)
	}
	acks, err := a.Append(ctx, name, from, entries(26, 30))
	require.NoError(t, err)
	require.Equal(t, uint64(30), acks[4].Seq)
	res, err := a.Read(ctx, name, 5, 100, 1<<20)
	require.NoError(t, err)
	require.Equal(t, &pipes.Gap{Pipeline: name, From: 6, To: 20, Reason: pipes.GapOverrun}, res.Gap)
	require.Len(t, res.Records, 10)
	require.Equal(t, uint64(21), res.Records[0].Seq)
	require.Equal(t, uint64(30), res.Last)
	res, err = a.Read(ctx, name, 25, 100, 1<<20)
	require.NoError(t, err)
	require.Nil(t, res.Gap)
	require.Len(t, res.Records, 5)
}

func testRetention(t *testing.T, c *cluster) {
	ctx := testCtx(t, 60*time.Second)
	a := c.openLog(0, func(cfg *Config) { cfg.Prefix = "RET"; cfg.Retention = pipes.Retention{MaxPackets: 10} })
	b := c.openLog(1, func(cfg *Config) { cfg.Prefix = "RET"; cfg.Retention = pipes.Retention{MaxPackets: 10} })
	const name = "retained"
	_, err := a.Create(ctx, pipes.PipelineSpec{Name: name, Persistent: true})
	require.NoError(t, err)
	early := sender("early", 1)
	_, err = a.Append(ctx, name, early, entries(1, 2))
	require.NoError(t, err)
	_, err = a.Append(ctx, name, sender("late", 1), entries(1, 28))
	require.NoError(t, err)
	res, err := b.Read(ctx, name, 0, 100, 1<<20)
	require.NoError(t, err)
	require.Equal(t, &pipes.Gap{Pipeline: name, From: 1, To: 20, Reason: pipes.GapRetention}, res.Gap)
	require.Len(t, res.Records, 10)
	require.Equal(t, uint64(21), res.Records[0].Seq)
	in, err := b.Info(ctx, name)
	require.NoError(t, err)
	require.Equal(t, uint64(21), in.First)
	require.Equal(t, uint64(30), in.Last)
	// early's records are gone; its mark still knows them, so a resend
	// through a hub that never saw early is a duplicate.
	select {
	case <-a.js.PublishAsyncComplete():
	case <-ctx.Done():
		t.Fatal("marks not written")
	}
	acks, err := b.Append(ctx, name, early, entries(2, 3))
	require.NoError(t, err)
	require.True(t, acks[0].Dup)
	require.Equal(t, uint64(31), acks[1].Seq)
	// MaxAge: everything goes; a reader is told of it all as a gap.
	d := c.openLog(2, func(cfg *Config) { cfg.Prefix = "AGE"; cfg.Retention = pipes.Retention{MaxAge: 500 * time.Millisecond} })
	_, err = d.Create(ctx, pipes.PipelineSpec{Name: name, Persistent: true})
	require.NoError(t, err)
	_, err = d.Append(ctx, name, early, entries(1, 5))
	require.NoError(t, err)
	require.Eventually(t, func() bool {
		res, err := d.Read(ctx, name, 0, 100, 1<<20)
		require.NoError(t, err)
		return len(res.Records) == 0 && res.Gap != nil
	}, 30*time.Second, 50*time.Millisecond)
	res, err = d.Read(ctx, name, 2, 100, 1<<20)
	require.NoError(t, err)
	require.Equal(t, &pipes.Gap{Pipeline: name, From: 3, To: 5, Reason: pipes.GapRetention}, res.Gap)
	acks, err = d.Append(ctx, name, early, entries(5, 6))
	require.NoError(t, err)
	require.True(t, acks[0].Dup)
	require.Equal(t, uint64(6), acks[1].Seq)
}

// TestFull fills a single server's small store: the append fails with an
// error matching pipes.ErrFull, and appends nothing.
func TestFull(t *testing.T) {
	c := startCluster(t, 1)
	c.stop(0)
	c.opts[0].JetStreamMaxStore = 4 << 20
	c.start(0)
	c.waitReady()
	a := c.openLog(0, func(cfg *Config) { cfg.Replicas = 1 })
	ctx := testCtx(t, 60*time.Second)
	const name = "full"
	_, err := a.Create(ctx, pipes.PipelineSpec{Name: name, Persistent: true})
	require.NoError(t, err)
	data := make([]byte, 200<<10)
	var full error
	var last uint64
	for n := uint64(1); n < 100; n++ {
		acks, err := a.Append(ctx, name, sender("f", 1), []pipes.Entry{{N: n, Data: data}})
		if err != nil {
			full = err
			break
		}
		last = acks[0].Seq
	}
	require.Error(t, full, "the store never filled")
	t.Log(full)
	require.ErrorIs(t, full, pipes.ErrFull)
	require.ErrorIs(t, full, pipes.ErrStorage)
	in, err := a.Info(ctx, name)
	require.NoError(t, err)
	require.Equal(t, last, in.Last)
}

var _ = errors.New
var _ = server.Options{}
