package pipes

import (
	"crypto/rand"
	"encoding/binary"
	"time"

	"github.com/bokbok-go/bokbok/pipes/internal/fts"
	"github.com/vmihailenco/msgpack/v5"
	bolt "go.etcd.io/bbolt"
	"golang.org/x/crypto/curve25519"
)

// What a node keeps of its encrypted pipelines, in its database: bucket
// "e2e/NAME" holds the pipeline's keys ('k' keyID -> key, 'm' keyID ->
// made here), the member nodes' box keys seen in hellos ('p' key ->
// user), the current key ('c') and whether this node's hello was put
// ('h'); "copy/NAME" the packets delivered, opened, by Seq, and
// "cix/NAME" their full-text index. Bucket "meta" holds the node's box
// private key ("box").
var keyBox = []byte("box")

func e2eBucket(name string) []byte  { return append([]byte("e2e/"), name...) }
func copyBucket(name string) []byte { return append([]byte("copy/"), name...) }
func cixBucket(name string) []byte  { return append([]byte("cix/"), name...) }

// boxKeys returns the node's box key pair, made on first use.
func (s *nodeStore) boxKeys() (pub, priv [32]byte, err error) {
	err = s.w.write(func(tx *bolt.Tx) error {
		meta := tx.Bucket(bucketMeta)
		if v := meta.Get(keyBox); len(v) == 32 {
			copy(priv[:], v)
			return nil
		}
		rand.Read(priv[:])
		return meta.Put(keyBox, priv[:])
	})
	if err != nil {
		return pub, priv, err
	}
	p, err := curve25519.X25519(priv[:], curve25519.Basepoint)
	copy(pub[:], p)
	return pub, priv, err
}

// e2eState is what a node keeps of one encrypted pipeline.
type e2eState struct {
	keys    map[keyID][32]byte
	mine    map[keyID]bool
	peers   map[[32]byte]string // box key -> user, from the hellos delivered
	current keyID
	curSeq  uint64 // the Seq of the key packet that made current current; max for one put here and not yet delivered
	hasCur  bool
	hello   bool
}

func (s *nodeStore) e2e(name string) (*e2eState, error) {
	st := &e2eState{keys: map[keyID][32]byte{}, mine: map[keyID]bool{}, peers: map[[32]byte]string{}}
	err := view(s.db, s.path, func(tx *bolt.Tx) error {
		b := tx.Bucket(e2eBucket(name))
		if b == nil {
			return nil
		}
		return b.ForEach(func(k, v []byte) error {
			switch {
			case k[0] == 'k' && len(k) == 9 && len(v) == 32:
				st.keys[keyID(k[1:])] = [32]byte(v)
			case k[0] == 'm' && len(k) == 9:
				st.mine[keyID(k[1:])] = true
			case k[0] == 'p' && len(k) == 33:
				st.peers[[32]byte(k[1:])] = string(v)
			case k[0] == 'c' && len(k) == 1 && len(v) == 16:
				st.current, st.curSeq, st.hasCur = keyID(v[:8]), binary.BigEndian.Uint64(v[8:]), true
			case k[0] == 'h' && len(k) == 1:
				st.hello = true
			}
			return nil
		})
	})
	return st, storageErr(s.path, "read", err)
}

// e2eChange is what one write adds to an encrypted pipeline's state.
type e2eChange struct {
	key     *pipelineKey
	mine    bool
	current bool   // key becomes the current key
	curSeq  uint64 // with this Seq
	peer    *memberKey
	hello   bool
}

func (s *nodeStore) saveE2E(name string, c e2eChange) error {
	return s.w.write(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists(e2eBucket(name))
		if err != nil {
			return err
		}
		put := func(k, v []byte) {
			if err == nil {
				err = b.Put(k, v)
			}
		}
		if c.key != nil {
			put(append([]byte{'k'}, c.key.ID[:]...), c.key.Key[:])
			if c.mine {
				put(append([]byte{'m'}, c.key.ID[:]...), nil)
			}
			if c.current {
				put([]byte{'c'}, binary.BigEndian.AppendUint64(c.key.ID[:8:8], c.curSeq))
			}
		}
		if c.peer != nil {
			put(append([]byte{'p'}, c.peer.Key[:]...), []byte(c.peer.User))
		}
		if c.hello {
			put([]byte{'h'}, nil)
		}
		return err
	})
}

// copiedPacket is a delivered packet of an encrypted pipeline, opened.
type copiedPacket = storedPacket

// saveCopiesAsync adds opened packets to the pipeline's local copy and
// its index, removing the oldest beyond max, in the next group commit.
func (s *nodeStore) saveCopiesAsync(name string, ps []copiedPacket, max int, done func(error)) {
	s.w.writeAsync(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists(copyBucket(name))
		if err != nil {
			return err
		}
		ix, err := tx.CreateBucketIfNotExists(cixBucket(name))
		if err != nil {
			return err
		}
		eb, err := tx.CreateBucketIfNotExists(e2eBucket(name))
		if err != nil {
			return err
		}
		var n uint64
		if v := eb.Get([]byte{'n'}); len(v) == 8 {
			n = binary.BigEndian.Uint64(v)
		}
		for i := range ps {
			k := seqKey(ps[i].Seq)
			if b.Get(k) != nil {
				continue // delivered again after a crash
			}
			v, err := msgpack.Marshal(&ps[i])
			if err != nil {
				return err
			}
			if err := b.Put(k, v); err != nil {
				return err
			}
			if err := fts.Add(ix, ps[i].Seq, fts.Text(ps[i].Data)); err != nil {
				return err
			}
			n++
		}
		for ; n > uint64(max); n-- {
			k, v := b.Cursor().First()
			var old copiedPacket
			if err := msgpack.Unmarshal(v, &old); err != nil {
				return err
			}
			if err := fts.Remove(ix, old.Seq, fts.Text(old.Data)); err != nil {
				return err
			}
			if err := b.Delete(k); err != nil {
				return err
			}
		}
		return eb.Put([]byte{'n'}, binary.BigEndian.AppendUint64(nil, n))
	}, done)
}

// searchCopy searches the pipeline's local copy.
func (s *nodeStore) searchCopy(name, query string, max int) (out []SearchResult, truncated bool, err error) {
	err = view(s.db, s.path, func(tx *bolt.Tx) error {
		b, ix := tx.Bucket(copyBucket(name)), tx.Bucket(cixBucket(name))
		if b == nil || ix == nil {
			return nil
		}
		hits, tr, err := fts.Search(ix, query, max, DefaultSearchPostings, nil)
		if err != nil {
			return err
		}
		truncated = tr
		for _, h := range hits {
			v := b.Get(seqKey(h.ID))
			if v == nil {
				continue
			}
			var cp copiedPacket
			if err := msgpack.Unmarshal(v, &cp); err != nil {
				return err
			}
			out = append(out, SearchResult{Packet: packetFromStored(name, cp), Score: h.Score})
		}
		return nil
	})
	return out, truncated, storageErr(s.path, "read", err)
}

func packetFromStored(pipeline string, sp storedPacket) Packet {
	pk := Packet{Pipeline: pipeline, Seq: sp.Seq, Time: time.Unix(0, sp.Time), Sender: sp.Sender, Data: sp.Data}
	copy(pk.ID.Node[:], sp.Node)
	pk.ID.N = sp.N
	return pk
}

func waitBucket(name string) []byte { return append([]byte("wait/"), name...) }

// saveWaitingAsync keeps sealed packets whose key the node has not been
// given yet (bucket "wait/NAME", by Seq), at most max of them (the oldest
// go first), in the next group commit.
func (s *nodeStore) saveWaitingAsync(name string, ps []storedPacket, max int, done func(error)) {
	s.w.writeAsync(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists(waitBucket(name))
		if err != nil {
			return err
		}
		for i := range ps {
			v, err := msgpack.Marshal(&ps[i])
			if err != nil {
				return err
			}
			if err := b.Put(seqKey(ps[i].Seq), v); err != nil {
				return err
			}
		}
		// Drop the oldest beyond max (a bound small enough to count).
		if n := b.Stats().KeyN; n > max {
			for ; n > max; n-- {
				k, _ := b.Cursor().First()
				if err := b.Delete(k); err != nil {
					return err
				}
			}
		}
		return nil
	}, done)
}

// takeWaiting removes and returns, opened, the kept packets that k
// seals.
func (s *nodeStore) takeWaiting(name string, k pipelineKey) ([]storedPacket, error) {
	var out []storedPacket
	err := s.w.write(func(tx *bolt.Tx) error {
		out = out[:0]
		b := tx.Bucket(waitBucket(name))
		if b == nil {
			return nil
		}
		var del [][]byte
		err := b.ForEach(func(key, v []byte) error {
			var sp storedPacket
			if err := msgpack.Unmarshal(v, &sp); err != nil {
				return err
			}
			if id, _ := sealedKeyID(sp.Data); id != k.ID {
				return nil
			}
			if data, err := unseal(&k.Key, sp.Data); err == nil {
				sp.Data = data
				out = append(out, sp)
				del = append(del, key)
			}
			return nil
		})
		for _, key := range del {
			if err == nil {
				err = b.Delete(key)
			}
		}
		return err
	})
	return out, storageErr(s.path, "write", err)
}
