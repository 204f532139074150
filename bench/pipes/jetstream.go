package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

const (
	streamName    = "CHAT"
	streamSubject = "chat"
)

// jsCluster is an embedded NATS server with JetStream on 127.0.0.1, its
// store in a temporary directory, a file-backed stream with one replica,
// one publishing connection and one connection per durable pull
// consumer. In the fsync mode the server runs with SyncAlways (every
// message written to the stream is fsynced before its publish is
// acknowledged); otherwise with the default sync interval (2 minutes).
type jsCluster struct {
	o   *options
	dir string
	srv *server.Server

	pubConn *nats.Conn
	js      jetstream.JetStream
	pubErr  atomic.Pointer[error]

	listeners []*jsListener
}

type jsListener struct {
	durable string
	chk     *checker
	ackAll  bool
	every   int

	nc   *nats.Conn
	cons jetstream.Consumer
	cc   jetstream.ConsumeContext

	// Touched only by the handler (serialised by the client) and, once the
	// consumer has stopped, by stop.
	received  int
	last      jetstream.Msg
	lastSeq   uint64
	lastAcked bool
}

func startJetStream(ctx context.Context, m mode, o *options, cs []*checker) (_ cluster, err error) {
	dir, err := tempDir("jetstream")
	if err != nil {
		return nil, err
	}
	c := &jsCluster{o: o, dir: dir}
	defer func() {
		if err != nil {
			c.close()
		}
	}()
	opts := &server.Options{
		Host:       "127.0.0.1",
		Port:       server.RANDOM_PORT,
		JetStream:  true,
		StoreDir:   dir,
		SyncAlways: m.fsync,
		NoLog:      true,
		NoSigs:     true,
	}
	c.srv, err = server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("nats server: %w", err)
	}
	go c.srv.Start()
	if !c.srv.ReadyForConnections(10 * time.Second) {
		return nil, errors.New("nats server: not ready after 10s")
	}
	if !c.srv.JetStreamEnabled() {
		return nil, errors.New("nats server: JetStream is not enabled")
	}

	c.pubConn, err = nats.Connect(c.srv.ClientURL(), nats.Name("sender"))
	if err != nil {
		return nil, err
	}
	c.js, err = jetstream.New(c.pubConn,
		jetstream.WithPublishAsyncMaxPending(o.jsWindow),
		jetstream.WithPublishAsyncErrHandler(func(_ jetstream.JetStream, msg *nats.Msg, err error) {
			err = fmt.Errorf("publish: %w", err)
			c.pubErr.CompareAndSwap(nil, &err)
		}))
	if err != nil {
		return nil, err
	}
	if _, err := c.js.CreateStream(ctx, jetstream.StreamConfig{
		Name:     streamName,
		Subjects: []string{streamSubject},
		Storage:  jetstream.FileStorage,
		Replicas: 1,
	}); err != nil {
		return nil, fmt.Errorf("stream: %w", err)
	}
	for i, chk := range cs {
		l := &jsListener{durable: fmt.Sprintf("listener%d", i), chk: chk, ackAll: o.jsAck == "all", every: o.jsAckEvery}
		c.listeners = append(c.listeners, l)
		policy := jetstream.AckExplicitPolicy
		if l.ackAll {
			policy = jetstream.AckAllPolicy
		}
		if _, err := c.js.CreateConsumer(ctx, streamName, jetstream.ConsumerConfig{
			Durable:       l.durable,
			AckPolicy:     policy,
			DeliverPolicy: jetstream.DeliverAllPolicy,
		}); err != nil {
			return nil, fmt.Errorf("consumer %s: %w", l.durable, err)
		}
		if err := c.startListener(ctx, i); err != nil {
			return nil, err
		}
	}
	return c, nil
}

func (c *jsCluster) startListener(ctx context.Context, i int) error {
	l := c.listeners[i]
	nc, err := nats.Connect(c.srv.ClientURL(), nats.Name(l.durable))
	if err != nil {
		return err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return err
	}
	cons, err := js.Consumer(ctx, streamName, l.durable)
	if err != nil {
		nc.Close()
		return fmt.Errorf("consumer %s: %w", l.durable, err)
	}
	cc, err := cons.Consume(l.handle, jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
		if !errors.Is(err, nats.ErrConnectionClosed) && !errors.Is(err, jetstream.ErrConsumerDeleted) {
			l.chk.fail(fmt.Errorf("consume: %w", err))
		}
	}))
	if err != nil {
		nc.Close()
		return fmt.Errorf("consume %s: %w", l.durable, err)
	}
	l.nc, l.cons, l.cc = nc, cons, cc
	return nil
}

// handle checks a message and acknowledges it: each one (AckExplicit),
// or every l.every-th and the last expected one (AckAll, which
// acknowledges everything up to it).
func (l *jsListener) handle(msg jetstream.Msg) {
	md, err := msg.Metadata()
	if err != nil {
		l.chk.fail(fmt.Errorf("metadata: %w", err))
		return
	}
	l.chk.got(md.Sequence.Stream, msg.Data())
	l.received++
	l.last, l.lastSeq, l.lastAcked = msg, md.Sequence.Stream, false
	if !l.ackAll || l.received%l.every == 0 || l.received == l.chk.n+1 {
		if err := msg.Ack(); err != nil {
			l.chk.fail(fmt.Errorf("ack: %w", err))
		}
		l.lastAcked = true
	}
}

// stopListener stops consuming, acknowledges the last message taken and
// waits until the server's ack floor has reached it, then closes the
// connection: the consumer resumes after it.
func (c *jsCluster) stopListener(ctx context.Context, i int) error {
	l := c.listeners[i]
	l.cc.Stop()
	<-l.cc.Closed()
	if l.last != nil && !l.lastAcked {
		if err := l.last.Ack(); err != nil {
			return err
		}
		l.lastAcked = true
	}
	err := waitAckFloor(ctx, l.cons, l.lastSeq)
	l.nc.Close()
	l.nc, l.cons, l.cc = nil, nil, nil
	return err
}

func waitAckFloor(ctx context.Context, cons jetstream.Consumer, seq uint64) error {
	for {
		info, err := cons.Info(ctx)
		if err != nil {
			return err
		}
		if info.AckFloor.Stream >= seq {
			return nil
		}
		select {
		case <-time.After(5 * time.Millisecond):
		case <-ctx.Done():
			return fmt.Errorf("waiting for the ack floor to reach %d (at %d): %w", seq, info.AckFloor.Stream, ctx.Err())
		}
	}
}

func (c *jsCluster) putAll(ctx context.Context, n int) error {
	for id := uint64(1); id <= uint64(n); id++ {
		if err := c.publish(ctx, id); err != nil {
			return err
		}
	}
	return nil
}

// publish publishes one message asynchronously; it blocks only while
// o.jsWindow acknowledgements are pending.
func (c *jsCluster) publish(ctx context.Context, id uint64) error {
	if p := c.pubErr.Load(); p != nil {
		return *p
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	// The client keeps the message until it is acknowledged (to retry
	// it), so each one has its own buffer.
	data := payload(make([]byte, c.o.size), id)
	if _, err := c.js.PublishAsync(streamSubject, data, jetstream.WithStallWait(time.Minute)); err != nil {
		return fmt.Errorf("publish %d: %w", id, err)
	}
	return nil
}

func (c *jsCluster) putAsync(ctx context.Context, id uint64) {
	if err := c.publish(ctx, id); err != nil {
		c.pubErr.CompareAndSwap(nil, &err)
	}
}

func (c *jsCluster) waitPuts(ctx context.Context) error {
	if p := c.pubErr.Load(); p != nil {
		return *p
	}
	return nil
}

func (c *jsCluster) flush(ctx context.Context) error {
	select {
	case <-c.js.PublishAsyncComplete():
	case <-ctx.Done():
		return fmt.Errorf("waiting for %d publish acks: %w", c.js.PublishAsyncPending(), ctx.Err())
	}
	if p := c.pubErr.Load(); p != nil {
		return *p
	}
	return nil
}

func (c *jsCluster) close() error {
	var errs []error
	var wg sync.WaitGroup
	for _, l := range c.listeners {
		if l.cc != nil {
			l.cc.Stop()
			wg.Go(func() { <-l.cc.Closed() })
		}
	}
	wg.Wait()
	for _, l := range c.listeners {
		if l.nc != nil {
			l.nc.Close()
		}
	}
	if c.js != nil {
		c.js.CleanupPublisher()
	}
	if c.pubConn != nil {
		c.pubConn.Close()
	}
	if c.srv != nil {
		c.srv.Shutdown()
		c.srv.WaitForShutdown()
	}
	errs = append(errs, os.RemoveAll(c.dir))
	return errors.Join(errs...)
}
