package jetstream

import (
	"context"
	"strconv"
	"sync"
	"time"

	"github.com/bokbok-go/bokbok/pipes"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// watchState gathers what the log learns of changes, whoever made them,
// and hands it to the watchers from one goroutine: appends from the
// notifications every stream republishes (headers only) once it has
// stored a record, meta changes from a watch of the meta bucket, and,
// after the connection was lost and found again, a change of every
// pipeline (notifications are not replayed).
type watchState struct {
	sub    *nats.Subscription
	kw     jetstream.KeyWatcher
	status chan nats.Status
	prefix string // of the notification subjects

	mu       sync.Mutex
	dirty    map[string]bool // pipe key: true if its meta changed
	all      bool            // every known pipeline changed
	watchers map[*watcher]struct{}
	kick     chan struct{}
	quit     chan struct{}
	done     chan struct{}
}

type watcher struct {
	f       func(pipes.Change)
	mu      sync.RWMutex // held for reading by each call; stop takes it
	stopped bool
}

func (l *Log) startWatch(ctx context.Context) (*watchState, error) {
	w := &watchState{prefix: l.cfg.Prefix + ".n.", dirty: map[string]bool{}, watchers: map[*watcher]struct{}{},
		kick: make(chan struct{}, 1), quit: make(chan struct{}), done: make(chan struct{})}
	sub, err := l.nc.Subscribe(w.prefix+"*", func(m *nats.Msg) {
		key := m.Subject[len(w.prefix):]
		if p := l.cached(key); p != nil {
			if seq, err := strconv.ParseUint(m.Header.Get(hdrSequence), 10, 64); err == nil {
				p.seen(seq)
			}
		}
		w.mark(key, false)
	})
	if err != nil {
		return nil, err
	}
	sub.SetPendingLimits(-1, -1)
	w.sub = sub
	// The watch runs until Close: not bound to Open's context.
	kw, err := l.meta.WatchAll(context.Background(), jetstream.UpdatesOnly(), jetstream.IgnoreDeletes())
	if err != nil {
		sub.Unsubscribe()
		return nil, err
	}
	w.kw = kw
	w.status = l.nc.StatusChanged(nats.CONNECTED, nats.RECONNECTING, nats.DISCONNECTED)
	l.bg.Add(2)
	go func() {
		defer l.bg.Done()
		l.watchLoop(w)
	}()
	go func() {
		defer l.bg.Done()
		defer close(w.done)
		l.dispatch(w)
	}()
	return w, nil
}

// watchLoop follows the meta bucket and the connection's status.
func (l *Log) watchLoop(w *watchState) {
	down := false
	for {
		select {
		case <-w.quit:
			return
		case e, ok := <-w.kw.Updates():
			if !ok {
				return
			}
			if e == nil || e.Operation() != jetstream.KeyValuePut {
				continue
			}
			if m, err := decodeMeta(e.Value()); err == nil {
				l.pipeOf(e.Key(), m)
				w.mark(e.Key(), true)
			}
		case s, ok := <-w.status:
			if !ok {
				w.status = nil
				continue
			}
			switch s {
			case nats.RECONNECTING, nats.DISCONNECTED:
				if !down {
					l.lostConn()
				}
				down = true
			case nats.CONNECTED:
				if down {
					down = false
					w.mu.Lock()
					w.all = true
					w.mu.Unlock()
					w.poke()
				}
			}
		}
	}
}

func (w *watchState) poke() {
	select {
	case w.kick <- struct{}{}:
	default:
	}
}

// mark records a change of the pipeline of key.
func (w *watchState) mark(key string, meta bool) {
	w.mu.Lock()
	w.dirty[key] = w.dirty[key] || meta
	w.mu.Unlock()
	w.poke()
}

// wakeLater tells the pipeline's watchers to read again after d.
func (l *Log) wakeLater(p *pipe, d time.Duration) {
	time.AfterFunc(d, func() {
		select {
		case <-l.end:
		default:
			l.wt.mark(p.key, false)
		}
	})
}

// dispatch calls the watchers with the changes, coalesced.
func (l *Log) dispatch(w *watchState) {
	for {
		select {
		case <-w.quit:
			return
		case <-w.kick:
		}
		w.mu.Lock()
		dirty, all := w.dirty, w.all
		w.dirty, w.all = map[string]bool{}, false
		ws := make([]*watcher, 0, len(w.watchers))
		for x := range w.watchers {
			ws = append(ws, x)
		}
		w.mu.Unlock()
		if all {
			l.mu.Lock()
			for k := range l.pipes {
				dirty[k] = true
			}
			l.mu.Unlock()
		}
		for key, meta := range dirty {
			p := l.cached(key)
			if p == nil {
				// Appended by another hub to a pipeline this log has not
				// seen yet: learn its name.
				ctx, cancel := context.WithTimeout(context.Background(), l.cfg.Timeout)
				m, _, err := l.metaGet(ctx, key)
				cancel()
				if err != nil {
					continue
				}
				p, meta = l.pipeOf(key, m), true
			}
			c := pipes.Change{Pipeline: p.name, Meta: meta}
			for _, x := range ws {
				x.call(c)
			}
		}
	}
}

func (x *watcher) call(c pipes.Change) {
	x.mu.RLock()
	defer x.mu.RUnlock()
	if !x.stopped {
		x.f(c)
	}
}

// Watch calls f for every change of the log, by this hub or another,
// until stop is called: see pipes.SharedLog. The calls come from one
// goroutine. stop must not be called from f.
func (l *Log) Watch(f func(pipes.Change)) (stop func()) {
	x := &watcher{f: f}
	w := l.wt
	w.mu.Lock()
	w.watchers[x] = struct{}{}
	w.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			w.mu.Lock()
			delete(w.watchers, x)
			w.mu.Unlock()
			x.mu.Lock()
			x.stopped = true
			x.mu.Unlock()
		})
	}
}

func (w *watchState) stop(l *Log) {
	select {
	case <-w.quit:
		return
	default:
	}
	close(w.quit)
	w.sub.Unsubscribe()
	w.kw.Stop()
	l.nc.RemoveStatusListener(w.status)
}
