package blob

import (
	"os"

	"golang.org/x/sys/unix"
)

// sha1Attr is the extended attribute in which Dir records an object's
// SHA-1 (lower-case hex) when it writes the object.
const sha1Attr = "user.musetalk.sha1"

// setSHA1Attr records sum on f. It is best effort: a filesystem without
// user extended attributes leaves the object without one, and Stat then
// reports no SHA-1 (Digest reads the object instead).
func setSHA1Attr(f *os.File, sum string) {
	rc, err := f.SyscallConn()
	if err != nil {
		return
	}
	rc.Control(func(fd uintptr) { _ = unix.Fsetxattr(int(fd), sha1Attr, []byte(sum), 0) })
}

// sha1AttrOf returns the SHA-1 recorded on f, or "" when there is none (or
// what is there is not a SHA-1).
func sha1AttrOf(f *os.File) string {
	rc, err := f.SyscallConn()
	if err != nil {
		return ""
	}
	var buf [40]byte
	n := -1
	rc.Control(func(fd uintptr) { n, _ = unix.Fgetxattr(int(fd), sha1Attr, buf[:]) })
	if n != len(buf) || !ValidSHA1(string(buf[:])) {
		return ""
	}
	return string(buf[:])
}
