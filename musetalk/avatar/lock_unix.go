//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package avatar

import (
	"errors"
	"os"
	"syscall"
)

// tryLock takes f's advisory lock (flock), shared or exclusive, without
// waiting. It returns errLocked when another open file description holds
// a conflicting lock, and errNoLocks when the file system refuses locks.
// Closing f releases the lock; so does the holder's death.
func tryLock(f *os.File, exclusive bool) error {
	how := syscall.LOCK_SH
	if exclusive {
		how = syscall.LOCK_EX
	}
	for {
		err := syscall.Flock(int(f.Fd()), how|syscall.LOCK_NB)
		switch {
		case err == nil:
			return nil
		case errors.Is(err, syscall.EINTR):
			continue
		case errors.Is(err, syscall.EWOULDBLOCK):
			return errLocked
		}
		return errors.Join(errNoLocks, err)
	}
}
