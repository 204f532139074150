package pipes

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"

	"github.com/vmihailenco/msgpack/v5"
	bolt "go.etcd.io/bbolt"
)

// nodeStore is a node's embedded database (the file node.db of its
// directory). Bucket "meta" holds the node's ID, its user and the next
// packet number; "pipelines" the kind of each pipeline opened; "cursors"
// each persistent pipeline's epoch and the last Seq delivered; and
// "outbox/NAME" the packets put and not yet acknowledged, by number.
type nodeStore struct {
	db   *bolt.DB
	path string
	w    *committer
	id   NodeID

	maxBytes   int64
	maxPackets int

	mu       sync.Mutex // guards next, bytes, packets, removing and removed
	next     uint64     // the next packet number
	bytes    int64      // data in the outbox
	packets  int        // packets in the outbox
	removing int        // removals not yet committed and counted
	removed  chan struct{}
}

var (
	bucketMeta    = []byte("meta")
	bucketKinds   = []byte("pipelines")
	bucketCursors = []byte("cursors")
	keyNode       = []byte("node")
	keyUser       = []byte("user")
	keyNext       = []byte("next")
)

func outboxBucket(name string) []byte { return append([]byte("outbox/"), name...) }

type pipelineKind struct {
	Persistent bool     `msgpack:"persistent"`
	Encrypted  bool     `msgpack:"encrypted,omitempty"`
	Members    []string `msgpack:"members,omitempty"` // asked for when the pipeline is created
}

type cursorValue struct {
	Epoch []byte `msgpack:"epoch"`
	Seq   uint64 `msgpack:"seq"`
}

// openNodeStore opens the database at path for user, creating it (with a
// fresh node ID) if it is new.
func openNodeStore(path, user string, maxBytes int64, maxPackets int, noSync bool) (*nodeStore, error) {
	db, err := openBolt(path, 0, noSync)
	if err != nil {
		return nil, err
	}
	s := &nodeStore{db: db, path: path, maxBytes: maxBytes, maxPackets: maxPackets, removed: make(chan struct{})}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketMeta, bucketKinds, bucketCursors} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		meta := tx.Bucket(bucketMeta)
		if u := meta.Get(keyUser); u == nil {
			if err := meta.Put(keyUser, []byte(user)); err != nil {
				return err
			}
			rand.Read(s.id[:])
			if err := meta.Put(keyNode, s.id[:]); err != nil {
				return err
			}
		} else if string(u) != user {
			return fmt.Errorf("%w: %q, not %q", ErrIdentity, u, user)
		} else {
			copy(s.id[:], meta.Get(keyNode))
		}
		s.next = 1
		if v := meta.Get(keyNext); len(v) == 8 {
			s.next = binary.BigEndian.Uint64(v)
		}
		return tx.ForEach(func(name []byte, b *bolt.Bucket) error {
			if len(name) < 7 || string(name[:7]) != "outbox/" {
				return nil
			}
			return b.ForEach(func(k, v []byte) error {
				s.packets++
				s.bytes += int64(len(v))
				return nil
			})
		})
	})
	if err != nil {
		db.Close()
		if errors.Is(err, ErrIdentity) {
			return nil, err
		}
		return nil, storageErr(path, "open", err)
	}
	s.w = newCommitter(db, path)
	return s, nil
}

// addPipeline records a pipeline's kind, or checks it against the one
// recorded.
func (s *nodeStore) addPipeline(name string, kind pipelineKind) error {
	return s.w.write(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketKinds)
		if v := b.Get([]byte(name)); v != nil {
			var k pipelineKind
			if err := msgpack.Unmarshal(v, &k); err != nil {
				return err
			}
			if k.Persistent != kind.Persistent || k.Encrypted != kind.Encrypted {
				return fmt.Errorf("%w: %q was opened here as %s", ErrKindMismatch, name, k.String())
			}
			return nil
		}
		v, err := msgpack.Marshal(&kind)
		if err != nil {
			return err
		}
		if kind.Persistent {
			if _, err := tx.CreateBucketIfNotExists(outboxBucket(name)); err != nil {
				return err
			}
		}
		return b.Put([]byte(name), v)
	})
}

func (k pipelineKind) String() string {
	if k.Encrypted {
		return "encrypted"
	}
	return kindName(k.Persistent)
}

// kinds returns the pipelines recorded and their kinds.
func (s *nodeStore) kinds() (map[string]pipelineKind, error) {
	out := map[string]pipelineKind{}
	err := view(s.db, s.path, func(tx *bolt.Tx) error {
		return tx.Bucket(bucketKinds).ForEach(func(k, v []byte) error {
			var kind pipelineKind
			if err := msgpack.Unmarshal(v, &kind); err != nil {
				return err
			}
			out[string(k)] = kind
			return nil
		})
	})
	return out, storageErr(s.path, "read", err)
}

// put stores a packet in the outbox, durably, and returns its number.
func (s *nodeStore) put(name string, data []byte) (uint64, error) {
	s.mu.Lock()
	if s.packets+1 > s.maxPackets || s.bytes+int64(len(data)) > s.maxBytes {
		s.mu.Unlock()
		return 0, fmt.Errorf("%w: %d packets, %d bytes waiting", ErrOutboxFull, s.packets, s.bytes)
	}
	s.packets++
	s.bytes += int64(len(data))
	s.mu.Unlock()
	var n uint64
	err := s.w.write(func(tx *bolt.Tx) error {
		b := tx.Bucket(outboxBucket(name))
		if b == nil {
			return fmt.Errorf("%w: %q is not a persistent pipeline of this node", ErrUnknownPipeline, name)
		}
		s.mu.Lock()
		n = s.next
		s.next++
		s.mu.Unlock()
		var next [8]byte
		binary.BigEndian.PutUint64(next[:], n+1)
		if err := tx.Bucket(bucketMeta).Put(keyNext, next[:]); err != nil {
			return err
		}
		return b.Put(seqKey(n), data)
	})
	if err != nil {
		s.mu.Lock()
		s.packets--
		s.bytes -= int64(len(data))
		s.mu.Unlock()
		return 0, err
	}
	return n, nil
}

// pending returns the first packets of a pipeline's outbox numbered
// above after: at most max, and beyond the first at most maxBytes of
// data.
func (s *nodeStore) pending(name string, after uint64, max, maxBytes int) ([]wirePacket, error) {
	var out []wirePacket
	err := view(s.db, s.path, func(tx *bolt.Tx) error {
		b := tx.Bucket(outboxBucket(name))
		if b == nil {
			return nil
		}
		c := b.Cursor()
		size := 0
		for k, v := c.Seek(seqKey(after + 1)); k != nil && len(out) < max; k, v = c.Next() {
			if len(out) > 0 && size+len(v) > maxBytes {
				break
			}
			size += len(v)
			out = append(out, wirePacket{N: binary.BigEndian.Uint64(k), Data: append([]byte(nil), v...)})
		}
		return nil
	})
	return out, storageErr(s.path, "read", err)
}

// remove deletes acknowledged (or refused) packets from the outbox, and
// returns once that is committed.
func (s *nodeStore) remove(name string, ns []uint64) error {
	errc := make(chan error, 1)
	s.removeAsync(name, ns, func(err error) { errc <- err })
	return <-errc
}

// removeAsync deletes packets from the outbox without waiting: the
// deletion goes into the next group commit, and done (if not nil) is
// told its result. A deletion that is lost (a crash before it commits)
// only makes the node send those packets again, which the hub drops as
// duplicates.
func (s *nodeStore) removeAsync(name string, ns []uint64, done func(error)) {
	var freed int64
	var count int
	s.mu.Lock()
	s.removing++
	s.mu.Unlock()
	s.w.writeAsync(func(tx *bolt.Tx) error {
		freed, count = 0, 0
		b := tx.Bucket(outboxBucket(name))
		if b == nil {
			return nil
		}
		for _, n := range ns {
			if v := b.Get(seqKey(n)); v != nil {
				freed += int64(len(v))
				count++
				if err := b.Delete(seqKey(n)); err != nil {
					return err
				}
			}
		}
		return nil
	}, func(err error) {
		s.mu.Lock()
		if err == nil {
			s.bytes -= freed
			s.packets -= count
		}
		s.removing--
		close(s.removed)
		s.removed = make(chan struct{})
		s.mu.Unlock()
		if done != nil {
			done(err)
		}
	})
}

// outbox returns the packets and bytes waiting, the next packet number,
// how many removals are not yet counted, and a channel closed when the
// next one is.
func (s *nodeStore) outbox() (packets int, bytes int64, next uint64, removing int, removed <-chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.packets, s.bytes, s.next, s.removing, s.removed
}

// oldest returns the smallest packet number waiting in any outbox, 0 if
// none.
func (s *nodeStore) oldest() (uint64, error) {
	var oldest uint64
	err := view(s.db, s.path, func(tx *bolt.Tx) error {
		return tx.ForEach(func(name []byte, b *bolt.Bucket) error {
			if len(name) < 7 || string(name[:7]) != "outbox/" {
				return nil
			}
			if k, _ := b.Cursor().First(); k != nil {
				if n := binary.BigEndian.Uint64(k); oldest == 0 || n < oldest {
					oldest = n
				}
			}
			return nil
		})
	})
	return oldest, storageErr(s.path, "read", err)
}

// cursor returns a persistent pipeline's epoch and last Seq delivered.
func (s *nodeStore) cursor(name string) (cursorValue, error) {
	var c cursorValue
	err := view(s.db, s.path, func(tx *bolt.Tx) error {
		if v := tx.Bucket(bucketCursors).Get([]byte(name)); v != nil {
			return msgpack.Unmarshal(v, &c)
		}
		return nil
	})
	return c, storageErr(s.path, "read", err)
}

// setCursor records, durably, that the packets up to seq of epoch were
// delivered.
func (s *nodeStore) setCursor(name string, c cursorValue) error {
	v, err := msgpack.Marshal(&c)
	if err != nil {
		return err
	}
	return s.w.write(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketCursors).Put([]byte(name), v)
	})
}

// setCursorAsync is setCursor without the wait; done is told the result.
func (s *nodeStore) setCursorAsync(name string, c cursorValue, done func(error)) {
	v, err := msgpack.Marshal(&c)
	if err != nil {
		done(err)
		return
	}
	s.w.writeAsync(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketCursors).Put([]byte(name), v)
	}, done)
}

func (s *nodeStore) close() error {
	s.w.close()
	return s.db.Close()
}
