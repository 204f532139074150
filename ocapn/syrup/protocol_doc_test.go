package syrup

import (
	"bytes"
	"encoding/hex"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestProtocolDocSyrupVectors checks PROTOCOL.md §22.3: every vector of
// the first table decodes and encodes back to its octets, every input of
// the second is refused.
func TestProtocolDocSyrupVectors(t *testing.T) {
	doc, err := os.ReadFile("../../PROTOCOL.md")
	require.NoError(t, err)
	text := string(doc)
	start := strings.Index(text, "### 22.3 Vectors")
	require.GreaterOrEqual(t, start, 0)
	text = text[start:]
	if end := strings.Index(text[1:], "\n## "); end > 0 {
		text = text[:end+1]
	}
	parts := strings.SplitN(text, "Every row is refused", 2)
	require.Len(t, parts, 2)
	row := regexp.MustCompile("(?m)^\\| (.+) \\| `([0-9a-f]+)` \\|$")
	accepted, refused := row.FindAllStringSubmatch(parts[0], -1), row.FindAllStringSubmatch(parts[1], -1)
	require.GreaterOrEqual(t, len(accepted), 15)
	require.GreaterOrEqual(t, len(refused), 10)
	for _, m := range accepted {
		in, err := hex.DecodeString(m[2])
		require.NoError(t, err)
		v, err := Unmarshal(in)
		if assert.NoError(t, err, m[1]) {
			out, err := Marshal(v)
			require.NoError(t, err)
			assert.True(t, bytes.Equal(in, out), "%s: encodes back as %x", m[1], out)
		}
	}
	for _, m := range refused {
		in, err := hex.DecodeString(m[2])
		require.NoError(t, err)
		_, err = Unmarshal(in)
		assert.Error(t, err, m[1])
	}
}
