package pipes

import (
	"os"
	"testing"

	"go.uber.org/goleak"
)

// TestMain runs a child role when the test binary is started as one of
// the processes of a process test, and otherwise fails the run if any
// test leaves a goroutine behind.
func TestMain(m *testing.M) {
	if role := os.Getenv(childRoleEnv); role != "" {
		os.Exit(runChild(role))
	}
	goleak.VerifyTestMain(m)
}
