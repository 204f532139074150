package jetstream

import (
	"crypto/sha256"
	"encoding/base32"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/bokbok-go/bokbok/pipes"
)

// b32 encodes hashes as subject tokens, stream names and KV keys: lowercase
// letters and the digits 2 to 7.
var b32 = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// pipeKey is the token naming a pipeline in subjects, stream names and
// KV keys: the first 20 bytes of the SHA-256 of its name, in base32 (32
// characters). The name itself is in the pipeline's meta.
func pipeKey(name string) string {
	h := sha256.Sum256([]byte(name))
	return b32.EncodeToString(h[:20])
}

// senderKey is the token naming a sender in a pipeline's subjects: the
// first 16 bytes of the SHA-256 of the user, a zero byte and the node ID,
// in base32 (26 characters).
func senderKey(s pipes.Sender) string {
	h := sha256.New()
	h.Write([]byte(s.User))
	h.Write([]byte{0})
	h.Write(s.Node[:])
	var sum [sha256.Size]byte
	return b32.EncodeToString(h.Sum(sum[:0])[:16])
}

// checkName refuses the names a hub does not hold (PROTOCOL.md §21.2).
func checkName(name string) error {
	if name == "" || len(name) > pipes.MaxNameLen || !utf8.ValidString(name) {
		return fmt.Errorf("%w: %q: 1 to %d bytes of UTF-8", pipes.ErrBadName, name, pipes.MaxNameLen)
	}
	for _, r := range name {
		if unicode.IsControl(r) {
			return fmt.Errorf("%w: %q has control characters", pipes.ErrBadName, name)
		}
	}
	return nil
}

// meta is a pipeline's entry in the meta bucket, as JSON.
type meta struct {
	V          int      `json:"v"`
	Name       string   `json:"name"`
	Persistent bool     `json:"persistent"`
	Encrypted  bool     `json:"encrypted,omitempty"`
	Owner      string   `json:"owner,omitempty"`
	Members    []string `json:"members,omitempty"`
	Epoch      string   `json:"epoch"`   // 32 hex digits
	Created    int64    `json:"created"` // Unix nanoseconds
}

func (m *meta) spec() pipes.PipelineSpec {
	return pipes.PipelineSpec{Name: m.Name, Persistent: m.Persistent, Encrypted: m.Encrypted, Owner: m.Owner, Members: append([]string(nil), m.Members...)}
}

func (m *meta) epoch() (e [16]byte) {
	b, _ := hex.DecodeString(m.Epoch)
	copy(e[:], b)
	return e
}

func decodeMeta(b []byte) (*meta, error) {
	var m meta
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, err
	}
	if m.Name == "" || len(m.Epoch) != 32 {
		return nil, errors.New("incomplete pipeline meta")
	}
	return &m, nil
}

// recordVersion is the first byte of every stored record.
const recordVersion = 1

// recordHeader is the size of a record's fixed prefix: version, Seq,
// time, N, node.
const recordHeader = 1 + 8 + 8 + 8 + 16

// encodeRecord appends a record's payload to b: version 1, the record's
// Seq (big-endian uint64; 0 on a transient pipeline, whose Seq is known
// only once stored), the time (Unix nanoseconds, big-endian int64), N
// (big-endian uint64), the node ID (16 bytes), the user's length
// (uvarint) and the user, then the data.
func encodeRecord(b []byte, seq uint64, t int64, from pipes.Sender, n uint64, data []byte) []byte {
	b = append(b, recordVersion)
	b = binary.BigEndian.AppendUint64(b, seq)
	b = binary.BigEndian.AppendUint64(b, uint64(t))
	b = binary.BigEndian.AppendUint64(b, n)
	b = append(b, from.Node[:]...)
	b = binary.AppendUvarint(b, uint64(len(from.User)))
	b = append(b, from.User...)
	return append(b, data...)
}

// decodeRecord decodes a record's payload, its Seq from the payload or,
// if that has none, seq; the record's Data aliases p.
func decodeRecord(seq uint64, p []byte) (pipes.Record, error) {
	if len(p) < recordHeader+1 || p[0] != recordVersion {
		return pipes.Record{}, fmt.Errorf("record %d: bad format", seq)
	}
	r := pipes.Record{Seq: binary.BigEndian.Uint64(p[1:9])}
	if r.Seq == 0 {
		r.Seq = seq
	}
	r.Time = time.Unix(0, int64(binary.BigEndian.Uint64(p[9:17])))
	r.N = binary.BigEndian.Uint64(p[17:25])
	copy(r.Sender.Node[:], p[25:41])
	ul, k := binary.Uvarint(p[41:])
	if k <= 0 || uint64(len(p)-41-k) < ul {
		return pipes.Record{}, fmt.Errorf("record %d: bad format", seq)
	}
	off := 41 + k
	r.Sender.User = string(p[off : off+int(ul)])
	r.Data = p[off+int(ul):]
	return r, nil
}

// recordTimeN returns a stored record's time and N without decoding it
// all.
func recordTimeN(p []byte) (t int64, n uint64, ok bool) {
	if len(p) < recordHeader || p[0] != recordVersion {
		return 0, 0, false
	}
	return int64(binary.BigEndian.Uint64(p[9:17])), binary.BigEndian.Uint64(p[17:25]), true
}

// recordOverhead is about what a record's encoding in a read reply takes
// beyond its data and sender (as the hub counts MaxReadBytes).
const recordOverhead = 64
