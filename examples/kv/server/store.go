package main

import (
	"context"
	"log"
	"slices"
	"strings"
	"sync"

	"github.com/bokbok-go/bokbok"
	"github.com/bokbok-go/bokbok/examples/kv/kvapi"
)

// store is one tenant's keys.
type store struct {
	mu       sync.RWMutex
	entries  map[string]kvapi.Entry
	rev      uint64        // the last version given out
	changed  chan struct{} // closed and replaced at every change, to wake the polls
	watchers map[*watcher]bool
}

func newStore() *store {
	return &store{entries: map[string]kvapi.Entry{}, changed: make(chan struct{}), watchers: map[*watcher]bool{}}
}

// watcher is a watch: the changes under prefix, for conn.
type watcher struct {
	prefix string
	conn   *bokbok.Conn
	ch     chan kvapi.Entry // closed if the client fell too far behind
}

func (s *store) get(key string) (kvapi.Entry, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	e, ok := s.entries[key]
	if !ok {
		return e, bokbok.Errorf(kvapi.CodeNotFound, "no key %q", key)
	}
	return e, nil
}

// write puts value under key, or with del deletes key, if key is at
// *ifVersion (when not nil), and tells the polls and watchers.
func (s *store) write(key, value string, ifVersion *uint64, del bool) (kvapi.Entry, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	old := s.entries[key] // Version 0 if none
	switch {
	case ifVersion != nil && *ifVersion != old.Version:
		return kvapi.Entry{}, bokbok.Errorf(kvapi.CodeConflict, "%q is at version %d, not %d", key, old.Version, *ifVersion)
	case del && old.Version == 0:
		return kvapi.Entry{}, bokbok.Errorf(kvapi.CodeNotFound, "no key %q", key)
	}
	e := kvapi.Entry{Key: key} // deleted: version 0
	if del {
		delete(s.entries, key)
	} else {
		s.rev++
		e = kvapi.Entry{Key: key, Value: value, Version: s.rev}
		s.entries[key] = e
	}
	close(s.changed)
	s.changed = make(chan struct{})
	for w := range s.watchers {
		if strings.HasPrefix(key, w.prefix) {
			select {
			case w.ch <- e:
			default: // too far behind: drop the watch
				close(w.ch)
				delete(s.watchers, w)
			}
		}
	}
	if del {
		return old, nil
	}
	return e, nil
}

// list returns the entries under prefix, by key. Given a connection, it
// also starts watching prefix for it, from the moment of the list.
func (s *store) list(prefix string, watch *bokbok.Conn) []kvapi.Entry {
	s.mu.Lock() // not RLock: a watch is added under the same lock as the list
	defer s.mu.Unlock()
	var out []kvapi.Entry
	for k, e := range s.entries {
		if strings.HasPrefix(k, prefix) {
			out = append(out, e)
		}
	}
	slices.SortFunc(out, func(a, b kvapi.Entry) int { return strings.Compare(a.Key, b.Key) })
	if watch != nil {
		w := &watcher{prefix: prefix, conn: watch, ch: make(chan kvapi.Entry, 1000)}
		s.watchers[w] = true
		go s.notify(w)
	}
	return out
}

// notify calls the watching client back with each change, in order, until
// the connection starts shutting down.
func (s *store) notify(w *watcher) {
	defer func() {
		s.mu.Lock()
		delete(s.watchers, w)
		s.mu.Unlock()
	}()
	for {
		select {
		case e, ok := <-w.ch:
			if !ok {
				log.Printf("a watcher of %q fell too far behind; closing its connection", w.prefix)
				w.conn.Close()
				return
			}
			if err := w.conn.NotifyMethod(context.Background(), kvapi.Changed, e); err != nil {
				return
			}
		case <-w.conn.Draining():
			return
		}
	}
}

// poll waits until key's version is not version, and returns its entry:
// early, unchanged, if the connection starts shutting down.
func (s *store) poll(ctx context.Context, key string, version uint64) (kvapi.Entry, error) {
	draining := bokbok.RequestFromContext(ctx).Conn().Draining()
	for {
		s.mu.RLock()
		e, changed := s.entries[key], s.changed
		s.mu.RUnlock()
		e.Key = key
		if e.Version != version {
			return e, nil
		}
		select {
		case <-changed:
		case <-draining:
			return e, nil
		case <-ctx.Done():
			return kvapi.Entry{}, ctx.Err()
		}
	}
}
