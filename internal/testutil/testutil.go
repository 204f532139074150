// Package testutil holds small helpers that the module's tests share: a
// goroutine-safe buffer for a process's or logger's output, and the hex
// dump format of PROTOCOL.md.
package testutil

import (
	"bytes"
	"encoding/hex"
	"strings"
	"sync"
)

// SyncBuffer is a bytes.Buffer that one goroutine may write while another
// reads it.
type SyncBuffer struct {
	mu  sync.Mutex // guards buf
	buf bytes.Buffer
}

// Write appends p.
func (b *SyncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// String returns what has been written so far.
func (b *SyncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// HexDump formats b as PROTOCOL.md does: 16 bytes a line, lower-case hex,
// bytes separated by single spaces.
func HexDump(b []byte) string {
	var lines []string
	for len(b) > 0 {
		n := min(16, len(b))
		parts := make([]string, n)
		for i := range parts {
			parts[i] = hex.EncodeToString(b[i : i+1])
		}
		lines = append(lines, strings.Join(parts, " "))
		b = b[n:]
	}
	return strings.Join(lines, "\n")
}
