package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/bokbok-go/bokbok"
	"github.com/bokbok-go/bokbok/pipes"
)

// Message is one chat message, as it travels on the pipeline: JSON
// {"text": ..., "sender": ..., "timestamp": ...}, the timestamp in
// seconds since 1970 (Python's time.time()).
type Message struct {
	Text      string  `json:"text"`
	Sender    string  `json:"sender"`
	Timestamp float64 `json:"timestamp"`

	Own bool `json:"-"` // sent from this node (this directory)
}

// Time returns when the message was typed, by its sender's clock.
func (m Message) Time() time.Time {
	return time.UnixMicro(int64(m.Timestamp * 1e6))
}

// Chat is the backend of a chat program: a node of a pipes network and
// its pipeline CHAT. Use it as NewChat, SetupUser, SetListener,
// ConnectToNetwork, then SendMessage for each message, and Close. Once
// ConnectToNetwork has returned, SendMessage and SetListener may be
// called from any goroutine.
type Chat struct {
	// Persistent makes CHAT a persistent pipeline: a message sent while
	// disconnected waits in the node's outbox, on disk, and is sent on
	// reconnection; a node that was away gets every message it missed.
	// Without it, messages reach only the nodes connected when they are
	// sent. Set it before ConnectToNetwork; the directory and the hub
	// remember the kind, so keep it the same across runs.
	Persistent bool

	// Realm is the hub's bokbok realm.
	Realm string

	// OnConnect, OnDisconnect and OnError, if set, are told of the
	// connection to the hub and of the hub refusing CHAT (see
	// pipes.NodeConfig and pipes.PipelineOptions). Set them before
	// ConnectToNetwork.
	OnConnect    func()
	OnDisconnect func(err error)
	OnError      func(err error)

	dir      string
	user     string
	node     *pipes.Node
	pipeline *pipes.Pipeline

	mu       sync.Mutex // guards listener, listens, and pipeline as it is set
	listener func(Message)
	listens  bool // the pipeline has c.packetListener
}

// NewChat returns a chat keeping its state in dir: the node's identity,
// its outbox and how far it has read CHAT.
func NewChat(dir string) *Chat { return &Chat{dir: dir} }

// SetupUser sets the user name, which must be the one the hub's keys file
// gives the key to. A directory belongs to the first user that connects
// with it.
func (c *Chat) SetupUser(name string) error {
	if c.user != "" {
		return fmt.Errorf("user is already configured: %s", c.user)
	}
	c.user = name
	return nil
}

// ConnectToNetwork opens the node and its pipeline CHAT, and starts
// connecting to the hub in the background (reconnecting when the
// connection is lost) until Close. key is the user's, as the hub's keys
// file gives it.
func (c *Chat) ConnectToNetwork(hub string, key bokbok.Key) error {
	if c.node != nil {
		return errors.New("already connected")
	}
	if c.user == "" {
		return errors.New("no user: call SetupUser first")
	}
	node, err := pipes.OpenNode(pipes.NodeConfig{
		Dir: c.dir, Hub: hub, User: c.user, Key: key, Realm: c.Realm,
		OnConnect: c.OnConnect, OnDisconnect: c.OnDisconnect,
	})
	if err != nil {
		return err
	}
	c.node = node
	if err := c.setupPipeline(); err != nil {
		node.Close()
		c.node = nil
		return err
	}
	return nil
}

// setupPipeline opens CHAT, creating it if needed.
func (c *Chat) setupPipeline() error {
	p, err := c.node.Pipeline("CHAT", &pipes.PipelineOptions{Persistent: c.Persistent, OnError: c.OnError})
	if errors.Is(err, pipes.ErrKindMismatch) {
		return fmt.Errorf("%w (this directory was used with the other kind: keep -persistent as it was, or use another directory)", err)
	}
	if err != nil {
		return err
	}
	c.mu.Lock()
	c.pipeline = p
	c.mu.Unlock()
	c.listen()
	return nil
}

// listen adds the packet listener to CHAT once there is a UI listener to
// hand messages to. Not before: the first Listen of a persistent
// pipeline delivers the messages that arrived while the program was not
// running, and moves the node's cursor past them.
func (c *Chat) listen() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.pipeline != nil && c.listener != nil && !c.listens {
		c.listens = true
		c.pipeline.Listen(c.packetListener)
	}
}

// SendMessage puts a message on CHAT. On a persistent pipeline it returns
// once the message is on disk, connected or not; on a transient one once
// the hub has it, and while disconnected it fails with an error matching
// bokbok.ErrNotConnected.
func (c *Chat) SendMessage(ctx context.Context, text string) error {
	if c.pipeline == nil {
		return errors.New("not connected: call ConnectToNetwork first")
	}
	m := Message{Text: text, Sender: c.user, Timestamp: float64(time.Now().UnixMicro()) / 1e6}
	data, err := json.Marshal(m)
	if err != nil {
		return err
	}
	_, err = c.pipeline.Put(ctx, data)
	return err
}

// packetListener is given every packet of CHAT, from every node, in the
// hub's order, and passes the message on to the UI listener.
func (c *Chat) packetListener(pk pipes.Packet) {
	var m Message
	if err := json.Unmarshal(pk.Data, &m); err != nil {
		return // not a chat message
	}
	// The JSON's sender is what the sending program wrote; the packet's
	// Sender is the user the hub authenticated.
	m.Sender, m.Own = pk.Sender, pk.Own
	c.mu.Lock()
	fn := c.listener
	c.mu.Unlock()
	if fn != nil {
		fn(m)
	}
}

// SetListener sets the function given each message, one at a time, on a
// goroutine of the node. Set it before ConnectToNetwork, or messages
// start arriving only once it is set.
func (c *Chat) SetListener(fn func(Message)) {
	c.mu.Lock()
	c.listener = fn
	c.mu.Unlock()
	c.listen()
}

// Pending returns how many messages wait in the outbox for the hub.
func (c *Chat) Pending() int {
	if c.node == nil {
		return 0
	}
	n, _ := c.node.Outbox()
	return n
}

// Close disconnects and closes the directory; messages still in the
// outbox stay there, and are sent when the chat next connects.
func (c *Chat) Close() error {
	if c.node == nil {
		return nil
	}
	return c.node.Close()
}
