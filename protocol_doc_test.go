package bokbok

import (
	"os"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/bokbok-go/bokbok/internal/testutil"
)

// protocolExample is a worked example that PROTOCOL.md shows as a hex dump.
type protocolExample struct {
	name  string
	bytes func(t *testing.T) []byte
}

// frameBytes encodes one frame: header and payload.
func frameBytes(kind frameKind, flags uint8, id uint32, payload []byte) []byte {
	return append(appendFrameHeader(nil, kind, flags, len(payload), id), payload...)
}

func mustBody(t *testing.T) func([]byte, error) []byte {
	return func(b []byte, err error) []byte {
		require.NoError(t, err)
		return b
	}
}

var protocolExamples = []protocolExample{
	{"preamble, insecure", func(t *testing.T) []byte { return appendPreamble(nil, modeInsecure) }},
	{"SETTINGS with the defaults", func(t *testing.T) []byte {
		// As a Conn sends it, headers: 1 included (headers_test.go has the
		// SETTINGS of a peer without headers).
		defaults, err := (*Config)(nil).withDefaults()
		require.NoError(t, err)
		return (&Conn{cfg: defaults}).settingsFrame()
	}},
	{`REQUEST id 1, no deadline, message "hello"`, func(t *testing.T) []byte {
		return frameBytes(kindRequest, 0, 1, mustBody(t)(encodeRequestBody(0, "hello")))
	}},
	{`REQUEST id 2, nested, deadline 5 s, message {"op": "add", "args": [2, 3]}`, func(t *testing.T) []byte {
		msg := struct {
			Op   string `msgpack:"op"`
			Args []int  `msgpack:"args"`
		}{"add", []int{2, 3}}
		return frameBytes(kindRequest, flagNested, 2, mustBody(t)(encodeRequestBody(5_000_000, msg)))
	}},
	{`RESPONSE id 1, message "echo: hello"`, func(t *testing.T) []byte {
		return frameBytes(kindResponse, 0, 1, mustBody(t)(encodeValueBody("echo: hello")))
	}},
	{`ERROR id 2, code "bokbok.busy"`, func(t *testing.T) []byte {
		return frameBytes(kindError, 0, 2, encodeErrorBody(CodeBusy, "try later"))
	}},
	{`NOTIFY id 3, message [1, true]`, func(t *testing.T) []byte {
		return frameBytes(kindNotify, 0, 3, mustBody(t)(encodeValueBody([]any{1, true})))
	}},
	{"control frames", func(t *testing.T) []byte {
		var b []byte
		b = appendFrameHeader(b, kindCancel, 0, 0, 1)
		b = appendFrameHeader(b, kindPing, 0, 0, 7)
		b = appendFrameHeader(b, kindPong, 0, 0, 7)
		b = appendFrameHeader(b, kindCredit, 0, 0, 64)
		b = appendFrameHeader(b, kindGoAway, 0, 0, 0)
		return b
	}},
	{"CREDIT 4, 4, 2 (a receiver with notify_window 16 crediting 10)", func(t *testing.T) []byte {
		var b []byte
		for _, n := range []uint32{4, 4, 2} {
			b = appendFrameHeader(b, kindCredit, 0, 0, n)
		}
		return b
	}},
}

// hexDump formats b as PROTOCOL.md does.
var hexDump = testutil.HexDump

// TestProtocolDocExamples keeps PROTOCOL.md's hex dumps in step with the
// encoders: every example's bytes must appear in the document verbatim.
func TestProtocolDocExamples(t *testing.T) {
	doc, err := os.ReadFile("PROTOCOL.md")
	require.NoError(t, err)
	for _, ex := range protocolExamples {
		t.Run(ex.name, func(t *testing.T) {
			dump := hexDump(ex.bytes(t))
			if os.Getenv("BOKBOK_PRINT_EXAMPLES") != "" {
				t.Logf("%s:\n%s", ex.name, dump)
			}
			require.Contains(t, string(doc), dump, "PROTOCOL.md lacks the hex dump for %q", ex.name)
		})
	}
}
