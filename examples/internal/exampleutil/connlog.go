package exampleutil

import (
	"fmt"
	"log"
	"sync"
	"sync/atomic"

	"github.com/bokbok-go/bokbok"
)

// ConnLog numbers a server's connections in the order they open, and logs
// each one's opening and closing. Its zero value is ready to use, from any
// goroutine; its methods Opened and Closed are the server's OnOpen and
// OnClose.
type ConnLog struct {
	// From, if not nil, says where a connection comes from, for the log
	// line of its opening.
	From func(c *bokbok.Conn) string

	last atomic.Int64
	ids  sync.Map // *bokbok.Conn -> its number
}

// Opened gives c the next number and logs its opening: "connection #N
// opened", where it comes from, and the user it authenticated as (c.User)
// or "(insecure)". It accepts every connection, as a bokbok.Server OnOpen.
func (l *ConnLog) Opened(c *bokbok.Conn) error {
	l.ids.Store(c, l.last.Add(1))
	from := ""
	if l.From != nil {
		from = " from " + l.From(c)
	}
	if c.User() != "" {
		log.Printf("connection %s opened%s, authenticated as user %q", l.Name(c), from, c.User())
	} else {
		log.Printf("connection %s opened%s (insecure)", l.Name(c), from)
	}
	return nil
}

// Closed logs why c closed and forgets it, as a bokbok.Config OnClose.
func (l *ConnLog) Closed(c *bokbok.Conn, reason error) {
	log.Printf("connection %s closed: %v", l.Name(c), reason)
	l.ids.Delete(c)
}

// Name returns c's number for the log, such as "#1".
func (l *ConnLog) Name(c *bokbok.Conn) string {
	id, _ := l.ids.Load(c)
	return fmt.Sprintf("#%v", id)
}
