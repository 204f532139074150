package pipes

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/hex"
	"io"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/bokbok-go/bokbok"
	"github.com/bokbok-go/bokbok/internal/testutil"
)

// The values of PROTOCOL.md §21.12: a node resends packet 7, which the
// hub already appended, with packet 8 behind it.
var (
	docNode = []byte{0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff}

	docPutRequest = putRequest{Pipeline: "orders", Node: docNode, Packets: []wirePacket{
		{N: 7, Data: []byte("hi")},
		{N: 8, Data: []byte("yo")},
	}}

	docPutReply = putReply{Acks: []wireAck{
		{Dup: true},
		{Seq: 42, Time: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano()},
	}}
)

// pipesDocDumps returns the hex dumps of PROTOCOL.md §21.12, in order,
// as bytes: the put's message, its reply, the REQUEST frame and the
// RESPONSE frame.
func pipesDocDumps(t *testing.T) [][]byte {
	t.Helper()
	dumps := docDumps(t, "21.12 Worked example")
	require.Len(t, dumps, 4, "§21.12 shows the message, the reply and their two frames")
	return dumps
}

// docDumps returns the hex dumps (code blocks of hex bytes) of the
// section of PROTOCOL.md with the heading "### "+heading, in order.
func docDumps(t *testing.T, heading string) [][]byte {
	t.Helper()
	doc, err := os.ReadFile("../PROTOCOL.md")
	require.NoError(t, err)
	_, sec, ok := strings.Cut(string(doc), "\n### "+heading+"\n")
	require.True(t, ok, "PROTOCOL.md lacks %q", heading)
	if i := strings.Index(sec, "\n## "); i >= 0 {
		sec = sec[:i]
	}
	if i := strings.Index(sec, "\n### "); i >= 0 {
		sec = sec[:i]
	}
	var dumps [][]byte
	for {
		_, rest, ok := strings.Cut(sec, "```\n")
		if !ok {
			break
		}
		block, after, ok := strings.Cut(rest, "\n```")
		require.True(t, ok, "an unclosed code block in %s", heading)
		var b []byte
		for _, f := range strings.Fields(block) {
			x, err := hex.DecodeString(f)
			require.NoError(t, err, "%s: %q is not a hex byte", heading, f)
			require.Len(t, x, 1, "%s: %q is not one byte", heading, f)
			b = append(b, x...)
		}
		dumps = append(dumps, b)
		sec = after
	}
	return dumps
}

// wireEncode encodes v as a bokbok connection encodes a message: msgpack
// v5 with integers in their shortest form (codec.go). msgpack.Marshal
// alone would write every uint64 and int64 field in 9 bytes, which is
// not what goes on the wire.
func wireEncode(t *testing.T, v any) []byte {
	t.Helper()
	var buf bytes.Buffer
	enc := msgpack.NewEncoder(&buf)
	enc.UseCompactInts(true)
	require.NoError(t, enc.Encode(v))
	return buf.Bytes()
}

// strictUnmarshal decodes b into out, refusing keys that name no field,
// and requires that b holds exactly one value.
func strictUnmarshal(t *testing.T, b []byte, out any) {
	t.Helper()
	r := bytes.NewReader(b)
	dec := msgpack.NewDecoder(r)
	dec.DisallowUnknownFields(true)
	require.NoError(t, dec.Decode(out))
	require.Zero(t, r.Len(), "bytes left after the value")
}

// TestProtocolDocPipesExample keeps PROTOCOL.md §21.12 in step with the
// wire structs, with what a bokbok connection sends, and with a hub.
func TestProtocolDocPipesExample(t *testing.T) {
	dumps := pipesDocDumps(t)
	msg, reply, reqFrame, respFrame := dumps[0], dumps[1], dumps[2], dumps[3]

	t.Run("encoding", func(t *testing.T) {
		require.Equal(t, hexDump(wireEncode(t, docPutRequest)), hexDump(msg), "the pipes.put request message")
		require.Equal(t, hexDump(wireEncode(t, docPutReply)), hexDump(reply), "the pipes.put reply")
	})

	t.Run("decoding", func(t *testing.T) {
		var req putRequest
		strictUnmarshal(t, msg, &req)
		require.Equal(t, docPutRequest, req)
		var rep putReply
		strictUnmarshal(t, reply, &rep)
		require.Equal(t, docPutReply, rep)
		// A plain msgpack.Unmarshal, as lenient as a node's decoding of
		// a reply, reads the same.
		var rep2 putReply
		require.NoError(t, msgpack.Unmarshal(reply, &rep2))
		require.Equal(t, docPutReply, rep2)
	})

	t.Run("frames", func(t *testing.T) {
		testDocFrames(t, msg, reqFrame, respFrame)
	})

	t.Run("hub", func(t *testing.T) {
		testDocHub(t, msg)
	})
}

// testDocFrames runs the exchange of §21.12 between a Go connection and a
// raw peer on the other end of a pipe: the Go side's REQUEST for the put
// must be the document's frame, and its RESPONSE to the document's
// REQUEST the document's RESPONSE frame, which it in turn reads as the
// reply to its own put.
func testDocFrames(t *testing.T, msg, reqFrame, respFrame []byte) {
	goSide, raw := net.Pipe()
	t.Cleanup(func() { raw.Close() })
	require.NoError(t, raw.SetDeadline(time.Now().Add(20*time.Second)))

	served := make(chan putRequest, 1)
	mux := bokbok.NewMux()
	bokbok.Handle(mux, methodPut, func(ctx context.Context, req putRequest) (putReply, error) {
		served <- req
		return docPutReply, nil
	})
	ctx, cancel := context.WithCancel(context.Background()) // no deadline: timeout 0
	t.Cleanup(cancel)
	opened := make(chan *bokbok.Conn, 1)
	openErr := make(chan error, 1)
	go func() {
		c, err := bokbok.NewConn(ctx, goSide, &bokbok.Config{Handler: mux})
		if err != nil {
			openErr <- err
			return
		}
		opened <- c
	}()

	// The opening, insecure: the Go side's preamble and SETTINGS, then
	// ours, announcing headers.
	pre := make([]byte, 8)
	_, err := io.ReadFull(raw, pre)
	require.NoError(t, err)
	require.Equal(t, []byte("bokbok\x01\x00"), pre)
	kind, _ := readRawFrame(t, raw)
	require.EqualValues(t, 1, kind, "SETTINGS")
	settings, err := msgpack.Marshal(map[string]any{"max_message_size": 1 << 20, "notify_window": 16, "headers": 1})
	require.NoError(t, err)
	_, err = raw.Write(append([]byte("bokbok\x01\x00"), rawFrame(1, 0, 0, settings)...))
	require.NoError(t, err)
	var c *bokbok.Conn
	select {
	case c = <-opened:
	case err := <-openErr:
		t.Fatalf("opening: %v", err)
	}
	t.Cleanup(func() { c.Close() })

	// The Go side puts; its REQUEST is the document's.
	type result struct {
		reply putReply
		err   error
	}
	done := make(chan result, 1)
	go func() {
		var r putReply
		err := c.Invoke(ctx, methodPut, docPutRequest, &r)
		done <- result{r, err}
	}()
	got := readRawFrameOf(t, raw, 2)
	require.Equal(t, hexDump(reqFrame), hexDump(got), "the REQUEST frame of the put")
	require.True(t, bytes.HasSuffix(reqFrame, msg), "the REQUEST frame ends with the message")

	// The document's REQUEST, sent to the Go side, decodes strictly into
	// the put, and is answered with the document's RESPONSE.
	_, err = raw.Write(reqFrame)
	require.NoError(t, err)
	got = readRawFrameOf(t, raw, 3)
	require.Equal(t, hexDump(respFrame), hexDump(got), "the RESPONSE frame of the reply")
	require.Equal(t, docPutRequest, <-served)

	// The document's RESPONSE answers the Go side's put.
	_, err = raw.Write(respFrame)
	require.NoError(t, err)
	r := <-done
	require.NoError(t, r.err)
	require.Equal(t, docPutReply, r.reply)
}

var hexDump = testutil.HexDump

// rawFrame encodes a frame (PROTOCOL.md §3) whose payload is a whole
// message of body (§5); for SETTINGS (kind 1) the payload is body itself.
func rawFrame(kind, flags byte, id uint32, body []byte) []byte {
	payload := body
	if kind != 1 {
		payload = binary.BigEndian.AppendUint32(nil, uint32(len(body)))
		payload = append(payload, body...)
	}
	f := []byte{kind, flags}
	f = binary.BigEndian.AppendUint16(f, uint16(len(payload)))
	f = binary.BigEndian.AppendUint32(f, id)
	return append(f, payload...)
}

// readRawFrame reads one frame and returns its kind and its bytes.
func readRawFrame(t *testing.T, r io.Reader) (byte, []byte) {
	t.Helper()
	f := make([]byte, 8)
	_, err := io.ReadFull(r, f)
	require.NoError(t, err)
	payload := make([]byte, binary.BigEndian.Uint16(f[2:4]))
	_, err = io.ReadFull(r, payload)
	require.NoError(t, err)
	return f[0], append(f, payload...)
}

// readRawFrameOf reads frames until one of kind, skipping control frames.
func readRawFrameOf(t *testing.T, r io.Reader, kind byte) []byte {
	t.Helper()
	for {
		k, f := readRawFrame(t, r)
		if k == kind {
			return f
		}
		require.GreaterOrEqual(t, k, byte(6), "a message frame of kind %d where %d was expected", k, kind)
	}
}

// testDocHub sends the document's request message, as it is, to a hub
// that already appended packet 7: packet 7 is a duplicate, packet 8 is
// appended, and both are in the log with alice, the connection's user,
// as their sender.
func testDocHub(t *testing.T, msg []byte) {
	keys := newTestKeys("alice")
	hub := startHub(t, HubConfig{UserKeys: keys.UserKeys})
	c := rawNode(t, keys, "alice", hub.addr)
	ctx := testCtx(t, 20*time.Second)
	var open openReply
	require.NoError(t, c.Invoke(ctx, methodOpen, openRequest{Name: "orders", Persistent: true, Create: true}, &open))
	var first putReply
	require.NoError(t, c.Invoke(ctx, methodPut, putRequest{Pipeline: "orders", Node: docNode, Packets: docPutRequest.Packets[:1]}, &first))
	require.Len(t, first.Acks, 1)
	require.EqualValues(t, 1, first.Acks[0].Seq)

	resp, err := c.RequestMethod(ctx, methodPut, msgpack.RawMessage(msg))
	require.NoError(t, err)
	var rep putReply
	require.NoError(t, resp.Decode(&rep))
	require.Len(t, rep.Acks, 2)
	assert.Equal(t, wireAck{Dup: true}, rep.Acks[0], "packet 7 is a duplicate")
	assert.EqualValues(t, 2, rep.Acks[1].Seq, "packet 8 is appended")
	assert.Positive(t, rep.Acks[1].Time)
	assert.False(t, rep.Acks[1].Dup)
	// The hub's reply is encoded as §21.12's: the same shape, its own Seq
	// and time.
	require.Equal(t, hexDump(wireEncode(t, rep)), hexDump(resp.Raw()))

	var read readReply
	require.NoError(t, c.Invoke(ctx, methodRead, readRequest{Pipeline: "orders"}, &read))
	require.Len(t, read.Packets, 2)
	for i, want := range docPutRequest.Packets {
		got := read.Packets[i]
		assert.EqualValues(t, i+1, got.Seq)
		assert.Equal(t, "alice", got.Sender)
		assert.Equal(t, docNode, got.Node)
		assert.Equal(t, want.N, got.N)
		assert.Equal(t, want.Data, got.Data)
	}
	assert.Nil(t, read.Gap)
	assert.EqualValues(t, 2, read.Last)
}
