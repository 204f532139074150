package pipes

import (
	"sort"

	"github.com/vmihailenco/msgpack/v5"
	bolt "go.etcd.io/bbolt"
)

// history answers a history request from the embedded log: it finds the
// range's end by Seq and, the log's times being sorted, by bisection on
// time, then walks from it (backwards for a Newest request), looking at
// no more than maxScan records.
func (l *boltLog) history(req historyRequest, max, maxBytes, maxScan int) (historyReply, error) {
	var reply historyReply
	err := view(l.db, l.cfg.Path, func(tx *bolt.Tx) error {
		m, err := getMeta(tx, req.Pipeline)
		if err != nil {
			return err
		}
		reply.Last = m.Last
		b := tx.Bucket(logBucket(req.Pipeline))
		if b == nil || m.First > m.Last {
			return nil
		}
		lo, hi := max64u(req.From, m.First), m.Last
		if req.To != 0 {
			hi = min(req.To, m.Last)
		}
		c := b.Cursor()
		timeAt := func(seq uint64) (int64, error) {
			_, v := c.Seek(seqKey(seq))
			var p struct {
				Time int64 `msgpack:"time"`
			}
			return p.Time, msgpack.Unmarshal(v, &p)
		}
		// Narrow [lo, hi] to the time range: the first record at or after
		// Since, the last at or before Until.
		if req.Since != 0 && lo <= hi {
			var ferr error
			lo = lo + uint64(sort.Search(int(hi-lo+1), func(i int) bool {
				t, err := timeAt(lo + uint64(i))
				ferr = err
				return err != nil || t >= req.Since
			}))
			if ferr != nil {
				return ferr
			}
		}
		if req.Until != 0 && lo <= hi {
			var ferr error
			n := sort.Search(int(hi-lo+1), func(i int) bool {
				t, err := timeAt(lo + uint64(i))
				ferr = err
				return err != nil || t > req.Until
			})
			if ferr != nil {
				return ferr
			}
			if n == 0 {
				return nil
			}
			hi = lo + uint64(n) - 1
		}
		if lo > hi {
			return nil
		}
		size, scanned := 0, 0
		take := func(v []byte) (bool, error) {
			if len(reply.Packets) >= max || len(reply.Packets) > 0 && size+len(v) > maxBytes || scanned >= maxScan {
				return false, nil
			}
			scanned++
			var p storedPacket
			if err := msgpack.Unmarshal(v, &p); err != nil {
				return false, err
			}
			size += len(v)
			reply.Packets = append(reply.Packets, p)
			return true, nil
		}
		if !req.Newest {
			for k, v := c.Seek(seqKey(lo)); k != nil; k, v = c.Next() {
				seq := seqOf(k)
				if seq > hi {
					return nil
				}
				if ok, err := take(v); err != nil || !ok {
					reply.Next = seq
					return err
				}
			}
			return nil
		}
		k, v := c.Seek(seqKey(hi))
		if k == nil || seqOf(k) > hi {
			k, v = c.Prev()
		}
		for ; k != nil; k, v = c.Prev() {
			seq := seqOf(k)
			if seq < lo {
				break
			}
			if ok, err := take(v); err != nil || !ok {
				reply.Next = seq
				if err != nil {
					return err
				}
				break
			}
		}
		for i, j := 0, len(reply.Packets)-1; i < j; i, j = i+1, j-1 {
			reply.Packets[i], reply.Packets[j] = reply.Packets[j], reply.Packets[i]
		}
		return nil
	})
	return reply, storageErr(l.cfg.Path, "read", err)
}

func seqOf(k []byte) uint64 {
	var n uint64
	for _, b := range k {
		n = n<<8 | uint64(b)
	}
	return n
}

func max64u(a, b uint64) uint64 {
	if a > b {
		return a
	}
	return b
}

func sortListed(ps []listedPipeline) {
	sort.Slice(ps, func(i, j int) bool { return ps[i].Name < ps[j].Name })
}
