// Package testenv decides what a test does when something it needs from
// the machine (a tool, the shared golden data or media) is missing.
package testenv

import (
	"fmt"
	"os"
	"testing"
)

// Missing skips the test on a developer's machine and fails it under CI
// ($CI set), where everything the tests need is installed and a skipped
// suite would hide a broken setup. why names what is missing.
func Missing(t testing.TB, format string, args ...any) {
	t.Helper()
	why := fmt.Sprintf(format, args...)
	if os.Getenv("CI") != "" {
		t.Fatalf("%s (CI is set: nothing may skip)", why)
	}
	t.Skip(why)
}
