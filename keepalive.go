package bokbok

import (
	"fmt"
	"time"
)

// Keepalive: a timer (no goroutine while it waits) checks when the peer was
// last heard from. Any inbound frame counts. After KeepaliveInterval of
// silence it sends a PING (id 0); if the peer stays silent for
// KeepaliveTimeout more, the connection closes with ErrKeepaliveTimeout.

func (c *Conn) startKeepalive() {
	if c.cfg.KeepaliveInterval < 0 {
		return
	}
	c.mu.Lock()
	if c.err == nil {
		c.ka = time.AfterFunc(c.cfg.KeepaliveInterval, c.keepaliveTick)
	}
	c.mu.Unlock()
}

func (c *Conn) keepaliveTick() {
	iv, to := c.cfg.KeepaliveInterval, c.cfg.KeepaliveTimeout
	silent := time.Since(c.epoch) - time.Duration(c.lastRecv.Load())
	var next time.Duration
	switch {
	case silent >= iv+to:
		c.fail(fmt.Errorf("%w: nothing heard from the peer for %v", ErrKeepaliveTimeout, silent.Round(time.Millisecond)))
		return
	case silent >= iv:
		c.sendq.pushCtrl(kindPing, 0)
		next = iv + to - silent
	default:
		next = iv - silent
	}
	c.mu.Lock()
	if c.err == nil {
		c.ka.Reset(next)
	}
	c.mu.Unlock()
}
