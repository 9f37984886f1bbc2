//go:build !(linux || darwin || freebsd || netbsd || openbsd || dragonfly)

package weights

import (
	"errors"
	"os"
)

// mmapFile is not available on this platform; files are read with ReadAt.
func mmapFile(*os.File, int64) ([]byte, error) {
	return nil, errors.New("memory mapping is not supported on this platform")
}

func munmap([]byte) error { return nil }
