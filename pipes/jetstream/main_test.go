package jetstream

import (
	"os"
	"testing"

	"go.uber.org/goleak"
)

// TestMain runs the test binary as a hub process when a test started it
// as one (see child_test.go), and otherwise fails the run if a test
// leaves a goroutine behind.
func TestMain(m *testing.M) {
	if os.Getenv(childHubEnv) != "" {
		os.Exit(runChildHub())
	}
	goleak.VerifyTestMain(m)
}
