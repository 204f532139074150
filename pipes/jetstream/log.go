package jetstream

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bokbok-go/bokbok/pipes"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Log is a pipes.SharedLog on NATS JetStream. Its methods are safe for
// concurrent use.
type Log struct {
	cfg     Config
	nc      *nats.Conn
	ownConn bool
	js      jetstream.JetStream
	meta    jetstream.KeyValue
	marks   jetstream.KeyValue

	mu    sync.Mutex       // guards pipes
	pipes map[string]*pipe // by key

	// ops counts the operations in progress, so that Close waits for
	// them; closed refuses new ones.
	opMu   sync.RWMutex
	closed bool

	now func() time.Time // the clock: time.Now, but for tests

	lostMu sync.Mutex
	lost   chan struct{} // closed when the connection is lost, then replaced

	rd  *reader
	wt  *watchState
	bg  sync.WaitGroup // the log's own goroutines
	end chan struct{}  // closed by Close
}

var _ pipes.SharedLog = (*Log)(nil)

// pipe is what the log knows of one pipeline.
type pipe struct {
	key        string
	name       string
	persistent bool
	epoch      [16]byte
	stream     string
	subjBase   string
	notify     string

	ensured  atomic.Bool // the stream is known to exist
	retained atomic.Bool // the stream removes records (limits are set)

	known atomic.Uint64 // the highest Seq known to be stored

	// The writer's state: appends of this log to the pipeline take turns.
	wmu      sync.Mutex
	tailOK   bool   // tailSeq and tailTime are believed current
	tailSeq  uint64 // the stream's last Seq
	tailTime int64  // the time of the stream's last record
	senders  map[string]senderState
}

// senderState is where a sender stands in a pipeline: the stream
// sequence of its last record (0 if none is held) and the highest N
// appended for it.
type senderState struct {
	seq uint64
	n   uint64
}

// maxSenderCache bounds the senders a pipe remembers in memory (they are
// read again from the stream when forgotten).
const maxSenderCache = 4096

// Open connects to JetStream and makes the log's buckets if they are
// missing.
func Open(ctx context.Context, cfg Config) (*Log, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	l := &Log{cfg: cfg, nc: cfg.Conn, pipes: map[string]*pipe{}, end: make(chan struct{}), now: time.Now, lost: make(chan struct{})}
	if l.nc == nil {
		opts := append([]nats.Option{nats.MaxReconnects(-1), nats.Name("pipes-jetstream")}, cfg.ConnOptions...)
		nc, err := nats.Connect(cfg.URL, opts...)
		if err != nil {
			return nil, fmt.Errorf("%w: jetstream: connect %s: %w", pipes.ErrStorage, cfg.URL, err)
		}
		l.nc, l.ownConn = nc, true
	}
	fail := func(err error) (*Log, error) {
		l.shutdown()
		return nil, err
	}
	if mp := l.nc.MaxPayload(); mp > 0 && int64(cfg.MaxPacketSize+recordRoom) > mp {
		return fail(fmt.Errorf("jetstream: the server's max_payload %d cannot carry a packet of MaxPacketSize %d", mp, cfg.MaxPacketSize))
	}
	js, err := jetstream.New(l.nc)
	if err != nil {
		return fail(storageErr("open", err))
	}
	l.js = js
	octx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	if l.meta, err = l.bucket(octx, cfg.metaBucket()); err != nil {
		return fail(storageErr("open meta bucket", err))
	}
	if r := cfg.Retention; r != (pipes.Retention{}) {
		if l.marks, err = l.bucket(octx, cfg.marksBucket()); err != nil {
			return fail(storageErr("open marks bucket", err))
		}
	}
	if l.rd, err = newReader(l.nc); err != nil {
		return fail(storageErr("open", err))
	}
	if l.wt, err = l.startWatch(octx); err != nil {
		return fail(storageErr("watch", err))
	}
	return l, nil
}

// bucket binds a KV bucket, creating its stream if missing. The stream
// is made as nats.go makes a bucket's, but without direct gets, so that
// every read is answered by the stream's leader: a Create that found the
// key taken then always finds the pipeline.
func (l *Log) bucket(ctx context.Context, bucket string) (jetstream.KeyValue, error) {
	scfg := jetstream.StreamConfig{
		Name:              "KV_" + bucket,
		Description:       "pipes: " + bucket,
		Subjects:          []string{"$KV." + bucket + ".>"},
		MaxMsgsPerSubject: 1,
		MaxBytes:          -1,
		MaxMsgs:           -1,
		MaxMsgSize:        -1,
		MaxConsumers:      -1,
		Storage:           jetstream.FileStorage,
		Replicas:          l.cfg.Replicas,
		AllowRollup:       true,
		DenyDelete:        true,
		Duplicates:        2 * time.Minute,
		Discard:           jetstream.DiscardNew,
		AllowDirect:       false,
	}
	if _, err := l.js.CreateStream(ctx, scfg); err != nil && !errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
		return nil, err
	}
	return l.js.KeyValue(ctx, bucket)
}

// connLost returns a channel closed when the connection is next lost.
func (l *Log) connLost() <-chan struct{} {
	l.lostMu.Lock()
	defer l.lostMu.Unlock()
	return l.lost
}

// lostConn closes the channels connLost returned.
func (l *Log) lostConn() {
	l.lostMu.Lock()
	defer l.lostMu.Unlock()
	close(l.lost)
	l.lost = make(chan struct{})
}

// enter begins an operation: ErrClosed once Close began.
func (l *Log) enter() error {
	l.opMu.RLock()
	if l.closed {
		l.opMu.RUnlock()
		return pipes.ErrClosed
	}
	return nil
}

func (l *Log) leave() { l.opMu.RUnlock() }

// opCtx bounds an operation by the configured Timeout.
func (l *Log) opCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, l.cfg.Timeout)
}

// Close waits for the operations in progress, stops watching and closes
// what Open made (not a Conn it was given).
func (l *Log) Close() error {
	l.opMu.Lock()
	if l.closed {
		l.opMu.Unlock()
		return nil
	}
	l.closed = true
	l.opMu.Unlock()
	l.shutdown()
	return nil
}

func (l *Log) shutdown() {
	select {
	case <-l.end:
	default:
		close(l.end)
	}
	if l.wt != nil {
		l.wt.stop(l)
	}
	if l.rd != nil {
		l.rd.close()
	}
	l.bg.Wait()
	if l.js != nil {
		select {
		case <-l.js.PublishAsyncComplete():
		case <-time.After(l.cfg.Timeout):
		}
	}
	if l.ownConn {
		l.nc.Close()
	}
}

// metaGet reads a pipeline's meta from the bucket's leader.
func (l *Log) metaGet(ctx context.Context, key string) (*meta, uint64, error) {
	var e jetstream.KeyValueEntry
	err := l.retry(ctx, func(ctx context.Context) (err error) {
		e, err = l.meta.Get(ctx, key)
		return err
	})
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, 0, pipes.ErrUnknownPipeline
	}
	if err != nil {
		return nil, 0, err
	}
	m, err := decodeMeta(e.Value())
	if err != nil {
		return nil, 0, fmt.Errorf("pipeline meta %s: %w", key, err)
	}
	return m, e.Revision(), nil
}

// pipeOf returns the pipe of a meta, made or updated.
func (l *Log) pipeOf(key string, m *meta) *pipe {
	l.mu.Lock()
	defer l.mu.Unlock()
	ep := m.epoch()
	if p := l.pipes[key]; p != nil && p.epoch == ep && p.name == m.Name {
		return p
	}
	p := &pipe{key: key, name: m.Name, persistent: m.Persistent, epoch: ep,
		stream: l.cfg.streamName(key, ep), subjBase: l.cfg.subjectBase(key, ep), notify: l.cfg.notifySubject(key),
		senders: map[string]senderState{}}
	l.pipes[key] = p
	return p
}

func (l *Log) cached(key string) *pipe {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.pipes[key]
}

// pipe returns the pipeline named name, its stream made if missing.
func (l *Log) pipe(ctx context.Context, name string) (*pipe, error) {
	key := pipeKey(name)
	p := l.cached(key)
	if p == nil || p.name != name {
		m, _, err := l.metaGet(ctx, key)
		if err != nil {
			return nil, err
		}
		if m.Name != name {
			return nil, fmt.Errorf("%w: %q", pipes.ErrUnknownPipeline, name)
		}
		p = l.pipeOf(key, m)
	}
	if !p.ensured.Load() {
		if _, err := l.ensure(ctx, p); err != nil {
			return nil, err
		}
	}
	return p, nil
}

// streamConfig is the configuration of a pipeline's stream.
func (l *Log) streamConfig(p *pipe) jetstream.StreamConfig {
	desc := fmt.Sprintf("pipes pipeline %q", p.name)
	if len(desc) > 1024 {
		desc = desc[:1024]
	}
	sc := jetstream.StreamConfig{
		Name:               p.stream,
		Description:        desc,
		Subjects:           []string{p.subjBase + "*"},
		Retention:          jetstream.LimitsPolicy,
		Discard:            jetstream.DiscardOld,
		MaxMsgs:            -1,
		MaxBytes:           -1,
		MaxMsgSize:         int32(l.cfg.MaxPacketSize + recordRoom),
		MaxConsumers:       -1,
		Replicas:           l.cfg.Replicas,
		Storage:            jetstream.FileStorage,
		AllowDirect:        true,
		AllowAtomicPublish: true,
		DenyDelete:         true,
		DenyPurge:          true,
		RePublish:          &jetstream.RePublish{Source: p.subjBase + "*", Destination: p.notify, HeadersOnly: true},
		Metadata:           map[string]string{"pipes.epoch": hex.EncodeToString(p.epoch[:])},
	}
	if p.persistent {
		r := l.cfg.Retention
		sc.MaxAge = r.MaxAge
		if r.MaxPackets > 0 {
			sc.MaxMsgs = int64(min(r.MaxPackets, 1<<62))
		}
		if r.MaxBytes > 0 {
			sc.MaxBytes = r.MaxBytes
		}
	} else {
		sc.Storage = jetstream.MemoryStorage
		sc.MaxMsgs = int64(l.cfg.TransientWindow)
		sc.MaxBytes = int64(max(l.cfg.TransientBytes, l.cfg.MaxPacketSize+recordRoom))
	}
	if sc.MaxAge > 0 && sc.MaxAge < 2*time.Minute {
		sc.Duplicates = sc.MaxAge
	}
	return sc
}

// ensure makes the pipeline's stream if it is missing and returns its
// state.
func (l *Log) ensure(ctx context.Context, p *pipe) (*jetstream.StreamInfo, error) {
	s, err := l.stream(ctx, p.stream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		err = l.retry(ctx, func(ctx context.Context) (err error) {
			s, err = l.js.CreateStream(ctx, l.streamConfig(p))
			return err
		})
		if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
			s, err = l.stream(ctx, p.stream)
		}
	}
	if err != nil {
		return nil, storageErr("stream "+p.stream, err)
	}
	in := s.CachedInfo()
	c := in.Config
	p.retained.Store(c.MaxAge > 0 || c.MaxMsgs > 0 || c.MaxBytes > 0)
	p.ensured.Store(true)
	p.seen(in.State.LastSeq)
	return in, nil
}

// seen records that Seq seq is stored.
func (p *pipe) seen(seq uint64) {
	for {
		k := p.known.Load()
		if seq <= k || p.known.CompareAndSwap(k, seq) {
			return
		}
	}
}

// firstAttempt and lastAttempt bound how long one request of the
// JetStream API that reads may take before it is sent again (within the
// operation's Timeout): a stream whose leader is being elected, or that
// is being created, does not answer.
const (
	firstAttempt = 250 * time.Millisecond
	lastAttempt  = 2 * time.Second
)

// retry calls f until it succeeds, fails for good or ctx ends, each call
// bounded by an attempt's time, longer each time.
func (l *Log) retry(ctx context.Context, f func(ctx context.Context) error) error {
	wait := firstAttempt
	for backoff := 5 * time.Millisecond; ; backoff = min(2*backoff, 250*time.Millisecond) {
		actx, cancel := context.WithTimeout(ctx, wait)
		wait = min(2*wait, lastAttempt)
		err := f(actx)
		cancel()
		if err == nil || !isTransient(err) || ctx.Err() != nil || !l.sleep(ctx, backoff) {
			return err
		}
	}
}

// stream returns the stream's info from its leader.
func (l *Log) stream(ctx context.Context, name string) (jetstream.Stream, error) {
	var s jetstream.Stream
	err := l.retry(ctx, func(ctx context.Context) (err error) {
		s, err = l.js.Stream(ctx, name)
		return err
	})
	return s, err
}

// streamState returns the stream's state from its leader.
func (l *Log) streamState(ctx context.Context, p *pipe) (jetstream.StreamState, error) {
	s, err := l.stream(ctx, p.stream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		p.ensured.Store(false)
		var in *jetstream.StreamInfo
		if in, err = l.ensure(ctx, p); err == nil {
			return in.State, nil
		}
	}
	if err != nil {
		return jetstream.StreamState{}, storageErr("stream info", err)
	}
	st := s.CachedInfo().State
	p.seen(st.LastSeq)
	return st, nil
}

func infoOf(m *meta, st jetstream.StreamState) pipes.PipelineInfo {
	in := pipes.PipelineInfo{PipelineSpec: m.spec(), Epoch: m.epoch(), First: st.FirstSeq, Last: st.LastSeq}
	if st.Msgs == 0 || in.First == 0 {
		in.First = in.Last + 1
	}
	return in
}

// Pipelines lists the pipelines of the meta bucket.
func (l *Log) Pipelines(ctx context.Context) ([]pipes.PipelineInfo, error) {
	if err := l.enter(); err != nil {
		return nil, err
	}
	defer l.leave()
	ctx, cancel := l.opCtx(ctx)
	defer cancel()
	w, err := l.meta.WatchAll(ctx, jetstream.IgnoreDeletes())
	if err != nil {
		return nil, storageErr("list pipelines", err)
	}
	defer w.Stop()
	var metas []*meta
	var keys []string
	for done := false; !done; {
		select {
		case e, ok := <-w.Updates():
			if !ok {
				return nil, storageErr("list pipelines", errors.New("watcher stopped"))
			}
			if e == nil {
				done = true
				break
			}
			m, err := decodeMeta(e.Value())
			if err != nil {
				l.cfg.Logger.Warn("pipes/jetstream: bad pipeline meta", "key", e.Key(), "err", err)
				continue
			}
			metas, keys = append(metas, m), append(keys, e.Key())
		case <-ctx.Done():
			return nil, storageErr("list pipelines", ctx.Err())
		}
	}
	states := map[string]jetstream.StreamState{}
	lister := l.js.ListStreams(ctx, jetstream.WithStreamListSubject(l.cfg.Prefix+".p.>"))
	for in := range lister.Info() {
		states[in.Config.Name] = in.State
	}
	if err := lister.Err(); err != nil && !errors.Is(err, jetstream.ErrEndOfData) {
		return nil, storageErr("list streams", err)
	}
	out := make([]pipes.PipelineInfo, 0, len(metas))
	for i, m := range metas {
		p := l.pipeOf(keys[i], m)
		st, ok := states[p.stream]
		if !ok {
			st = jetstream.StreamState{FirstSeq: 1}
		}
		p.seen(st.LastSeq)
		out = append(out, infoOf(m, st))
	}
	return out, nil
}

// Info describes one pipeline: its meta from the bucket's leader, First
// and Last from its stream's leader.
func (l *Log) Info(ctx context.Context, name string) (pipes.PipelineInfo, error) {
	if err := l.enter(); err != nil {
		return pipes.PipelineInfo{}, err
	}
	defer l.leave()
	ctx, cancel := l.opCtx(ctx)
	defer cancel()
	return l.info(ctx, name)
}

func (l *Log) info(ctx context.Context, name string) (pipes.PipelineInfo, error) {
	key := pipeKey(name)
	m, _, err := l.metaGet(ctx, key)
	if err != nil {
		return pipes.PipelineInfo{}, storageErr("read meta", err)
	}
	if m.Name != name {
		return pipes.PipelineInfo{}, fmt.Errorf("%w: %q", pipes.ErrUnknownPipeline, name)
	}
	p := l.pipeOf(key, m)
	st, err := l.streamState(ctx, p)
	if err != nil {
		return pipes.PipelineInfo{}, err
	}
	return infoOf(m, st), nil
}

// Create records a new pipeline, or returns the existing one. Of two
// hubs creating the same name at once, the bucket's leader takes one
// creation (the key is created only if absent); the other reads it.
func (l *Log) Create(ctx context.Context, spec pipes.PipelineSpec) (pipes.PipelineInfo, error) {
	if err := l.enter(); err != nil {
		return pipes.PipelineInfo{}, err
	}
	defer l.leave()
	if err := checkName(spec.Name); err != nil {
		return pipes.PipelineInfo{}, err
	}
	ctx, cancel := l.opCtx(ctx)
	defer cancel()
	key := pipeKey(spec.Name)
	for backoff := time.Millisecond; ; backoff = min(2*backoff, 50*time.Millisecond) {
		if in, err := l.info(ctx, spec.Name); err == nil || !errors.Is(err, pipes.ErrUnknownPipeline) {
			return in, err
		}
		var ep [16]byte
		rand.Read(ep[:])
		m := &meta{V: 1, Name: spec.Name, Persistent: spec.Persistent, Encrypted: spec.Encrypted, Owner: spec.Owner,
			Members: append([]string(nil), spec.Members...), Epoch: hex.EncodeToString(ep[:]), Created: time.Now().UnixNano()}
		b, err := json.Marshal(m)
		if err != nil {
			return pipes.PipelineInfo{}, err
		}
		_, err = l.meta.Create(ctx, key, b)
		if errors.Is(err, jetstream.ErrKeyExists) && l.sleep(ctx, backoff) {
			// Another hub created it: read theirs. The bucket's leader
			// refuses a creation against one still being replicated,
			// which a read does not show yet: read again until it does.
			continue
		}
		if err != nil {
			return pipes.PipelineInfo{}, storageErr("create pipeline", err)
		}
		p := l.pipeOf(key, m)
		st, err := l.streamState(ctx, p)
		if err != nil {
			return pipes.PipelineInfo{}, err
		}
		l.cfg.Logger.Info("pipes/jetstream: pipeline created", "pipeline", spec.Name, "stream", p.stream)
		return infoOf(m, st), nil
	}
}

// SetMembers replaces a pipeline's members, by compare-and-set on its
// meta.
func (l *Log) SetMembers(ctx context.Context, name string, members []string) (pipes.PipelineInfo, error) {
	if err := l.enter(); err != nil {
		return pipes.PipelineInfo{}, err
	}
	defer l.leave()
	ctx, cancel := l.opCtx(ctx)
	defer cancel()
	key := pipeKey(name)
	for {
		m, rev, err := l.metaGet(ctx, key)
		if err != nil {
			return pipes.PipelineInfo{}, storageErr("read meta", err)
		}
		if m.Name != name {
			return pipes.PipelineInfo{}, fmt.Errorf("%w: %q", pipes.ErrUnknownPipeline, name)
		}
		m.Members = append([]string(nil), members...)
		b, err := json.Marshal(m)
		if err != nil {
			return pipes.PipelineInfo{}, err
		}
		if _, err = l.meta.Update(ctx, key, b, rev); err != nil {
			if (isConflictJS(err) || isTransient(err)) && l.sleep(ctx, time.Millisecond) {
				continue
			}
			return pipes.PipelineInfo{}, storageErr("update meta", err)
		}
		p := l.pipeOf(key, m)
		st, err := l.streamState(ctx, p)
		if err != nil {
			return pipes.PipelineInfo{}, err
		}
		return infoOf(m, st), nil
	}
}

// isConflictJS reports a wrong-revision error of nats.go's KV.
func isConflictJS(err error) bool {
	var je jetstream.JetStreamError
	if !errors.As(err, &je) || je.APIError() == nil {
		return false
	}
	c := je.APIError().ErrorCode
	return c == errCodeWrongLastSeq || c == errCodeWrongLastSeqConstant
}

// Trim does nothing: JetStream applies the retention itself, MaxAge
// included, as records age.
func (l *Log) Trim(ctx context.Context, now time.Time) error { return nil }
