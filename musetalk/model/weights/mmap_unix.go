//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package weights

import (
	"errors"
	"os"
	"syscall"
)

// mmapFile maps size bytes of f read-only. The mapping stays valid after f
// is closed; it must not be used after munmap. Truncating the file while it
// is mapped makes later reads fault, as with any mapped file.
func mmapFile(f *os.File, size int64) ([]byte, error) {
	if size <= 0 || int64(int(size)) != size {
		return nil, errors.New("file size cannot be mapped")
	}
	return syscall.Mmap(int(f.Fd()), 0, int(size), syscall.PROT_READ, syscall.MAP_SHARED)
}

func munmap(b []byte) error { return syscall.Munmap(b) }
