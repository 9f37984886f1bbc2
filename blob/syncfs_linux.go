package blob

import (
	"os"

	"golang.org/x/sys/unix"
)

// syncFS flushes the whole filesystem that holds f (syncfs(2)): file data,
// new names and directories, in one call. Since Linux 5.8 it also reports
// write-back errors of any file on it.
func syncFS(f *os.File) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) { serr = unix.Syncfs(int(fd)) }); err != nil {
		return err
	}
	if serr != nil {
		return &os.SyscallError{Syscall: "syncfs", Err: serr}
	}
	return nil
}

const haveSyncFS = true
