package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"

	"github.com/bokbok-go/bokbok"
	"github.com/bokbok-go/bokbok/pipes"
)

const pipelineName = "CHAT"

// bokbokCluster is a pipes hub on 127.0.0.1 with its log in a temporary
// directory, one sender node and one node per listener, each node with
// its own directory. NoSync is set on all of them in the no-fsync mode.
type bokbokCluster struct {
	o      *options
	noSync bool
	dir    string
	keys   map[string]bokbok.Key

	hub       *pipes.Hub
	addr      string
	serveDone chan error

	sender *pipes.Node
	pipe   *pipes.Pipeline

	listeners []*bokbokListener

	async    sync.WaitGroup
	asyncSem chan struct{}
	asyncErr atomic.Pointer[error]
}

type bokbokListener struct {
	user string
	dir  string
	chk  *checker
	node *pipes.Node
}

func startBokbok(ctx context.Context, m mode, o *options, cs []*checker) (_ cluster, err error) {
	dir, err := tempDir("bokbok")
	if err != nil {
		return nil, err
	}
	c := &bokbokCluster{o: o, noSync: !m.fsync, dir: dir, keys: map[string]bokbok.Key{}, asyncSem: make(chan struct{}, 64)}
	defer func() {
		if err != nil {
			c.close()
		}
	}()
	users := []string{"sender"}
	for i := range cs {
		users = append(users, fmt.Sprintf("listener%d", i))
	}
	for _, u := range users {
		k, err := bokbok.GenerateKey()
		if err != nil {
			return nil, err
		}
		c.keys[u] = k
	}
	c.hub, err = pipes.NewHub(pipes.HubConfig{
		Dir:    filepath.Join(dir, "hub"),
		NoSync: c.noSync,
		UserKeys: func(user string) []bokbok.Key {
			if k, ok := c.keys[user]; ok { // read-only after start
				return []bokbok.Key{k}
			}
			return nil
		},
	})
	if err != nil {
		return nil, fmt.Errorf("hub: %w", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	c.addr = ln.Addr().String()
	c.serveDone = make(chan error, 1)
	go func() { c.serveDone <- c.hub.Serve(ln) }()

	c.sender, err = c.openNode("sender", filepath.Join(dir, "sender"))
	if err != nil {
		return nil, err
	}
	c.pipe, err = c.sender.Pipeline(pipelineName, &pipes.PipelineOptions{Persistent: true})
	if err != nil {
		return nil, err
	}
	for i, chk := range cs {
		l := &bokbokListener{user: users[i+1], dir: filepath.Join(dir, users[i+1]), chk: chk}
		c.listeners = append(c.listeners, l)
		if err := c.startListener(ctx, i); err != nil {
			return nil, err
		}
	}
	return c, nil
}

func (c *bokbokCluster) openNode(user, dir string) (*pipes.Node, error) {
	n, err := pipes.OpenNode(pipes.NodeConfig{Dir: dir, Hub: c.addr, User: user, Key: c.keys[user], NoSync: c.noSync})
	if err != nil {
		return nil, fmt.Errorf("node %s: %w", user, err)
	}
	return n, nil
}

func (c *bokbokCluster) startListener(ctx context.Context, i int) error {
	l := c.listeners[i]
	n, err := c.openNode(l.user, l.dir)
	if err != nil {
		return err
	}
	p, err := n.Pipeline(pipelineName, &pipes.PipelineOptions{
		Persistent: true,
		OnGap:      func(g pipes.Gap) { l.chk.fail(fmt.Errorf("gap %d..%d (%v)", g.From, g.To, g.Reason)) },
		OnError:    func(err error) { l.chk.fail(fmt.Errorf("pipeline refused: %w", err)) },
	})
	if err != nil {
		n.Close()
		return err
	}
	p.Listen(func(pk pipes.Packet) { l.chk.got(pk.Seq, pk.Data) })
	l.node = n
	return nil
}

func (c *bokbokCluster) stopListener(ctx context.Context, i int) error {
	l := c.listeners[i]
	err := l.node.Close()
	l.node = nil
	return err
}

func (c *bokbokCluster) putAll(ctx context.Context, n int) error {
	var next atomic.Uint64
	var wg sync.WaitGroup
	errs := make([]error, c.o.putGoroutines)
	for g := range c.o.putGoroutines {
		wg.Go(func() {
			buf := make([]byte, c.o.size)
			for {
				id := next.Add(1)
				if id > uint64(n) {
					return
				}
				if _, err := c.pipe.Put(ctx, payload(buf, id)); err != nil {
					errs[g] = fmt.Errorf("put %d: %w", id, err)
					return
				}
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

func (c *bokbokCluster) putAsync(ctx context.Context, id uint64) {
	select {
	case c.asyncSem <- struct{}{}:
	case <-ctx.Done():
		c.asyncErr.CompareAndSwap(nil, new(ctx.Err()))
		return
	}
	buf := payload(make([]byte, c.o.size), id)
	c.async.Go(func() {
		defer func() { <-c.asyncSem }()
		if _, err := c.pipe.Put(ctx, buf); err != nil {
			err = fmt.Errorf("put %d: %w", id, err)
			c.asyncErr.CompareAndSwap(nil, &err)
		}
	})
}

func (c *bokbokCluster) waitPuts(ctx context.Context) error {
	c.async.Wait()
	if p := c.asyncErr.Load(); p != nil {
		return *p
	}
	return nil
}

func (c *bokbokCluster) flush(ctx context.Context) error { return c.sender.Flush(ctx) }

func (c *bokbokCluster) close() error {
	var errs []error
	for _, l := range c.listeners {
		if l.node != nil {
			errs = append(errs, l.node.Close())
		}
	}
	if c.sender != nil {
		errs = append(errs, c.sender.Close())
	}
	if c.hub != nil {
		errs = append(errs, c.hub.Close())
		if c.serveDone != nil {
			if err := <-c.serveDone; !errors.Is(err, bokbok.ErrServerClosed) {
				errs = append(errs, err)
			}
		}
	}
	errs = append(errs, os.RemoveAll(c.dir))
	return errors.Join(errs...)
}
