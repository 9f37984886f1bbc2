package blob_test

import (
	"context"
	"crypto/sha1"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// TestDirStatReportsPutSHA1: on a filesystem with user extended
// attributes, Stat reports the SHA-1 of what Put wrote (so the control
// plane's check of a finished upload does not read it back), also after
// the object is replaced; an attribute that is not a SHA-1 is ignored.
func TestDirStatReportsPutSHA1(t *testing.T) {
	d, root := newDir(t)
	ctx := context.Background()
	probe := filepath.Join(root, "probe")
	if err := os.WriteFile(probe, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := unix.Setxattr(probe, "user.probe", []byte("x"), 0); errors.Is(err, unix.ENOTSUP) {
		// Without the attributes Stat reports none, and Digest (in the
		// conformance suite) reads the object.
		t.Logf("the filesystem of %s has no user extended attributes: nothing recorded to check", root)
		return
	} else if err != nil {
		t.Fatal(err)
	}
	for _, body := range []string{"first version", "the second, longer version"} {
		if err := d.Put(ctx, "out/1.mp4", strings.NewReader(body), int64(len(body))); err != nil {
			t.Fatal(err)
		}
		info, err := d.Stat(ctx, "out/1.mp4")
		if err != nil {
			t.Fatal(err)
		}
		sum := sha1.Sum([]byte(body))
		if want := hex.EncodeToString(sum[:]); info.SHA1 != want || info.Size != int64(len(body)) {
			t.Fatalf("Stat after Put(%q) = SHA-1 %q size %d, want %s %d", body, info.SHA1, info.Size, want, len(body))
		}
	}
	if err := unix.Setxattr(filepath.Join(root, "out", "1.mp4"), "user.musetalk.sha1", []byte("not a sha-1"), 0); err != nil {
		t.Fatal(err)
	}
	if info, err := d.Stat(ctx, "out/1.mp4"); err != nil || info.SHA1 != "" {
		t.Fatalf("Stat with a bad attribute = %+v, %v; want no SHA-1", info, err)
	}
}
