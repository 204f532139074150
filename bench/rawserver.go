package main

import (
	"errors"
	"net"
	"sync"
)

// rawServer accepts raw connections and echoes every request.
type rawServer struct {
	ln     net.Listener
	tr     transport
	mu     sync.Mutex
	conns  map[*rawConn]struct{}
	closed bool
	wg     sync.WaitGroup
}

// startRawServer listens on 127.0.0.1 and serves with tr; see system.start.
func startRawServer(tr transport) (string, func(), error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	s := &rawServer{ln: ln, tr: tr, conns: make(map[*rawConn]struct{})}
	s.wg.Add(1)
	go s.acceptLoop()
	return ln.Addr().String(), s.stop, nil
}

// acceptLoop serves every accepted connection on its own goroutine.
func (s *rawServer) acceptLoop() {
	defer s.wg.Done()
	for {
		nc, err := s.ln.Accept()
		if err != nil {
			return
		}
		c := newRawConn(nc, s.tr)
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			nc.Close()
			return
		}
		s.conns[c] = struct{}{}
		s.mu.Unlock()
		s.wg.Add(1)
		go func() { defer s.wg.Done(); s.serve(c) }()
	}
}

// serve reads requests and answers each on its own goroutine. A reply
// that fails to go out has failed the connection, which ends this loop.
func (s *rawServer) serve(c *rawConn) {
	defer func() {
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
	}()
	for {
		id, m, err := c.readFrame()
		if err != nil {
			c.fail(err)
			return
		}
		go func() {
			reply := &Msg{Seq: m.Seq, Data: m.Data} // the echo "handler"
			c.send(id, reply)
		}()
	}
}

// stop closes the listener and every connection and waits for the
// connections' readers.
func (s *rawServer) stop() {
	s.ln.Close()
	s.mu.Lock()
	s.closed = true
	for c := range s.conns {
		c.fail(errors.New("server stopped"))
	}
	s.mu.Unlock()
	s.wg.Wait()
}
