package avatar

import (
	"errors"
	"math/big"
	"os"
	"path/filepath"
	"testing"

	"github.com/avatargen/musetalk/media"
)

func TestKey(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	file := filepath.Join(dir, "a.png")
	if err := os.WriteFile(file, []byte("avatar bytes"), 0o644); err != nil {
		t.Fatal(err)
	}
	key := func(path string, o Options, w string) string {
		t.Helper()
		k, err := Key(path, o, w)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	base := key(file, DefaultOptions(), "w1")
	// Pinned: the key of these bytes, options and weights must not change
	// between runs or releases, or every cached avatar would be prepared
	// again. Change it only together with keyFormat. (Checked against an
	// independent computation of the documented derivation.)
	const pinned = "206d9b38cb0d88537c5d97f69160fa98837251c9f95b87ff521f7f05fa042e30"
	if base != pinned {
		t.Errorf("Key = %s, pinned %s", base, pinned)
	}
	if len(base) != 64 || validKey(base) != nil {
		t.Errorf("key %q is not 64 hex digits", base)
	}

	// Same content elsewhere and equivalent options give the same key.
	copyPath := filepath.Join(dir, "b.mp4")
	os.WriteFile(copyPath, []byte("avatar bytes"), 0o644)
	same := map[string]string{
		"copy":                 key(copyPath, DefaultOptions(), "w1"),
		"v15 ignores bbox":     key(file, Options{Version: "v15", BBoxShift: 7, ExtraMargin: 10, ParsingMode: media.ParsingJaw}, "w1"),
		"zero fields":          key(file, Options{ParsingMode: media.ParsingJaw}, "w1"),
		"explicit cheek width": key(file, Options{ParsingMode: media.ParsingJaw, LeftCheek: 90, RightCheek: 90}, "w1"),
		"explicit detector":    key(file, Options{ParsingMode: media.ParsingJaw, FaceDetector: DetectorDWPose}, "w1"),
	}
	for name, k := range same {
		if k != base {
			t.Errorf("%s: key differs", name)
		}
	}
	box := media.Box{1, 2, 30, 40}
	os.WriteFile(filepath.Join(dir, "c.png"), []byte("avatar bytez"), 0o644)
	different := map[string]string{
		"content":     key(filepath.Join(dir, "c.png"), DefaultOptions(), "w1"),
		"weights":     key(file, DefaultOptions(), "w2"),
		"version":     key(file, Options{Version: "v1"}, "w1"),
		"raw parsing": key(file, Options{}, "w1"),
		"margin":      key(file, Options{ParsingMode: media.ParsingJaw, ExtraMargin: 11}, "w1"),
		"cheek":       key(file, Options{ParsingMode: media.ParsingJaw, LeftCheek: 80}, "w1"),
		"face box":    key(file, Options{ParsingMode: media.ParsingJaw, FaceBox: &box}, "w1"),
		"fps":         key(file, Options{ParsingMode: media.ParsingJaw, FPS: big.NewRat(30000, 1001)}, "w1"),
		"s3fd":        key(file, Options{ParsingMode: media.ParsingJaw, FaceDetector: DetectorS3FD}, "w1"),
	}
	seen := map[string]string{base: "base"}
	for name, k := range different {
		if prev, ok := seen[k]; ok {
			t.Errorf("%s: same key as %s", name, prev)
		}
		seen[k] = name
	}
	if key(file, Options{Version: "v1", BBoxShift: 3}, "w1") == key(file, Options{Version: "v1"}, "w1") {
		t.Error("v1 bbox shift does not change the key")
	}
	if key(file, Options{FaceBox: &box, FaceDetector: DetectorS3FD}, "w1") != key(file, Options{FaceBox: &box}, "w1") {
		t.Error("the face detector changes the key of a face box")
	}

	if _, err := Key(file, Options{Version: "v2"}, "w1"); !errors.Is(err, ErrInvalidOptions) {
		t.Errorf("bad version: %v", err)
	}
	if _, err := Key(filepath.Join(dir, "missing"), DefaultOptions(), "w1"); err == nil {
		t.Error("missing file hashed")
	}
}

func TestNormalize(t *testing.T) {
	t.Parallel()
	fb := media.Box{10, 20, 30, 40}
	n, err := Options{BBoxShift: 5, ParsingMode: media.ParsingJaw, FaceBox: &fb}.Normalize()
	if err != nil {
		t.Fatal(err)
	}
	if n.Version != "v15" || n.BBoxShift != 0 || n.ExtraMargin != 10 || n.LeftCheek != 90 || n.RightCheek != 90 ||
		n.FaceBox == &fb || *n.FaceBox != fb || n.FaceDetector != "" {
		t.Errorf("v15 defaults: %+v", n)
	}
	if n, err := (Options{}).Normalize(); err != nil || n.FaceDetector != DetectorDWPose {
		t.Errorf("default face detector: %q, %v", n.FaceDetector, err)
	}
	if n, err := (Options{FaceDetector: DetectorS3FD}).Normalize(); err != nil || n.FaceDetector != DetectorS3FD {
		t.Errorf("s3fd: %q, %v", n.FaceDetector, err)
	}
	n, err = Options{Version: "v1", BBoxShift: -7, ExtraMargin: 30, ParsingMode: media.ParsingJaw, LeftCheek: 5}.Normalize()
	if err != nil {
		t.Fatal(err)
	}
	if n.BBoxShift != -7 || n.ExtraMargin != 0 || n.ParsingMode != media.ParsingRaw || n.LeftCheek != 0 {
		t.Errorf("v1: %+v", n)
	}
	bad := []Options{
		{Version: "v2"},
		{ExtraMargin: -1},
		{ParsingMode: media.ParsingJaw, LeftCheek: -1},
		{ParsingMode: media.ParsingJaw, RightCheek: 300},
		{ParsingMode: media.ParsingMode(9)},
		{FaceBox: &media.Box{10, 10, 10, 20}},
		{FaceBox: &media.Box{-1, 10, 10, 20}},
		{FPS: big.NewRat(-1, 1)},
		{FPS: new(big.Rat)},
		{FaceDetector: "retinaface"},
	}
	for _, o := range bad {
		if _, err := o.Normalize(); !errors.Is(err, ErrInvalidOptions) {
			t.Errorf("%+v: %v", o, err)
		}
	}
}

func TestFaceBox(t *testing.T) {
	t.Parallel()
	v15 := Options{Version: "v15", ExtraMargin: 10}
	v1 := func(shift int) Options { return Options{Version: "v1", BBoxShift: shift} }
	for _, c := range []struct {
		name string
		in   media.Box
		w, h int
		opt  Options
		want media.Box
		ok   bool
	}{
		{"v15 margin", media.Box{178, 56, 270, 182}, 512, 512, v15, media.Box{178, 56, 270, 192}, true},
		{"v15 margin clamped", media.Box{10, 10, 50, 95}, 100, 100, v15, media.Box{10, 10, 50, 100}, true},
		{"v1 as is", media.Box{178, 56, 270, 182}, 512, 512, v1(0), media.Box{178, 56, 270, 182}, true},
		{"v1 shift down", media.Box{178, 56, 270, 182}, 512, 512, v1(5), media.Box{178, 66, 270, 182}, true},
		{"v1 shift up", media.Box{178, 56, 270, 182}, 512, 512, v1(-7), media.Box{178, 42, 270, 182}, true},
		{"v1 shift up clamped", media.Box{178, 6, 270, 182}, 512, 512, v1(-7), media.Box{178, 0, 270, 182}, true},
		{"v1 shift past the bottom dropped", media.Box{178, 56, 270, 82}, 512, 512, v1(20), media.Box{178, 56, 270, 82}, true},
		{"clipped", media.Box{-5, -3, 120, 130}, 100, 100, v1(0), media.Box{0, 0, 100, 100}, true},
		{"outside", media.Box{100, 0, 120, 50}, 100, 100, v1(0), media.Box{}, false},
		{"empty", media.Box{20, 30, 20, 50}, 100, 100, v1(0), media.Box{}, false},
	} {
		got, ok := faceBox(c.in, c.w, c.h, c.opt, true)
		if got != c.want || ok != c.ok {
			t.Errorf("%s: faceBox(%v) = %v, %v; want %v, %v", c.name, c.in, got, ok, c.want, c.ok)
		}
	}
}
