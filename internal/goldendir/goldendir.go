// Package goldendir finds the numerical reference data. It imports nothing
// of the project, so that every package's tests (the weights reader's
// included) can use it.
package goldendir

import (
	"errors"
	"os"
	"path/filepath"
)

// Dir returns $MUSETALK_GOLDEN_DIR, or ../shared/golden beside the module
// root (found by walking up from the working directory to go.mod).
func Dir() (string, error) {
	if d := os.Getenv("MUSETALK_GOLDEN_DIR"); d != "" {
		return d, nil
	}
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return filepath.Join(dir, "..", "shared", "golden"), nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod above the working directory; set MUSETALK_GOLDEN_DIR")
		}
		dir = parent
	}
}
