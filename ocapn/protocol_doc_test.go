package ocapn

import (
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestProtocolDocOCapNVectors checks PROTOCOL.md §23.6 shows the vectors
// TestCryptoAgreesWithTheTestSuite checks against the code.
func TestProtocolDocOCapNVectors(t *testing.T) {
	doc, err := os.ReadFile("../PROTOCOL.md")
	require.NoError(t, err)
	text := string(doc)
	start := strings.Index(text, "### 23.6 Vectors")
	require.GreaterOrEqual(t, start, 0)
	text = text[start:]
	for name, v := range map[string]string{
		"A's public key": vecPubA, "A's public key as Syrup": vecPubASyrup,
		"A's public identifier": vecIDA, "B's public identifier": vecIDB,
		"the session ID": vecSession, "A's op:start-session": vecStart,
	} {
		assert.Contains(t, text, "| "+name, name)
		assert.Contains(t, text, "`"+v+"`", name)
	}
	assert.Contains(t, text, "ocapn://abc123.tcp-testing-only?host=127.0.0.1&port=22045")
}
