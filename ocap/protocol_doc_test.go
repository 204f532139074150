package ocap

import (
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/bokbok-go/bokbok/internal/testutil"
)

// capExamples are the capability messages PROTOCOL.md §19 shows as hex
// dumps, built with the encoders the sessions use.
var capExamples = []struct {
	name  string
	bytes func(t *testing.T) []byte
}{
	{`op:deliver "fetch" to the bootstrap object, question 1`, func(t *testing.T) []byte {
		args, err := encodePayload([]any{"factory"})
		require.NoError(t, err)
		return newOp(opDeliver, 5).desc(desc{descYourExport, 0}).str("fetch").raw(args.data).descs(nil).uint(1).bytes()
	}},
	{`op:return of question 1: a reference to the sender's export 1`, func(t *testing.T) []byte {
		v, err := encodePayload(Ref{t: &actorCell{}})
		require.NoError(t, err)
		return newOp(opReturn, 3).uint(1).raw(v.data).descs([]desc{{descMyExport, 1}}).bytes()
	}},
	{`op:deliver "make-car" pipelined to answer 1, question 2`, func(t *testing.T) []byte {
		args, err := encodePayload([]any{"Explorist", "blue"})
		require.NoError(t, err)
		return newOp(opDeliver, 5).desc(desc{descYourAnswer, 1}).str("make-car").raw(args.data).descs(nil).uint(2).bytes()
	}},
	{`op:release of export 1, received twice`, func(t *testing.T) []byte {
		return newOp(opRelease, 2).uint(1).uint(2).bytes()
	}},
}

// hexDump formats b as PROTOCOL.md does.
var hexDump = testutil.HexDump

// TestProtocolDocCapExamples keeps PROTOCOL.md §19's dumps in step with the
// encoders.
func TestProtocolDocCapExamples(t *testing.T) {
	doc, err := os.ReadFile("../PROTOCOL.md")
	require.NoError(t, err)
	for _, ex := range capExamples {
		t.Run(ex.name, func(t *testing.T) {
			dump := hexDump(ex.bytes(t))
			if !strings.Contains(string(doc), "```\n"+dump+"\n```") {
				t.Errorf("PROTOCOL.md lacks the dump for %s:\n%s", ex.name, dump)
			}
		})
	}
}
