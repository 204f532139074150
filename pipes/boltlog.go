package pipes

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/vmihailenco/msgpack/v5"
	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// BoltLogConfig configures the embedded log.
type BoltLogConfig struct {
	// Path is the database file; it is created if missing. One process at
	// a time may hold it: another waits up to a second, then fails with an
	// error matching ErrInUse.
	Path string

	// Retention bounds each persistent pipeline's log.
	Retention Retention

	// MaxSenders bounds the sender entries (user and node) each pipeline
	// remembers in order to drop duplicates. When a new sender would
	// exceed it, the one that appended least recently is forgotten: a
	// packet it sends again after that, having lost the hub's
	// acknowledgement, is appended twice. Default DefaultMaxSenders.
	MaxSenders int

	// MaxSize, if positive, bounds the database file; appends that would
	// grow it further fail with an error matching ErrFull.
	MaxSize int

	// NoSync skips fsync: faster, and an acknowledged packet can be lost if
	// the machine (not only the process) stops. For tests and benchmarks.
	NoSync bool
}

// DefaultMaxSenders is the default of BoltLogConfig.MaxSenders.
const DefaultMaxSenders = 4096

// boltLog is the embedded Log: one bbolt file. Bucket "pipelines" maps a
// name to its meta; bucket "log/NAME" maps a big-endian Seq to a record;
// bucket "senders/NAME" maps user, 0, node to the highest N appended and
// when.
type boltLog struct {
	db  *bolt.DB
	cfg BoltLogConfig
	w   *committer
}

var bucketPipelines = []byte("pipelines")

type pipelineMeta struct {
	Persistent bool     `msgpack:"persistent"`
	Epoch      []byte   `msgpack:"epoch"`
	Created    int64    `msgpack:"created"`
	First      uint64   `msgpack:"first"`
	Last       uint64   `msgpack:"last"`
	Count      uint64   `msgpack:"count"`
	Bytes      int64    `msgpack:"bytes"`
	Senders    int      `msgpack:"senders"`
	LastTime   int64    `msgpack:"last_time"` // the time of the last record: times never go back
	Encrypted  bool     `msgpack:"encrypted,omitempty"`
	Owner      string   `msgpack:"owner,omitempty"`
	Members    []string `msgpack:"members,omitempty"`
}

func (m *pipelineMeta) info(name string) PipelineInfo {
	in := PipelineInfo{PipelineSpec: PipelineSpec{Name: name, Persistent: m.Persistent, Encrypted: m.Encrypted, Owner: m.Owner, Members: m.Members}, First: m.First, Last: m.Last}
	copy(in.Epoch[:], m.Epoch)
	return in
}

// OpenBoltLog opens (or creates) the embedded log at cfg.Path.
func OpenBoltLog(cfg BoltLogConfig) (Log, error) {
	if cfg.MaxSenders <= 0 {
		cfg.MaxSenders = DefaultMaxSenders
	}
	db, err := openBolt(cfg.Path, cfg.MaxSize, cfg.NoSync)
	if err != nil {
		return nil, err
	}
	l := &boltLog{db: db, cfg: cfg}
	if err := db.Update(func(tx *bolt.Tx) error {
		_, err := tx.CreateBucketIfNotExists(bucketPipelines)
		return err
	}); err != nil {
		db.Close()
		return nil, storageErr(cfg.Path, "open", err)
	}
	l.w = newCommitter(db, cfg.Path)
	if err := l.Trim(context.Background(), time.Now()); err != nil {
		l.Close()
		return nil, err
	}
	return l, nil
}

// openBolt opens a database file owned by this process. A database so
// damaged that opening it panics is reported as a *StorageError (its file
// then stays open, and locked, until the process exits). The freelist is
// kept in the file (bbolt's NoFreelistSync would be faster, but rebuilds
// it at open on a goroutine of bbolt's own, where a damaged page panics
// beyond recovery).
func openBolt(path string, maxSize int, noSync bool) (db *bolt.DB, err error) {
	defer func() {
		if p := recover(); p != nil {
			db, err = nil, &StorageError{Path: path, Op: "open", Err: fmt.Errorf("database corrupt: %v", p)}
		}
	}()
	db, err = bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second, NoSync: noSync, MaxSize: maxSize, FreelistType: bolt.FreelistMapType})
	if errors.Is(err, berrors.ErrTimeout) {
		return nil, &StorageError{Path: path, Op: "open", Err: fmt.Errorf("%w (%v)", ErrInUse, err)}
	}
	if err != nil {
		return nil, &StorageError{Path: path, Op: "open", Err: err}
	}
	return db, nil
}

func logBucket(name string) []byte     { return append([]byte("log/"), name...) }
func sendersBucket(name string) []byte { return append([]byte("senders/"), name...) }

func seqKey(seq uint64) []byte {
	var k [8]byte
	binary.BigEndian.PutUint64(k[:], seq)
	return k[:]
}

func getMeta(tx *bolt.Tx, name string) (*pipelineMeta, error) {
	v := tx.Bucket(bucketPipelines).Get([]byte(name))
	if v == nil {
		return nil, ErrUnknownPipeline
	}
	var m pipelineMeta
	if err := msgpack.Unmarshal(v, &m); err != nil {
		return nil, fmt.Errorf("pipeline %q: bad meta: %w", name, err)
	}
	return &m, nil
}

func putMeta(tx *bolt.Tx, name string, m *pipelineMeta) error {
	b, err := msgpack.Marshal(m)
	if err != nil {
		return err
	}
	return tx.Bucket(bucketPipelines).Put([]byte(name), b)
}

func (l *boltLog) Pipelines(ctx context.Context) ([]PipelineInfo, error) {
	var out []PipelineInfo
	err := view(l.db, l.cfg.Path, func(tx *bolt.Tx) error {
		return tx.Bucket(bucketPipelines).ForEach(func(k, v []byte) error {
			var m pipelineMeta
			if err := msgpack.Unmarshal(v, &m); err != nil {
				return fmt.Errorf("pipeline %q: bad meta: %w", k, err)
			}
			out = append(out, m.info(string(k)))
			return nil
		})
	})
	return out, storageErr(l.cfg.Path, "read", err)
}

func (l *boltLog) Info(ctx context.Context, name string) (PipelineInfo, error) {
	var info PipelineInfo
	err := view(l.db, l.cfg.Path, func(tx *bolt.Tx) error {
		m, err := getMeta(tx, name)
		if err == nil {
			info = m.info(name)
		}
		return err
	})
	return info, storageErr(l.cfg.Path, "read", err)
}

func (l *boltLog) Create(ctx context.Context, spec PipelineSpec) (PipelineInfo, error) {
	name, persistent := spec.Name, spec.Persistent
	var info PipelineInfo
	err := l.w.write(func(tx *bolt.Tx) error {
		if m, err := getMeta(tx, name); err == nil {
			info = m.info(name)
			return nil
		} else if !errors.Is(err, ErrUnknownPipeline) {
			return err
		}
		m := &pipelineMeta{Persistent: persistent, Encrypted: spec.Encrypted, Owner: spec.Owner, Members: spec.Members, Epoch: make([]byte, 16), Created: time.Now().UnixNano(), First: 1}
		rand.Read(m.Epoch)
		if persistent {
			if _, err := tx.CreateBucketIfNotExists(logBucket(name)); err != nil {
				return err
			}
			if _, err := tx.CreateBucketIfNotExists(sendersBucket(name)); err != nil {
				return err
			}
		}
		info = m.info(name)
		return putMeta(tx, name, m)
	})
	return info, err
}

func (l *boltLog) SetMembers(ctx context.Context, name string, members []string) (PipelineInfo, error) {
	var info PipelineInfo
	err := l.w.write(func(tx *bolt.Tx) error {
		m, err := getMeta(tx, name)
		if err != nil {
			return err
		}
		m.Members = members
		info = m.info(name)
		return putMeta(tx, name, m)
	})
	return info, err
}

func senderKey(s Sender) []byte {
	k := make([]byte, 0, len(s.User)+1+len(s.Node))
	k = append(k, s.User...)
	k = append(k, 0)
	return append(k, s.Node[:]...)
}

func (l *boltLog) Append(ctx context.Context, pipeline string, from Sender, entries []Entry) ([]Ack, error) {
	for i := 1; i < len(entries); i++ {
		if entries[i].N <= entries[i-1].N {
			return nil, fmt.Errorf("%w: packet numbers must increase", ErrBadRequest)
		}
	}
	var acks []Ack
	err := l.w.write(func(tx *bolt.Tx) error {
		acks = acks[:0]
		m, err := getMeta(tx, pipeline)
		if err != nil {
			return err
		}
		if !m.Persistent {
			return ErrKindMismatch
		}
		logB, sendB := tx.Bucket(logBucket(pipeline)), tx.Bucket(sendersBucket(pipeline))
		if logB == nil || sendB == nil {
			return fmt.Errorf("pipeline %q: buckets missing", pipeline)
		}
		key := senderKey(from)
		var hwm uint64
		known := false
		if v := sendB.Get(key); len(v) >= 8 {
			hwm, known = binary.BigEndian.Uint64(v), true
		}
		// Times never go back, even when the clock does, so that a log's
		// times are sorted and a time range can be found by bisection.
		now := time.Now()
		if last := time.Unix(0, m.LastTime); now.Before(last) {
			now = last
		}
		appended := false
		for _, e := range entries {
			if e.N <= hwm {
				acks = append(acks, Ack{Dup: true})
				continue
			}
			m.Last++
			rec, err := encodeRecord(&storedPacket{Seq: m.Last, Time: now.UnixNano(), Sender: from.User, Node: from.Node[:], N: e.N, Data: e.Data})
			if err != nil {
				return err
			}
			if err := logB.Put(seqKey(m.Last), rec); err != nil {
				return err
			}
			m.Count++
			m.Bytes += int64(len(e.Data))
			hwm = e.N
			appended = true
			acks = append(acks, Ack{Seq: m.Last, Time: now})
		}
		if !appended {
			return nil
		}
		m.LastTime = now.UnixNano()
		if !known {
			if m.Senders >= l.cfg.MaxSenders {
				forgot, err := forgetOldestSender(sendB)
				if err != nil {
					return err
				}
				if forgot {
					m.Senders--
				}
			}
			m.Senders++
		}
		var v [16]byte
		binary.BigEndian.PutUint64(v[:8], hwm)
		binary.BigEndian.PutUint64(v[8:], uint64(now.UnixNano()))
		if err := sendB.Put(key, v[:]); err != nil {
			return err
		}
		if err := l.retain(logB, m, time.Time{}); err != nil {
			return err
		}
		return putMeta(tx, pipeline, m)
	})
	if err != nil {
		return nil, err
	}
	return acks, nil
}

// forgetOldestSender removes the sender that appended least recently.
func forgetOldestSender(b *bolt.Bucket) (bool, error) {
	var oldest []byte
	var oldestAt uint64
	c := b.Cursor()
	for k, v := c.First(); k != nil; k, v = c.Next() {
		if len(v) < 16 {
			continue
		}
		if at := binary.BigEndian.Uint64(v[8:]); oldest == nil || at < oldestAt {
			oldest, oldestAt = append([]byte(nil), k...), at
		}
	}
	if oldest == nil {
		return false, nil
	}
	return true, b.Delete(oldest)
}

// retain removes the oldest records while the log is over its bounds:
// count and bytes always, age if now is not zero.
func (l *boltLog) retain(b *bolt.Bucket, m *pipelineMeta, now time.Time) error {
	r := l.cfg.Retention
	if r.MaxPackets == 0 && r.MaxBytes == 0 && (r.MaxAge == 0 || now.IsZero()) {
		return nil
	}
	c := b.Cursor()
	for k, v := c.First(); k != nil; k, v = c.First() {
		over := r.MaxPackets > 0 && m.Count > r.MaxPackets || r.MaxBytes > 0 && m.Bytes > r.MaxBytes
		var p storedPacket
		if err := msgpack.Unmarshal(v, &p); err != nil {
			return fmt.Errorf("bad record %x: %w", k, err)
		}
		if !over && r.MaxAge > 0 && !now.IsZero() {
			over = now.Sub(time.Unix(0, p.Time)) > r.MaxAge
		}
		if !over {
			break
		}
		if err := c.Delete(); err != nil {
			return err
		}
		m.Count--
		m.Bytes -= int64(len(p.Data))
		m.First = p.Seq + 1
	}
	return nil
}

func (l *boltLog) Trim(ctx context.Context, now time.Time) error {
	if l.cfg.Retention == (Retention{}) {
		return nil
	}
	infos, err := l.Pipelines(ctx)
	if err != nil {
		return err
	}
	for _, in := range infos {
		if !in.Persistent {
			continue
		}
		name := in.Name
		err := l.w.write(func(tx *bolt.Tx) error {
			m, err := getMeta(tx, name)
			if err != nil {
				return err
			}
			b := tx.Bucket(logBucket(name))
			if b == nil {
				return nil
			}
			first := m.First
			if err := l.retain(b, m, now); err != nil || m.First == first {
				return err
			}
			return putMeta(tx, name, m)
		})
		if err != nil && !errors.Is(err, ErrUnknownPipeline) {
			return err
		}
	}
	return nil
}

func (l *boltLog) Read(ctx context.Context, pipeline string, after uint64, max, maxBytes int) (ReadResult, error) {
	var res ReadResult
	gap, last, err := l.scan(pipeline, after, max, maxBytes, func(v []byte) error {
		var p storedPacket
		if err := msgpack.Unmarshal(v, &p); err != nil {
			return fmt.Errorf("bad record: %w", err)
		}
		r := Record{Seq: p.Seq, Time: time.Unix(0, p.Time), Sender: Sender{User: p.Sender}, N: p.N, Data: p.Data}
		copy(r.Sender.Node[:], p.Node)
		res.Records = append(res.Records, r)
		return nil
	})
	res.Gap, res.Last = gap, last
	return res, err
}

// readRaw is Read returning each record as stored: the MessagePack map a
// read reply carries. The hub uses it when its log is this one, so that
// a record read by many nodes is not decoded and encoded again for each.
func (l *boltLog) readRaw(pipeline string, after uint64, max, maxBytes int) (recs []msgpack.RawMessage, gap *Gap, last uint64, err error) {
	gap, last, err = l.scan(pipeline, after, max, maxBytes, func(v []byte) error {
		recs = append(recs, msgpack.RawMessage(bytes.Clone(v)))
		return nil
	})
	return recs, gap, last, err
}

// scan gives take the stored records of a persistent pipeline after
// after, in order, within max records and (beyond the first) maxBytes of
// them; v is valid only during the call. It returns the retention gap
// after after, if any, and the pipeline's last Seq.
func (l *boltLog) scan(pipeline string, after uint64, max, maxBytes int, take func(v []byte) error) (gap *Gap, last uint64, err error) {
	err = view(l.db, l.cfg.Path, func(tx *bolt.Tx) error {
		m, err := getMeta(tx, pipeline)
		if err != nil {
			return err
		}
		if !m.Persistent {
			return ErrKindMismatch
		}
		last = m.Last
		if after+1 < m.First {
			gap = &Gap{Pipeline: pipeline, From: after + 1, To: m.First - 1, Reason: GapRetention}
			after = m.First - 1
		}
		b := tx.Bucket(logBucket(pipeline))
		if b == nil {
			return nil
		}
		c := b.Cursor()
		size, n := 0, 0
		for k, v := c.Seek(seqKey(after + 1)); k != nil && n < max; k, v = c.Next() {
			if n > 0 && size+len(v) > maxBytes {
				break
			}
			if err := take(v); err != nil {
				return fmt.Errorf("record %x: %w", k, err)
			}
			size += len(v)
			n++
		}
		return nil
	})
	return gap, last, storageErr(l.cfg.Path, "read", err)
}

// encodeRecord encodes a record as it is stored and as it goes on the
// wire in a read reply (PROTOCOL.md §21.3), with compact integers, so
// that a read can send stored records as they are.
func encodeRecord(p *storedPacket) ([]byte, error) {
	var buf bytes.Buffer
	buf.Grow(len(p.Data) + len(p.Sender) + 64)
	enc := msgpack.NewEncoder(&buf)
	enc.UseCompactInts(true)
	if err := enc.Encode(p); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func (l *boltLog) Close() error {
	l.w.close()
	return l.db.Close()
}

// dataFile is the name of the database file in a hub's or node's
// directory.
func dataFile(dir, name string) (string, error) {
	if dir == "" {
		return "", errors.New("pipes: no directory given")
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", &StorageError{Path: dir, Op: "create", Err: err}
	}
	return dir + string(os.PathSeparator) + name, nil
}
