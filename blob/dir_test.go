package blob_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/avatargen/musetalk/blob"
	"github.com/avatargen/musetalk/blob/blobtest"
)

func newDir(t *testing.T) (*blob.Dir, string) {
	t.Helper()
	root := filepath.Join(t.TempDir(), "store")
	d, err := blob.NewDir(root)
	if err != nil {
		t.Fatalf("NewDir: %v", err)
	}
	t.Cleanup(func() {
		d.Close()
		assertNoTempFiles(t, root)
	})
	return d, root
}

func assertNoTempFiles(t *testing.T, root string) {
	t.Helper()
	filepath.WalkDir(root, func(p string, e fs.DirEntry, err error) error {
		if err == nil && strings.HasPrefix(e.Name(), ".tmp ") {
			t.Errorf("temporary file left behind: %s", p)
		}
		return nil
	})
}

func TestDirConformance(t *testing.T) {
	blobtest.Run(t, func(t *testing.T) blob.Store {
		d, _ := newDir(t)
		return d
	}, 3<<20)
}

func TestDirLayout(t *testing.T) {
	d, root := newDir(t)
	ctx := context.Background()
	if err := d.Put(ctx, "jobs/42/out.mp4", strings.NewReader("video"), 5); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(root, "jobs", "42", "out.mp4"))
	if err != nil || string(b) != "video" {
		t.Fatalf("file under root = %q, %v; want %q", b, err, "video")
	}
	if d.Path() != root {
		t.Fatalf("Path() = %q, want %q", d.Path(), root)
	}
}

func TestDirFileAndDirectoryKeys(t *testing.T) {
	d, _ := newDir(t)
	ctx := context.Background()
	if err := d.Put(ctx, "a/b", strings.NewReader("x"), 1); err != nil {
		t.Fatal(err)
	}
	if err := d.Put(ctx, "a/b/c", strings.NewReader("y"), 1); err == nil {
		t.Fatal(`Put("a/b/c") with object "a/b" stored succeeded`)
	}
	if err := d.Put(ctx, "a", strings.NewReader("z"), 1); err == nil {
		t.Fatal(`Put("a") over directory "a" succeeded`)
	}
	if _, err := d.Get(ctx, "a"); !errors.Is(err, blob.ErrNotFound) {
		t.Fatalf(`Get("a") of a directory: %v, want ErrNotFound`, err)
	}
	if _, err := d.Stat(ctx, "a/b/c"); !errors.Is(err, blob.ErrNotFound) {
		t.Fatalf(`Stat("a/b/c") under a file: %v, want ErrNotFound`, err)
	}
	if err := d.Delete(ctx, "a"); err != nil {
		t.Fatalf(`Delete("a") of a directory: %v`, err)
	}
	if rc, err := d.Get(ctx, "a/b"); err != nil {
		t.Fatalf(`"a/b" gone after Delete("a"): %v`, err)
	} else {
		rc.Close()
	}
}

// Symbolic links under the root must not let a key reach outside it.
func TestDirSymlinksCannotEscape(t *testing.T) {
	d, root := newDir(t)
	ctx := context.Background()
	outside := filepath.Join(filepath.Dir(root), "outside")
	if err := os.Mkdir(outside, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(outside, "secret"), []byte("secret"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, filepath.Join(root, "abs")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("../outside", filepath.Join(root, "rel")); err != nil {
		t.Fatal(err)
	}
	for _, link := range []string{"abs", "rel"} {
		if rc, err := d.Get(ctx, link+"/secret"); err == nil {
			b, _ := io.ReadAll(rc)
			rc.Close()
			t.Fatalf("Get through %s link read %q from outside the root", link, b)
		}
		if _, err := d.Stat(ctx, link+"/secret"); err == nil {
			t.Fatalf("Stat through %s link succeeded outside the root", link)
		}
		if err := d.Put(ctx, link+"/planted", strings.NewReader("x"), 1); err == nil {
			t.Fatalf("Put through %s link succeeded", link)
		}
		if err := d.Delete(ctx, link+"/secret"); err == nil {
			t.Fatalf("Delete through %s link succeeded", link)
		}
	}
	if _, err := os.Stat(filepath.Join(outside, "planted")); err == nil {
		t.Fatal("a Put wrote a file outside the root")
	}
	if _, err := os.Stat(filepath.Join(outside, "secret")); err != nil {
		t.Fatalf("a Delete removed a file outside the root: %v", err)
	}

	// Links that stay inside the root keep working.
	if err := d.Put(ctx, "real/obj", strings.NewReader("inside"), 6); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("real", filepath.Join(root, "alias")); err != nil {
		t.Fatal(err)
	}
	rc, err := d.Get(ctx, "alias/obj")
	if err != nil {
		t.Fatalf("Get through a link inside the root: %v", err)
	}
	b, _ := io.ReadAll(rc)
	rc.Close()
	if string(b) != "inside" {
		t.Fatalf("Get through a link inside the root = %q", b)
	}
}

func TestDirGetStopsWhenContextEnds(t *testing.T) {
	d, _ := newDir(t)
	data := blobtest.Data(1<<20, 5)
	if err := d.Put(context.Background(), "big", bytes.NewReader(data), int64(len(data))); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	rc, err := d.Get(ctx, "big")
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	buf := make([]byte, 1000)
	if _, err := io.ReadFull(rc, buf); err != nil {
		t.Fatal(err)
	}
	cancel()
	if _, err := io.ReadAll(rc); !errors.Is(err, context.Canceled) {
		t.Fatalf("reading after cancel: %v, want context.Canceled", err)
	}
}

func TestNewDirErrors(t *testing.T) {
	if _, err := blob.NewDir(""); err == nil {
		t.Fatal("NewDir(\"\") succeeded")
	}
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := blob.NewDir(file)
	if err == nil || !strings.Contains(err.Error(), file) {
		t.Fatalf("NewDir(a file) = %v, want an error naming the path", err)
	}
}
