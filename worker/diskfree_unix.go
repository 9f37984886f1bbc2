//go:build unix

package worker

import (
	"fmt"
	"syscall"
)

// freeDiskBytes returns the bytes an unprivileged user may still write on
// dir's file system.
func freeDiskBytes(dir string) (int64, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return 0, fmt.Errorf("statfs %s: %w", dir, err)
	}
	return int64(st.Bavail) * int64(st.Bsize), nil //nolint:unconvert // field types differ by OS
}
