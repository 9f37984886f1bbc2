//go:build !(linux || darwin || freebsd || netbsd || openbsd || dragonfly)

package avatar

import "os"

// tryLock reports that this system has no advisory locks: the cache then
// relies on its atomic renames alone (see [Cache]).
func tryLock(f *os.File, exclusive bool) error { return errNoLocks }
