package pipes

import (
	"errors"
	"fmt"
	"sync"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// committer writes to a database in group commits: writes asked for while
// a transaction is being committed wait, and all of them then go into the
// next transaction, so one fsync serves many writers without any added
// delay. It owns one goroutine, which ends on close.
type committer struct {
	db   *bolt.DB
	path string
	reqs chan *commitReq
	quit chan struct{}
	done chan struct{}

	mu     sync.Mutex // guards broken
	broken error      // set after the database panicked; every write fails with it
}

type commitReq struct {
	fn   func(*bolt.Tx) error
	err  chan error  // receives the result, if set
	done func(error) // called with the result on the committer's goroutine, if set
}

func (r *commitReq) finish(err error) {
	if r.err != nil {
		r.err <- err
	}
	if r.done != nil {
		r.done(err)
	}
}

// maxGroup bounds the writes in one transaction.
const maxGroup = 512

func newCommitter(db *bolt.DB, path string) *committer {
	c := &committer{db: db, path: path, reqs: make(chan *commitReq), quit: make(chan struct{}), done: make(chan struct{})}
	go c.run()
	return c
}

// write runs fn in a write transaction and returns once that transaction
// is committed (or failed). fn must not keep the transaction, and must
// return any error of its own before it modifies anything, or its
// partial writes are undone with the rest of its group and the others are
// retried without it.
func (c *committer) write(fn func(*bolt.Tx) error) error {
	r := &commitReq{fn: fn, err: make(chan error, 1)}
	select {
	case c.reqs <- r:
	case <-c.quit:
		return ErrClosed
	}
	return <-r.err
}

// writeAsync is write without the wait: done (which must be quick and
// must not write) is called with the result on the committer's goroutine,
// or at once with ErrClosed after close.
func (c *committer) writeAsync(fn func(*bolt.Tx) error, done func(error)) {
	r := &commitReq{fn: fn, done: done}
	select {
	case c.reqs <- r:
	case <-c.quit:
		done(ErrClosed)
	}
}

func (c *committer) run() {
	defer close(c.done)
	for {
		var group []*commitReq
		select {
		case r := <-c.reqs:
			group = append(group, r)
		case <-c.quit:
			return
		}
	drain:
		for len(group) < maxGroup {
			select {
			case r := <-c.reqs:
				group = append(group, r)
			default:
				break drain
			}
		}
		c.commit(group)
	}
}

// commit runs a group in one transaction. A write that fails is taken
// out and the others run again in a fresh transaction.
func (c *committer) commit(group []*commitReq) {
	for len(group) > 0 {
		failed := -1
		var failure error
		err := c.update(func(tx *bolt.Tx) error {
			for i, r := range group {
				if err := r.fn(tx); err != nil {
					failed, failure = i, err
					return err
				}
			}
			return nil
		})
		if failed < 0 {
			for _, r := range group {
				r.finish(err)
			}
			return
		}
		group[failed].finish(failure)
		group = append(group[:failed], group[failed+1:]...)
	}
}

// update runs fn in a write transaction, turning a panic of the database
// (a corrupt page) into a *StorageError that every later write returns
// too.
func (c *committer) update(fn func(*bolt.Tx) error) (err error) {
	c.mu.Lock()
	broken := c.broken
	c.mu.Unlock()
	if broken != nil {
		return broken
	}
	defer func() {
		if p := recover(); p != nil {
			err = &StorageError{Path: c.path, Op: "write", Err: fmt.Errorf("database corrupt: %v", p)}
			c.mu.Lock()
			c.broken = err
			c.mu.Unlock()
		}
	}()
	err = c.db.Update(fn)
	return storageErr(c.path, "write", err)
}

// view runs fn in a read transaction, turning a panic into a
// *StorageError.
func view(db *bolt.DB, path string, fn func(*bolt.Tx) error) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = &StorageError{Path: path, Op: "read", Err: fmt.Errorf("database corrupt: %v", p)}
		}
	}()
	return db.View(fn)
}

// storageErr wraps a database's own errors (not those our functions
// return) in a *StorageError, marking a full database with ErrFull.
func storageErr(path, op string, err error) error {
	if err == nil {
		return nil
	}
	var se *StorageError
	if errors.As(err, &se) {
		return err
	}
	if errors.Is(err, berrors.ErrMaxSizeReached) || isNoSpace(err) {
		return &StorageError{Path: path, Op: op, Err: fmt.Errorf("%w: %w", ErrFull, err)}
	}
	if isOwnError(err) {
		return err
	}
	return &StorageError{Path: path, Op: op, Err: err}
}

// isOwnError reports whether err is one of this package's conditions
// rather than a failure of the database.
func isOwnError(err error) bool {
	for _, c := range codes {
		if errors.Is(err, c.err) {
			return true
		}
	}
	return errors.Is(err, ErrOutboxFull) || errors.Is(err, ErrClosed)
}

func (c *committer) close() {
	close(c.quit)
	<-c.done
}
