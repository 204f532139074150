package jetstream

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/bokbok-go/bokbok/pipes"
	"github.com/nats-io/nats.go"
)

// Config configures a Log. Conn or URL is required; every other zero
// field takes the default named in its comment. Every hub of a network
// must use the same Prefix, and should use the same Replicas, Retention
// and transient bounds: the streams keep the configuration of the hub
// that created them.
type Config struct {
	// Conn is the NATS connection to use; the caller owns it (Close does
	// not close it). If nil, Open connects to URL and Close closes that
	// connection.
	Conn *nats.Conn

	// URL is the NATS server (or comma-separated servers) to connect to
	// when Conn is nil. The connection reconnects for ever.
	URL string

	// ConnOptions are given to nats.Connect with URL.
	ConnOptions []nats.Option

	// Prefix begins the names of every stream, bucket and subject the log
	// uses: 1 to 32 of A-Z, a-z, 0-9, '-' and '_'. Default DefaultPrefix.
	Prefix string

	// Replicas is the number of JetStream servers that keep each stream
	// and bucket: 1 to 5, and at most the cluster's size (creating the
	// meta bucket in Open fails otherwise). 1 suits a single server, for
	// tests; a failure of that server stops the log. Default 3.
	Replicas int

	// Retention bounds each persistent pipeline's stream: MaxAge,
	// MaxPackets and MaxBytes become the stream's MaxAge, MaxMsgs and
	// MaxBytes, with DiscardOld: JetStream removes the oldest records
	// itself. MaxBytes counts whole stored messages (subject, headers,
	// record prefix and data), not only the data as the embedded log
	// does; MaxAge is measured from the time the JetStream server stored
	// a record, by its clock. The zero Retention keeps everything.
	Retention pipes.Retention

	// TransientWindow and TransientBytes bound a transient pipeline's
	// stream (memory storage, MaxMsgs and MaxBytes, DiscardOld): a reader
	// that falls further behind gets an overrun gap. TransientBytes
	// counts whole stored messages. Defaults pipes.DefaultTransientWindow
	// and pipes.DefaultTransientBytes.
	TransientWindow int
	TransientBytes  int

	// MaxPacketSize is the largest packet data the hubs accept
	// (HubConfig.MaxPacketSize); streams refuse larger messages, and Open
	// fails if the server's max_payload cannot carry one. Default
	// pipes.DefaultMaxPacketSize.
	MaxPacketSize int

	// Timeout bounds each operation of the log (an Append with its
	// retries, a Read, a Create), unless its context ends first. Default
	// DefaultTimeout.
	Timeout time.Duration

	// Logger receives the log's records. Nil logs nothing.
	Logger *slog.Logger
}

// Defaults of Config.
const (
	DefaultPrefix   = "PIPES"
	DefaultReplicas = 3
	DefaultTimeout  = 10 * time.Second
)

// recordRoom is what a stored message takes beyond its data, at most:
// the record's prefix with a long user name, and the headers of a batch.
const recordRoom = 4 << 10

func (c *Config) setDefaults() error {
	if c.Prefix == "" {
		c.Prefix = DefaultPrefix
	}
	if len(c.Prefix) > 32 {
		return fmt.Errorf("jetstream: Prefix %q is longer than 32 bytes", c.Prefix)
	}
	for _, r := range c.Prefix {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
			return fmt.Errorf("jetstream: Prefix %q: only A-Z, a-z, 0-9, '-' and '_'", c.Prefix)
		}
	}
	if c.Replicas == 0 {
		c.Replicas = DefaultReplicas
	}
	if c.Replicas < 1 || c.Replicas > 5 {
		return fmt.Errorf("jetstream: Replicas %d: 1 to 5", c.Replicas)
	}
	r := c.Retention
	if r.MaxAge < 0 || r.MaxBytes < 0 {
		return errors.New("jetstream: negative Retention")
	}
	if r.MaxAge > 0 && r.MaxAge < 100*time.Millisecond {
		return fmt.Errorf("jetstream: Retention.MaxAge %v: JetStream needs at least 100ms", r.MaxAge)
	}
	if c.TransientWindow <= 0 {
		c.TransientWindow = pipes.DefaultTransientWindow
	}
	if c.TransientBytes <= 0 {
		c.TransientBytes = pipes.DefaultTransientBytes
	}
	if c.MaxPacketSize <= 0 {
		c.MaxPacketSize = pipes.DefaultMaxPacketSize
	}
	if c.Timeout <= 0 {
		c.Timeout = DefaultTimeout
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Conn == nil && c.URL == "" {
		return errors.New("jetstream: Config needs Conn or URL")
	}
	return nil
}

// names of a log's streams, buckets and subjects.
func (c *Config) metaBucket() string  { return c.Prefix + "_PIPELINES" }
func (c *Config) marksBucket() string { return c.Prefix + "_MARKS" }

// streamName names a pipeline's stream; the epoch is in it, so that a
// pipeline created anew never finds an older stream of the same name.
func (c *Config) streamName(key string, epoch [16]byte) string {
	return c.Prefix + "_P_" + key + "_" + fmt.Sprintf("%x", epoch[:8])
}

// subjectBase is the pipeline's subjects without the sender token.
func (c *Config) subjectBase(key string, epoch [16]byte) string {
	return c.Prefix + ".p." + key + "." + fmt.Sprintf("%x", epoch[:8]) + "."
}

// notifySubject is where the stream republishes the headers of every
// stored record, and where a hub signals an append that found only
// duplicates.
func (c *Config) notifySubject(key string) string { return c.Prefix + ".n." + key }
