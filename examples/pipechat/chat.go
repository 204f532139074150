package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/bokbok-go/bokbok"
	"github.com/bokbok-go/bokbok/pipes"
)

// Message is one chat message, as it travels on a channel's pipeline:
// JSON {"text": ..., "sender": ..., "timestamp": ...}, the timestamp in
// seconds since 1970 (Python's time.time()).
type Message struct {
	Text      string  `json:"text"`
	Sender    string  `json:"sender"`
	Timestamp float64 `json:"timestamp"`

	Channel string `json:"-"` // the channel it was sent on
	Seq     uint64 `json:"-"` // its place in the channel, the hub's sequence number
	Own     bool   `json:"-"` // sent from this node (this directory)
}

// Time returns when the message was typed, by its sender's clock.
func (m Message) Time() time.Time {
	return time.UnixMicro(int64(m.Timestamp * 1e6))
}

// DefaultChannel is the channel every chat joins when it connects.
const DefaultChannel = "CHAT"

// directPrefix begins the name of every direct channel.
const directPrefix = "dm:"

// DirectChannel returns the name of the direct channel of users a and b:
// "dm:" and the two names, sorted, joined by "+"; the same whichever of
// the two asks.
func DirectChannel(a, b string) string {
	if b < a {
		a, b = b, a
	}
	return directPrefix + a + "+" + b
}

// ErrNoHistory is returned by History and Search on a transient channel,
// which keeps no messages.
var ErrNoHistory = errors.New("the channel is transient: it keeps no history")

// ChannelInfo describes a channel, as Channels lists it.
type ChannelInfo struct {
	Name       string
	Persistent bool     // it keeps its messages
	Encrypted  bool     // end-to-end encrypted: the hub holds ciphertext only
	Members    []string // a private channel's members; none for an open one
	Last       uint64   // the sequence number of its last message
	Joined     bool     // this chat listens to it
	Current    bool     // it is this chat's current channel
}

// Kind names the kind of the channel: "transient", "persistent",
// "private" (persistent or not, open to its members only) or "encrypted"
// (private and end-to-end encrypted).
func (ci ChannelInfo) Kind() string {
	switch {
	case ci.Encrypted:
		return "encrypted"
	case len(ci.Members) > 0:
		return "private"
	case ci.Persistent:
		return "persistent"
	}
	return "transient"
}

// Chat is the backend of a chat program: a node of a pipes network and
// the channels it has joined, each a pipeline. Use it as NewChat,
// SetupUser, SetListener, ConnectToNetwork (which joins CHAT), then
// SendMessage for each message, Join or Direct to change channels, and
// Close. Once ConnectToNetwork has returned, every method may be called
// from any goroutine.
type Chat struct {
	// Persistent makes the channels this chat creates (CHAT among them)
	// persistent pipelines: a message sent while disconnected waits in
	// the node's outbox, on disk, and is sent on reconnection; a node
	// that was away gets every message it missed; History and Search
	// work. Without it, messages reach only the nodes connected when they
	// are sent. Set it before ConnectToNetwork; the directory and the hub
	// remember each channel's kind, so keep it the same across runs.
	// Direct channels are always persistent.
	Persistent bool

	// Realm is the hub's bokbok realm.
	Realm string

	// OnConnect, OnDisconnect and OnError, if set, are told of the
	// connection to the hub, and of the hub refusing a channel (see
	// pipes.NodeConfig and pipes.PipelineOptions); the hub's refusals
	// are *pipes.HubError. Set them before ConnectToNetwork.
	OnConnect    func()
	OnDisconnect func(err error)
	OnError      func(channel string, err error)

	dir  string
	user string
	node *pipes.Node

	mu       sync.Mutex // guards the fields below
	listener func(Message)
	channels map[string]*channel // the channels joined, by name
	current  string
}

// channel is a channel the chat has joined.
type channel struct {
	p         *pipes.Pipeline
	peer      string // a direct channel's other user
	listening bool   // p has the chat's packet listener
}

// NewChat returns a chat keeping its state in dir: the node's identity,
// its outbox and how far it has read each channel.
func NewChat(dir string) *Chat { return &Chat{dir: dir, channels: map[string]*channel{}} }

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

// ConnectToNetwork opens the node, joins CHAT, and starts connecting to
// the hub in the background (reconnecting when the connection is lost)
// until Close. key is the user's, as the hub's keys file gives it.
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
	err = c.Join(DefaultChannel)
	if errors.Is(err, pipes.ErrKindMismatch) {
		err = fmt.Errorf("%w (this directory was used with the other kind: keep -persistent as it was, or use another directory)", err)
	}
	if err != nil {
		node.Close()
		c.node = nil
		return err
	}
	return nil
}

// Join joins the channel name, creating it (of the chat's kind, see
// Persistent) if it does not exist, and makes it the current channel: the
// one SendMessage, History and Search use. Joining a channel again only
// makes it current. The chat listens to every channel it has joined,
// until Close; a persistent channel first delivers the messages this
// directory has not been given yet (all of them, the first time).
//
// A name beginning with "dm:" is a direct channel's: this user's with
// another (see DirectChannel) is joined as Direct does; another pair's is
// never created, and the hub refuses it (OnError) unless this user is a
// member.
func (c *Chat) Join(name string) error {
	if strings.HasPrefix(name, directPrefix) {
		if peer, ok := c.peerOf(name); ok {
			return c.Direct(peer)
		}
		// Without members, the hub opens it if it exists and this user
		// is a member, and refuses to create it.
		return c.join(name, "", pipes.PipelineOptions{Persistent: true, Encrypted: true})
	}
	return c.join(name, "", pipes.PipelineOptions{Persistent: c.Persistent})
}

// Direct joins the direct channel of this chat's user and user, as Join
// does: a private, end-to-end encrypted, persistent channel named by
// DirectChannel, whose only members are the two users. Both have to join
// it; its key reaches the second one's node from the first one's while
// both are connected and in the channel (until then SendMessage waits for
// it).
func (c *Chat) Direct(user string) error {
	if user == "" || user == c.user {
		return errors.New("a direct channel is with another user")
	}
	return c.join(DirectChannel(c.user, user), user, pipes.PipelineOptions{Persistent: true, Encrypted: true, Members: []string{user}})
}

// peerOf returns the other user of name, if it is the direct channel of
// this chat's user with another.
func (c *Chat) peerOf(name string) (string, bool) {
	a, b, ok := strings.Cut(strings.TrimPrefix(name, directPrefix), "+")
	switch {
	case !ok || name != DirectChannel(a, b) || a == b:
		return "", false
	case a == c.user:
		return b, true
	case b == c.user:
		return a, true
	}
	return "", false
}

// join opens the pipeline of a channel with opts, unless it is joined
// already, and makes it current.
func (c *Chat) join(name, peer string, opts pipes.PipelineOptions) error {
	if c.node == nil {
		return errors.New("not connected: call ConnectToNetwork first")
	}
	c.mu.Lock()
	joined := c.channels[name] != nil
	c.mu.Unlock()
	if !joined {
		opts.OnError = func(err error) {
			if c.OnError != nil {
				c.OnError(name, err)
			}
		}
		p, err := c.node.Pipeline(name, &opts)
		if err != nil {
			return err
		}
		c.mu.Lock()
		if c.channels[name] == nil {
			c.channels[name] = &channel{p: p, peer: peer}
		}
		c.mu.Unlock()
	}
	c.mu.Lock()
	c.current = name
	c.mu.Unlock()
	c.listen()
	return nil
}

// listen adds the packet listener to the channels joined once there is a
// UI listener to hand messages to. Not before: the first Listen of a
// persistent pipeline delivers the messages that arrived while the
// program was not running, and moves the node's cursor past them.
func (c *Chat) listen() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.listener == nil {
		return
	}
	for _, ch := range c.channels {
		if !ch.listening {
			ch.listening = true
			ch.p.Listen(c.packetListener)
		}
	}
}

// Channel returns the name of the current channel ("" before
// ConnectToNetwork).
func (c *Chat) Channel() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.current
}

// currentChannel returns the current channel and its name, nil before
// ConnectToNetwork.
func (c *Chat) currentChannel() (*channel, string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	ch := c.channels[c.current]
	if ch == nil {
		return nil, "", errors.New("not connected: call ConnectToNetwork first")
	}
	return ch, c.current, nil
}

// Channels lists the channels of the hub this user may use, by name,
// telling which ones this chat has joined. The node must be connected
// (an error matching bokbok.ErrNotConnected otherwise).
func (c *Chat) Channels(ctx context.Context) ([]ChannelInfo, error) {
	if c.node == nil {
		return nil, errors.New("not connected: call ConnectToNetwork first")
	}
	ls, err := c.node.Pipelines(ctx)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]ChannelInfo, len(ls))
	for i, l := range ls {
		out[i] = ChannelInfo{Name: l.Name, Persistent: l.Persistent, Encrypted: l.Encrypted, Members: l.Members, Last: l.Last,
			Joined: c.channels[l.Name] != nil, Current: l.Name == c.current}
	}
	return out, nil
}

// keyPoll is how often SendMessage looks for the key of an encrypted
// channel it waits for.
const keyPoll = 50 * time.Millisecond

// SendMessage sends a message on the current channel. On a persistent
// channel it returns once the message is on disk, connected or not; on a
// transient one once the hub has it, and while disconnected it fails
// with an error matching bokbok.ErrNotConnected. On a direct channel
// whose key has not reached this node yet, it waits for the key until
// ctx ends; it refuses to send on one whose members, as the hub says, are
// not exactly its two users.
func (c *Chat) SendMessage(ctx context.Context, text string) error {
	ch, name, err := c.currentChannel()
	if err != nil {
		return err
	}
	m := Message{Text: text, Sender: c.user, Timestamp: float64(time.Now().UnixMicro()) / 1e6}
	data, err := json.Marshal(m)
	if err != nil {
		return err
	}
	for {
		if err := c.checkDirect(ch, name); err != nil {
			return err
		}
		_, err := ch.p.Put(ctx, data)
		if !errors.Is(err, pipes.ErrNoKey) {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("the key of #%s has not reached this node yet (a member's node gives it while both are connected and in the channel): %w", name, ctx.Err())
		case <-time.After(keyPoll):
		}
	}
}

// checkDirect checks that a direct channel belongs to its two users
// only: anyone may create a pipeline of that name first, with other
// members.
func (c *Chat) checkDirect(ch *channel, name string) error {
	if ch.peer == "" {
		return nil
	}
	want := []string{c.user, ch.peer}
	slices.Sort(want)
	if ms := ch.p.Members(); ms != nil && !slices.Equal(ms, want) {
		return fmt.Errorf("#%s is not only %s's and %s's: its members are %s", name, want[0], want[1], strings.Join(ms, ", "))
	}
	return nil
}

// History returns the last n messages of the current channel, oldest
// first, read from the hub (an encrypted channel's, those this node has
// the keys of). The node must be connected; a transient channel has no
// history (ErrNoHistory).
func (c *Chat) History(ctx context.Context, n int) ([]Message, error) {
	ch, name, err := c.currentChannel()
	if err != nil {
		return nil, err
	}
	if !ch.p.Persistent() {
		return nil, fmt.Errorf("#%s: %w", name, ErrNoHistory)
	}
	var msgs []Message
	for q := (&pipes.HistoryQuery{Max: n, Newest: true}); q != nil && len(msgs) < n; {
		page, err := ch.p.History(ctx, *q)
		if err != nil {
			return nil, err
		}
		var older []Message // the page's, before those gathered
		for _, pk := range page.Packets {
			if m, ok := c.message(pk); ok {
				older = append(older, m)
			}
		}
		msgs = append(older, msgs...)
		if q = page.Next; q != nil {
			q.Max = n - len(msgs)
		}
	}
	if len(msgs) > n {
		msgs = msgs[len(msgs)-n:]
	}
	return msgs, nil
}

// Search returns the messages of the current channel that best match
// words (any of them, case folded), best first, at most max (0 means 20).
// A plain channel is searched on the hub, which must be connected; an
// encrypted one in the messages this node has been given, connected or
// not. A transient channel has nothing to search (ErrNoHistory).
func (c *Chat) Search(ctx context.Context, words string, max int) ([]Message, error) {
	ch, name, err := c.currentChannel()
	if err != nil {
		return nil, err
	}
	if !ch.p.Persistent() {
		return nil, fmt.Errorf("#%s: %w", name, ErrNoHistory)
	}
	page, err := ch.p.Search(ctx, words, max)
	if err != nil {
		return nil, err
	}
	var msgs []Message
	for _, r := range page.Results {
		if m, ok := c.message(r.Packet); ok {
			msgs = append(msgs, m)
		}
	}
	return msgs, nil
}

// message returns the chat message a packet holds, false if it holds
// none.
func (c *Chat) message(pk pipes.Packet) (Message, bool) {
	var m Message
	if err := json.Unmarshal(pk.Data, &m); err != nil {
		return Message{}, false
	}
	// The JSON's sender is what the sending program wrote; the packet's
	// Sender is the user the hub authenticated.
	m.Sender, m.Own, m.Channel, m.Seq = pk.Sender, pk.Own, pk.Pipeline, pk.Seq
	return m, true
}

// packetListener is given every packet of each channel joined, from
// every node, in the hub's order, and passes the message on to the UI
// listener.
func (c *Chat) packetListener(pk pipes.Packet) {
	m, ok := c.message(pk)
	if !ok {
		return // not a chat message
	}
	c.mu.Lock()
	fn := c.listener
	c.mu.Unlock()
	if fn != nil {
		fn(m)
	}
}

// SetListener sets the function given each message of every channel
// joined, one at a time per channel, on a goroutine of the node (the
// channels' goroutines may call it at the same time). Set it before
// ConnectToNetwork, or messages start arriving only once it is set.
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
