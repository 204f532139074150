package bokbok

import (
	"fmt"
	"time"
)

// Keepalive: a timer (no goroutine while it waits) checks when the peer was
// last heard from. Any inbound frame counts. After KeepaliveInterval of
// silence it sends a PING (id 0); if nothing at all arrives within
// KeepaliveTimeout of that PING, the connection closes with
// ErrKeepaliveTimeout. The timeout counts from the PING, not from the last
// frame, so a timer that fires late never closes a connection whose peer
// answered.

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

// keepaliveTick runs on the keepalive timer; runs never overlap (the
// timer is re-armed only at the end of a run), so kaPing needs no lock.
func (c *Conn) keepaliveTick() {
	iv, to := c.cfg.KeepaliveInterval, c.cfg.KeepaliveTimeout
	now := time.Since(c.epoch)
	last := time.Duration(c.lastRecv.Load())
	var next time.Duration
	switch silent := now - last; {
	case c.kaPing > last: // our PING is out and nothing has come since
		waited := now - c.kaPing
		if waited >= to {
			c.fail(fmt.Errorf("%w: nothing heard from the peer for %v", ErrKeepaliveTimeout, silent.Round(time.Millisecond)))
			return
		}
		next = min(iv, to-waited)
	case silent >= iv:
		c.sendq.pushCtrl(kindPing, 0)
		c.kaPing = now
		next = min(iv, to)
	default:
		next = iv - silent
	}
	c.mu.Lock()
	if c.err == nil {
		c.ka.Reset(next)
	}
	c.mu.Unlock()
}
