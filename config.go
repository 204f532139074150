package bokbok

import (
	"fmt"
	"log/slog"
	"time"
)

// Defaults for the zero fields of Config.
const (
	DefaultMaxMessageSize        = 32 << 20 // 32 MiB
	DefaultMaxConcurrentHandlers = 256
	DefaultMaxQueuedRequests     = 4096
	DefaultNotifyWindow          = 256
	DefaultSendQueueBytes        = 4 << 20  // 4 MiB
	DefaultMaxReceiveBytes       = 64 << 20 // 64 MiB, or twice MaxMessageSize if that is more
	DefaultNotifyBytes           = 16 << 20 // 16 MiB
	DefaultHandshakeTimeout      = 5 * time.Second
	DefaultKeepaliveInterval     = 30 * time.Second
	DefaultKeepaliveTimeout      = 15 * time.Second
)

// Config holds the settings of one connection. The zero value is usable:
// every zero field takes the default named in its comment. A nil *Config
// means all defaults. A Config may be shared by many connections and must
// not be changed while any of them uses it.
type Config struct {
	// Key, if set, makes the dialling side of a connection open it in
	// secure mode: it authenticates as User with this pre-shared key, the
	// server proves it knows the key too, and everything after the
	// handshake is encrypted (PROTOCOL.md, "Secure mode"). A client with a
	// Key never falls back to an insecure connection. Servers take keys
	// from Server.UserKey instead.
	Key *Key

	// User is the user name a secure client authenticates as: 1 to 255
	// bytes. It travels in clear in the handshake.
	User string

	// Realm names the server, as both sides know it (for example its host
	// name or service name); at most 255 bytes. It is bound into the secure
	// handshake, so both sides must agree on it, and a key that two peers
	// use in both directions cannot be turned against either of them.
	Realm string

	// Handler serves the requests and notifications the peer sends. If nil,
	// the peer's requests fail with a *RemoteError of code CodeNoHandler and
	// its notifications are dropped (and logged at debug level).
	Handler Handler

	// OnClose, if set, is called exactly once when the connection has
	// closed, from a goroutine of the connection's own, with the reason
	// (an error matching ErrClosed that wraps the cause). It runs after
	// every pending call has failed and the connection's reader and writer
	// have stopped.
	OnClose func(c *Conn, reason error)

	// Interceptors see every request and notification the connection
	// sends, in order, the first outermost; see Interceptor. Server-side
	// middleware wraps the Handler instead (see Middleware).
	Interceptors []Interceptor

	// Stats, if set, receives the statistics of every call sent and
	// served, and of the connection opening and closing; see
	// StatsHandler. With no Stats, calls cost nothing for it.
	Stats StatsHandler

	// Logger receives the connection's log records (handler panics,
	// protocol errors, closes). Nil means no logging.
	Logger *slog.Logger

	// MaxMessageSize is the largest message body, in bytes after encoding,
	// that this side accepts. It is announced to the peer, which then fails
	// larger calls before sending them. Default DefaultMaxMessageSize.
	//
	// Decoding a message can take more memory than the message: into
	// interface values up to about 170 times its size (an array of
	// one-entry maps), 16 times for an array of small numbers, hardly more
	// than its size for strings and binary values. Every message received
	// is charged an estimate of that memory; see MaxReceiveBytes.
	MaxMessageSize int

	// MaxReceiveBytes bounds the memory this side holds for the peer's
	// requests: requests still arriving (charged their announced size when
	// their first frame arrives), requests queued or running (charged the
	// larger of their size and the estimated memory of decoding them), and
	// replies waiting to be written. A request that does not fit in what
	// is left is refused with CodeBusy without running (its frames are
	// read and dropped); one whose decoding alone is estimated to need
	// more than MaxReceiveBytes is refused with CodeTooLarge. Decode of
	// any message received on the connection refuses values estimated
	// above it, with a *MessageTooLargeError. It must be at least
	// MaxMessageSize. Default DefaultMaxReceiveBytes, or twice
	// MaxMessageSize if that is more.
	MaxReceiveBytes int

	// NotifyBytes bounds the bytes of the peer's notifications that this
	// side holds unhandled: arriving, waiting for the handler, or being
	// handled. It is announced to the peer, whose Notify waits for room
	// (a notification larger than the bound is let through when none is
	// outstanding); a peer that sends more anyway is cut off with
	// ErrOverBudget. Default DefaultNotifyBytes.
	NotifyBytes int

	// MaxConcurrentHandlers limits how many of the peer's requests run at
	// once on this connection. Requests beyond it wait in a queue of
	// MaxQueuedRequests, except nested requests (made by a peer handler
	// while serving one of ours), which run at once so that handlers that
	// call back into each other cannot deadlock; see PROTOCOL.md.
	// Default DefaultMaxConcurrentHandlers.
	MaxConcurrentHandlers int

	// MaxQueuedRequests limits how many requests wait for a handler slot.
	// A request arriving when the queue is full is refused with CodeBusy
	// without running. Default DefaultMaxQueuedRequests; negative means no
	// queue (refuse at once when all handler slots are busy).
	MaxQueuedRequests int

	// NotifyWindow is how many notifications the peer may send ahead of
	// this side's handler: notifications run one at a time, in order, and
	// a peer that fills the window waits (Notify blocks) until the handler
	// catches up. Default DefaultNotifyWindow.
	NotifyWindow int

	// SendQueueBytes bounds the bytes of messages waiting to be written.
	// Request, Notify and replies wait while the queue is full, so a slow
	// peer applies backpressure instead of growing memory. A single message
	// larger than the bound is let through when the queue is empty, and
	// messages of one frame (up to 64 KiB) may use a further quarter of the
	// bound, so a short call never waits for room behind large ones.
	// Default DefaultSendQueueBytes.
	SendQueueBytes int

	// SocketReceiveBuffer, if positive, sets the kernel's receive buffer
	// (SO_RCVBUF) of a TCP connection to this many bytes; 0, the default,
	// leaves the kernel to size it, which on Linux grows it to megabytes
	// on a busy connection. What the kernel holds of a large message is
	// read before a small message sent after it, so a small buffer bounds
	// a small call's wait behind large messages on the same connection (on
	// a fast local link, about a millisecond less per megabyte). It also
	// bounds the connection's throughput to about the buffer's size per
	// round trip, so keep the default on links with a long round trip.
	SocketReceiveBuffer int

	// HandshakeTimeout bounds the opening exchange (preamble and settings).
	// Default DefaultHandshakeTimeout.
	HandshakeTimeout time.Duration

	// KeepaliveInterval is how long the connection may hear nothing from
	// the peer before it sends a PING. Any inbound frame counts as life, so
	// a busy connection never pings. Negative disables keepalive.
	// Default DefaultKeepaliveInterval.
	KeepaliveInterval time.Duration

	// KeepaliveTimeout is how long after a PING the peer may stay silent
	// before the connection closes with ErrKeepaliveTimeout.
	// Default DefaultKeepaliveTimeout.
	KeepaliveTimeout time.Duration
}

// withDefaults returns a copy of c (which may be nil) with every zero field
// set to its default, or an error naming the first invalid field.
func (c *Config) withDefaults() (*Config, error) {
	var out Config
	if c != nil {
		out = *c
	}
	ints := []struct {
		name string
		v    *int
		def  int
		min  int // -1: negative values are allowed and kept
	}{
		{"MaxMessageSize", &out.MaxMessageSize, DefaultMaxMessageSize, 0},
		{"MaxConcurrentHandlers", &out.MaxConcurrentHandlers, DefaultMaxConcurrentHandlers, 0},
		{"MaxQueuedRequests", &out.MaxQueuedRequests, DefaultMaxQueuedRequests, -1},
		{"NotifyWindow", &out.NotifyWindow, DefaultNotifyWindow, 0},
		{"SendQueueBytes", &out.SendQueueBytes, DefaultSendQueueBytes, 0},
		{"NotifyBytes", &out.NotifyBytes, DefaultNotifyBytes, 0},
	}
	for _, f := range ints {
		if *f.v < 0 && f.min >= 0 {
			return nil, fmt.Errorf("bokbok: Config.%s is %d, want >= 0 (0 means the default, %d)", f.name, *f.v, f.def)
		}
		if *f.v == 0 {
			*f.v = f.def
		}
	}
	if out.SocketReceiveBuffer < 0 {
		return nil, fmt.Errorf("bokbok: Config.SocketReceiveBuffer is %d, want >= 0 (0 leaves the kernel to size it)", out.SocketReceiveBuffer)
	}
	if out.MaxMessageSize > maxMessageSizeLimit {
		return nil, fmt.Errorf("bokbok: Config.MaxMessageSize is %d, want at most %d", out.MaxMessageSize, maxMessageSizeLimit)
	}
	switch {
	case out.MaxReceiveBytes < 0:
		return nil, fmt.Errorf("bokbok: Config.MaxReceiveBytes is %d, want >= 0 (0 means the default)", out.MaxReceiveBytes)
	case out.MaxReceiveBytes == 0:
		out.MaxReceiveBytes = max(DefaultMaxReceiveBytes, 2*out.MaxMessageSize)
	case out.MaxReceiveBytes < out.MaxMessageSize:
		return nil, fmt.Errorf("bokbok: Config.MaxReceiveBytes is %d, want at least MaxMessageSize (%d)", out.MaxReceiveBytes, out.MaxMessageSize)
	}
	if out.NotifyBytes > maxMessageSizeLimit {
		return nil, fmt.Errorf("bokbok: Config.NotifyBytes is %d, want at most %d", out.NotifyBytes, maxMessageSizeLimit)
	}
	if out.NotifyWindow > maxNotifyWindow {
		return nil, fmt.Errorf("bokbok: Config.NotifyWindow is %d, want at most %d", out.NotifyWindow, maxNotifyWindow)
	}
	if out.Key != nil && (len(out.User) == 0 || len(out.User) > 255) {
		return nil, fmt.Errorf("bokbok: Config.User is %d bytes, want 1 to 255 for a secure connection", len(out.User))
	}
	if len(out.Realm) > 255 {
		return nil, fmt.Errorf("bokbok: Config.Realm is %d bytes, want at most 255", len(out.Realm))
	}
	if out.HandshakeTimeout < 0 {
		return nil, fmt.Errorf("bokbok: Config.HandshakeTimeout is %v, want >= 0", out.HandshakeTimeout)
	}
	if out.HandshakeTimeout == 0 {
		out.HandshakeTimeout = DefaultHandshakeTimeout
	}
	if out.KeepaliveInterval == 0 {
		out.KeepaliveInterval = DefaultKeepaliveInterval
	}
	if out.KeepaliveTimeout < 0 {
		return nil, fmt.Errorf("bokbok: Config.KeepaliveTimeout is %v, want >= 0", out.KeepaliveTimeout)
	}
	if out.KeepaliveTimeout == 0 {
		out.KeepaliveTimeout = DefaultKeepaliveTimeout
	}
	if out.Logger == nil {
		out.Logger = slog.New(slog.DiscardHandler)
	}
	return &out, nil
}

// dialDefaults is withDefaults for the dialling side, which must not have
// a User without a Key (it would connect insecurely, as no user).
func (c *Config) dialDefaults() (*Config, error) {
	full, err := c.withDefaults()
	if err == nil && full.User != "" && full.Key == nil {
		return nil, fmt.Errorf("%w: a secure connection needs the user's key; leave User empty for an insecure one", ErrUserWithoutKey)
	}
	return full, err
}

// Protocol ceilings: a message length is a 32-bit field, and the notify
// window travels in a 32-bit CREDIT id.
const (
	maxMessageSizeLimit = 1<<31 - 1
	maxNotifyWindow     = 1 << 20
)
