package pipes

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"

	"github.com/bokbok-go/bokbok/pipes/internal/fts"
	"github.com/vmihailenco/msgpack/v5"
	bolt "go.etcd.io/bbolt"
)

// searchIndex is a hub's full-text index of its plain persistent
// pipelines, in a bbolt file of its own. It is a cache of the log: it
// follows each pipeline's log (in the background after puts, and up to
// the end before every search), and it is rebuilt from the log when its
// file is lost or damaged, when a pipeline is created anew, and when
// retention has removed more than half of what it indexed.
//
// Bucket "indexed" maps a pipeline's name to its indexState; bucket
// "ix/NAME" holds the pipeline's index.
type searchIndex struct {
	db   *bolt.DB
	log  Log
	text func(pipeline string, data []byte) string

	mu sync.Mutex // held while indexing: one writer at a time

	dmu   sync.Mutex      // guards dirty
	dirty map[string]bool // pipelines appended to since the indexer last looked
	kick  chan struct{}   // poked when dirty gains a name (capacity 1)
	quit  chan struct{}
	done  chan struct{} // closed when the indexer goroutine ends
}

type indexState struct {
	Epoch []byte `msgpack:"epoch"`
	From  uint64 `msgpack:"from"` // the first Seq indexed
	Upto  uint64 `msgpack:"upto"` // the last Seq looked at
}

var bucketIndexed = []byte("indexed")

func indexBucket(name string) []byte { return append([]byte("ix/"), name...) }

// indexBatch is the records indexed per transaction.
const indexBatch = 1024

// openSearchIndex opens the index at path, starting afresh if the file is
// damaged, and starts its indexer goroutine, which ends at close.
func openSearchIndex(path string, l Log, text func(string, []byte) string) (*searchIndex, error) {
	db, err := openBolt(path, 0, true)
	if err == nil {
		err = db.Update(func(tx *bolt.Tx) error {
			_, err := tx.CreateBucketIfNotExists(bucketIndexed)
			return err
		})
		if err != nil {
			db.Close()
		}
	}
	if err != nil && !errors.Is(err, ErrInUse) {
		// A cache: start again from the log.
		if rerr := os.Remove(path); rerr != nil {
			return nil, err
		}
		return openSearchIndex(path, l, text)
	}
	if err != nil {
		return nil, err
	}
	ix := &searchIndex{db: db, log: l, text: text, dirty: map[string]bool{}, kick: make(chan struct{}, 1), quit: make(chan struct{}), done: make(chan struct{})}
	go ix.run()
	return ix, nil
}

// changed tells the indexer that name was appended to.
func (ix *searchIndex) changed(name string) {
	ix.dmu.Lock()
	ix.dirty[name] = true
	ix.dmu.Unlock()
	select {
	case ix.kick <- struct{}{}:
	default:
	}
}

// run indexes the pipelines appended to, until close.
func (ix *searchIndex) run() {
	defer close(ix.done)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		<-ix.quit
		cancel()
	}()
	for {
		select {
		case <-ix.quit:
			return
		case <-ix.kick:
		}
		ix.dmu.Lock()
		names := ix.dirty
		ix.dirty = map[string]bool{}
		ix.dmu.Unlock()
		for name := range names {
			in, err := ix.log.Info(ctx, name)
			if err == nil {
				err = ix.catchUp(ctx, in)
			}
			if err != nil && ctx.Err() == nil && !errors.Is(err, ErrUnknownPipeline) {
				ix.changed(name) // try again at the next put
			}
		}
	}
}

// catchUp indexes in's records up to its last.
func (ix *searchIndex) catchUp(ctx context.Context, in PipelineInfo) error {
	if !in.Persistent || in.Encrypted {
		return nil
	}
	ix.mu.Lock()
	defer ix.mu.Unlock()
	st, err := ix.state(in.Name)
	if err != nil {
		return err
	}
	indexed := st.Upto + 1 - st.From
	if string(st.Epoch) != string(in.Epoch[:]) || in.First > st.From && in.First-st.From > indexed/2 {
		// New, created anew, or mostly removed by retention: rebuild.
		st = indexState{Epoch: in.Epoch[:], From: in.First, Upto: in.First - 1}
		if err := ix.update(func(tx *bolt.Tx) error {
			if err := tx.DeleteBucket(indexBucket(in.Name)); err != nil && !errors.Is(err, bolt.ErrBucketNotFound) {
				return err
			}
			return putIndexState(tx, in.Name, st)
		}); err != nil {
			return err
		}
	}
	for st.Upto < in.Last {
		res, err := ix.log.Read(ctx, in.Name, st.Upto, indexBatch, 4<<20)
		if err != nil {
			return err
		}
		if len(res.Records) == 0 {
			if res.Gap == nil {
				return nil
			}
			st.Upto = res.Gap.To
		}
		if err := ix.update(func(tx *bolt.Tx) error {
			b, err := tx.CreateBucketIfNotExists(indexBucket(in.Name))
			if err != nil {
				return err
			}
			for _, r := range res.Records {
				if err := fts.Add(b, r.Seq, ix.text(in.Name, r.Data)); err != nil {
					return err
				}
				st.Upto = r.Seq
			}
			return putIndexState(tx, in.Name, st)
		}); err != nil {
			return err
		}
	}
	return nil
}

func (ix *searchIndex) update(fn func(tx *bolt.Tx) error) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("%w: search index damaged: %v", ErrStorage, p)
		}
	}()
	return ix.db.Update(fn)
}

func (ix *searchIndex) state(name string) (st indexState, err error) {
	err = view(ix.db, ix.db.Path(), func(tx *bolt.Tx) error {
		if v := tx.Bucket(bucketIndexed).Get([]byte(name)); v != nil {
			return msgpack.Unmarshal(v, &st)
		}
		return nil
	})
	return st, err
}

func putIndexState(tx *bolt.Tx, name string, st indexState) error {
	v, err := msgpack.Marshal(&st)
	if err != nil {
		return err
	}
	return tx.Bucket(bucketIndexed).Put([]byte(name), v)
}

// search catches the index of in up and returns its best matches for
// query that the log still holds.
func (ix *searchIndex) search(ctx context.Context, in PipelineInfo, query string, max, maxPostings int) (hits []fts.Hit, truncated bool, err error) {
	if err := ix.catchUp(ctx, in); err != nil {
		return nil, false, err
	}
	err = view(ix.db, ix.db.Path(), func(tx *bolt.Tx) error {
		b := tx.Bucket(indexBucket(in.Name))
		if b == nil {
			return nil
		}
		var err error
		hits, truncated, err = fts.Search(b, query, max, maxPostings, func(seq uint64) bool { return seq >= in.First })
		return err
	})
	return hits, truncated, err
}

// close stops the indexer and closes the file.
func (ix *searchIndex) close() error {
	close(ix.quit)
	<-ix.done
	ix.mu.Lock() // a search's catch-up in progress ends first
	defer ix.mu.Unlock()
	return ix.db.Close()
}
