package main

import (
	"fmt"
	"io"
	"runtime"
	"runtime/debug"
	"strings"
	"text/tabwriter"
	"time"
)

// A row is one figure of one scenario in one mode, for every system.
type row struct {
	mode, scenario string
	fig            figDef
	vals           map[string]float64
	failed         map[string]bool
}

// results collects every figure.
type results struct {
	cfg  *config
	rows []*row
	errs []string
}

func newResults(cfg *config) *results {
	r := &results{cfg: cfg}
	for _, m := range cfg.modes {
		for _, sc := range cfg.scenarios {
			for _, f := range sc.figures {
				r.rows = append(r.rows, &row{mode: m.name, scenario: sc.id, fig: f, vals: map[string]float64{}, failed: map[string]bool{}})
			}
		}
	}
	return r
}

func (r *results) add(sys string, m mode, sc scenario, figs map[string]float64) {
	for _, row := range r.rows {
		if row.mode == m.name && row.scenario == sc.id {
			if v, ok := figs[row.fig.name]; ok {
				row.vals[sys] = v
			}
		}
	}
}

func (r *results) fail(sys string, m mode, sc scenario, err error) {
	for _, row := range r.rows {
		if row.mode == m.name && row.scenario == sc.id {
			row.failed[sys] = true
		}
	}
	r.errs = append(r.errs, fmt.Sprintf("%s %s %s: %v", m.name, sc.id, sys, err))
}

// value returns a system's figure of a row, its text, and whether there is
// one.
func (r *results) value(row *row, sys string) (float64, string, bool) {
	if row.failed[sys] {
		return 0, "ERR", false
	}
	v, ok := row.vals[sys]
	if !ok {
		return 0, "-", false
	}
	return v, formatValue(v, row.fig.unit), true
}

func formatValue(v float64, unit string) string {
	if unit == "ms" {
		return fmt.Sprintf("%.2f", v)
	}
	return fmt.Sprintf("%.0f", v)
}

// ratio returns bokbok-pipes / jetstream and which is better, when both
// figures exist.
func (r *results) ratio(row *row) (string, string) {
	b, _, okB := r.value(row, "bokbok-pipes")
	j, _, okJ := r.value(row, "jetstream")
	if !okB || !okJ || j == 0 {
		return "-", ""
	}
	q := b / j
	better := "bokbok-pipes"
	if row.fig.higher && q < 1 || !row.fig.higher && q > 1 {
		better = "jetstream"
	}
	return fmt.Sprintf("%.2f", q), better
}

// cells returns the table: a header and one line per row.
func (r *results) cells() [][]string {
	head := []string{"mode", "scenario", "figure", "unit"}
	for _, s := range r.cfg.systems {
		head = append(head, s.name)
	}
	head = append(head, "bokbok/jetstream", "better")
	out := [][]string{head}
	for _, row := range r.rows {
		line := []string{row.mode, row.scenario, row.fig.name, row.fig.unit}
		for _, s := range r.cfg.systems {
			_, text, _ := r.value(row, s.name)
			line = append(line, text)
		}
		q, better := r.ratio(row)
		line = append(line, q, better)
		out = append(out, line)
	}
	return out
}

// moduleVersion returns the version of a dependency built in, or "?".
func moduleVersion(path string) string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, d := range bi.Deps {
			if d.Path == path {
				if d.Replace != nil {
					return d.Replace.Version
				}
				return d.Version
			}
		}
	}
	return "?"
}

func (r *results) machine() string {
	return fmt.Sprintf("runtime.NumCPU()=%d, GOMAXPROCS=%d, %s/%s, %s", runtime.NumCPU(), runtime.GOMAXPROCS(0), runtime.GOOS, runtime.GOARCH, runtime.Version())
}

func (r *results) setup() string {
	o := r.cfg.options
	ack := fmt.Sprintf("AckAll, an ack every %d messages and on the last", o.jsAckEvery)
	if o.jsAck == "explicit" {
		ack = "AckExplicit, an ack per message"
	}
	return fmt.Sprintf("1 sender, %d listeners, %d B packets, one persistent pipeline / file-backed stream (1 replica). "+
		"throughput: %d packets; latency: %d packets/s for %v; catch-up: %d packets. "+
		"bokbok: Put from %d goroutines. JetStream: PublishAsync with at most %d acks pending, durable pull consumers (Consume), %s.",
		o.listeners, o.size, o.n, o.rate, o.latDuration, o.catchup, o.putGoroutines, o.jsWindow, ack)
}

// durability says what each mode makes each system promise.
var durability = []struct{ mode, system, text string }{
	{"fsync", "bokbok-pipes", "Put returns once the packet is fsynced in the sender node's outbox (group commit); the hub fsyncs its log before it acknowledges a put batch (at most 256 packets); each listener node fsyncs its cursor after every delivered batch (at most 256 packets)."},
	{"fsync", "jetstream", "server SyncAlways: every message is fsynced as it is stored, before its publish ack (no group commit). The publisher has no local store: a message whose ack has not come is the application's to resend. Consumer ack state is written by the server in the background, at most about 10 times a second per consumer (with O_SYNC)."},
	{"no-fsync", "bokbok-pipes", "NoSync on the hub and on every node: bbolt commits reach the OS page cache, never fsynced; a machine crash can lose acknowledged packets and cursors."},
	{"no-fsync", "jetstream", "the server's default: messages reach the OS page cache as stored, fsynced every 2 minutes (sync_interval); a machine crash can lose acknowledged messages."},
}

const legend = "Ratio = bokbok-pipes / jetstream; for pkts/s above 1 means bokbok-pipes is faster, for ms below 1 means its latency is lower. " +
	"put-to-delivered: N / time from the first put until the last listener has the last packet. " +
	"publish, server-acked: N / time until the server has acknowledged every packet as stored (bokbok: node.Flush returned; JetStream: every PublishAsync ack in). " +
	"Put returned: N / time until every Put call returned (the packets are durable in the sender's outbox, not yet necessarily at the hub). " +
	"latency: from the put call to the listener's callback, over all listeners. " +
	"catch-up: N / time from reopening the offline listener (bokbok: OpenNode on its directory; JetStream: a new connection to its durable consumer) until it has all N. " +
	"JetStream consumers use AckAll with an ack every -js-ack-every messages by default: like a bokbok listener's cursor, one cumulative position per batch rather than an ack per message per consumer (-js-ack explicit measures that). " +
	"bokbok nodes always connect in secure mode (Noise handshake, every record sealed with secretbox); the NATS connections are plaintext, without TLS. " +
	"Every listener checked that it got every packet exactly once with consecutive sequence numbers. " +
	"One process on loopback; the machine is shared, so figures are noisy."

func (r *results) printText(w io.Writer, started time.Time) {
	fmt.Fprintf(w, "\npersistent pipelines: bokbok-pipes vs jetstream (nats-server %s, nats.go %s), %s\n",
		moduleVersion("github.com/nats-io/nats-server/v2"), moduleVersion("github.com/nats-io/nats.go"), started.UTC().Format("2006-01-02 15:04 UTC"))
	fmt.Fprintf(w, "%s; run took %v\n", r.machine(), time.Since(started).Round(time.Second))
	fmt.Fprintln(w, wrap(r.setup(), 100, ""))
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, line := range r.cells() {
		fmt.Fprintln(tw, strings.Join(line, "\t")+"\t")
	}
	tw.Flush()
	fmt.Fprintln(w)
	fmt.Fprintln(w, wrap(legend, 100, ""))
	fmt.Fprintln(w, "\ndurability:")
	for _, d := range durability {
		fmt.Fprintf(w, "  %-8s  %-12s  %s\n", d.mode, d.system, wrap(d.text, 100, strings.Repeat(" ", 26)))
	}
	r.printErrors(w)
}

func (r *results) printMarkdown(w io.Writer, started time.Time) {
	fmt.Fprintln(w, "## Persistent pipelines: bokbok-pipes vs JetStream")
	fmt.Fprintln(w)
	fmt.Fprintf(w, "- Date: %s\n", started.UTC().Format("2006-01-02, 15:04 UTC"))
	fmt.Fprintf(w, "- Machine: %s. Shared and noisy: other work may run at the same time.\n", r.machine())
	fmt.Fprintf(w, "- Peers: github.com/nats-io/nats-server/v2 %s (embedded), github.com/nats-io/nats.go %s (package jetstream)\n",
		moduleVersion("github.com/nats-io/nats-server/v2"), moduleVersion("github.com/nats-io/nats.go"))
	fmt.Fprintf(w, "- Command (took %v): `cd bench && go run ./pipes %s`\n", time.Since(started).Round(time.Second), strings.Join(r.cfg.args, " "))
	fmt.Fprintf(w, "- Setup: %s\n\n", r.setup())
	lines := r.cells()
	fmt.Fprintln(w, "| "+strings.Join(lines[0], " | ")+" |")
	sep := make([]string, len(lines[0]))
	for i := range sep {
		sep[i] = "---"
		if i >= 4 && i < len(sep)-1 {
			sep[i] = "---:"
		}
	}
	fmt.Fprintln(w, "| "+strings.Join(sep, " | ")+" |")
	for _, line := range lines[1:] {
		fmt.Fprintln(w, "| "+strings.Join(line, " | ")+" |")
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, legend)
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Durability in each mode:")
	fmt.Fprintln(w)
	for _, d := range durability {
		fmt.Fprintf(w, "- %s, %s: %s\n", d.mode, d.system, d.text)
	}
	r.printErrors(w)
}

func (r *results) printErrors(w io.Writer) {
	if len(r.errs) == 0 {
		return
	}
	fmt.Fprintln(w, "\nerrors:")
	for _, e := range r.errs {
		fmt.Fprintln(w, "  "+e)
	}
}

// wrap breaks s into lines of at most width bytes, the first one
// starting at column len(indent) and the others with indent.
func wrap(s string, width int, indent string) string {
	var b strings.Builder
	line := len(indent)
	for i, word := range strings.Fields(s) {
		if i > 0 && line+1+len(word) > width {
			b.WriteString("\n" + indent)
			line = len(indent)
		} else if i > 0 {
			b.WriteByte(' ')
			line++
		}
		b.WriteString(word)
		line += len(word)
	}
	return b.String()
}
