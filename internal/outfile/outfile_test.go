package outfile

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

func TestCreateTempHonoursUmask(t *testing.T) {
	old := syscall.Umask(0o027)
	defer syscall.Umask(old)
	dir := t.TempDir()
	f, err := CreateTemp(dir, ".out.mp4.*.partial")
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	st, err := os.Stat(f.Name())
	if err != nil {
		t.Fatal(err)
	}
	if got := st.Mode().Perm(); got != 0o640 {
		t.Errorf("mode %v, want 0640 (0666 less umask 027)", got)
	}
	base := filepath.Base(f.Name())
	if !strings.HasPrefix(base, ".out.mp4.") || !strings.HasSuffix(base, ".partial") || len(base) != len(".out.mp4..partial")+16 {
		t.Errorf("name %q does not follow the pattern", base)
	}
	g, err := CreateTemp(dir, "x")
	if err != nil || g.Name() == f.Name() || !strings.HasPrefix(filepath.Base(g.Name()), "x") {
		t.Fatalf("second file: %v, %v", g, err)
	}
	g.Close()
	if _, err := CreateTemp(filepath.Join(dir, "missing"), "x*"); err == nil {
		t.Error("no error in a missing directory")
	}
}

func TestWriteFile(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "ids.json")
	for _, content := range []string{"first", "second, longer"} {
		if err := WriteFile(p, []byte(content)); err != nil {
			t.Fatal(err)
		}
		if got, _ := os.ReadFile(p); string(got) != content {
			t.Fatalf("content %q, want %q", got, content)
		}
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Errorf("%d files left in the directory, want 1", len(entries))
	}
	if err := WriteFile(filepath.Join(dir, "missing", "x"), nil); err == nil || !strings.Contains(err.Error(), "missing") {
		t.Errorf("a missing directory: %v", err)
	}
	if err := os.Mkdir(filepath.Join(dir, "taken"), 0o755); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "taken", "f"), nil, 0o644)
	if err := WriteFile(filepath.Join(dir, "taken"), []byte("x")); err == nil {
		t.Error("renaming over a non-empty directory succeeded")
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 2 {
		t.Errorf("a failed write left its temporary file: %d entries", len(entries))
	}
}
