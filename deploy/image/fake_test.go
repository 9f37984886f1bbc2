package image

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"debug/elf"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ulikunitz/xz"
)

// fakeFile is a file of a fake package's data archive.
type fakeFile struct {
	name string // as in the archive: "./usr/bin/x", "./usr/" for a directory
	body string
	link string    // symlink target
	hard string    // hard link target
	mode int64     // 0: 0644 (0755 for directories)
	mt   time.Time // modification time in the archive
}

// fakeDeb builds a Debian package in memory: an ar archive with
// debian-binary, control.tar.gz and data.tar.<comp> (gz or xz), with
// deliberately noisy tar headers (user names, access times, mtimes).
func fakeDeb(t testing.TB, pkg, version, comp string, files []fakeFile) []byte {
	t.Helper()
	control := fmt.Sprintf("Package: %s\nVersion: %s\nArchitecture: amd64\nDescription: fake %s\n for tests\n", pkg, version, pkg)
	var ctl bytes.Buffer
	zw := gzip.NewWriter(&ctl)
	tw := tar.NewWriter(zw)
	writeTar(t, tw, &tar.Header{Name: "./", Typeflag: tar.TypeDir, Mode: 0o755})
	writeTar(t, tw, &tar.Header{Name: "./control", Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(control))}, control)
	writeTar(t, tw, &tar.Header{Name: "./postinst", Typeflag: tar.TypeReg, Mode: 0o755, Size: 9}, "#!/bin/sh")
	closeAll(t, tw, zw)

	var data bytes.Buffer
	var dw interface {
		Write([]byte) (int, error)
		Close() error
	}
	switch comp {
	case "xz":
		w, err := xz.NewWriter(&data)
		if err != nil {
			t.Fatal(err)
		}
		dw = w
	default:
		dw = gzip.NewWriter(&data)
	}
	tw = tar.NewWriter(dw)
	writeTar(t, tw, &tar.Header{Name: "./", Typeflag: tar.TypeDir, Mode: 0o755})
	for _, f := range files {
		mt := f.mt
		if mt.IsZero() {
			mt = time.Date(2024, 5, 6, 7, 8, 9, 0, time.UTC)
		}
		h := &tar.Header{Name: f.name, ModTime: mt, AccessTime: mt, ChangeTime: mt, Uname: "root", Gname: "root", Format: tar.FormatGNU}
		switch {
		case strings.HasSuffix(f.name, "/"):
			h.Typeflag, h.Mode = tar.TypeDir, 0o755
		case f.link != "":
			h.Typeflag, h.Linkname, h.Mode = tar.TypeSymlink, f.link, 0o777
		case f.hard != "":
			h.Typeflag, h.Linkname, h.Mode = tar.TypeLink, f.hard, 0o644
		default:
			h.Typeflag, h.Mode, h.Size = tar.TypeReg, 0o644, int64(len(f.body))
		}
		if f.mode != 0 {
			h.Mode = f.mode
		}
		writeTar(t, tw, h, f.body)
	}
	closeAll(t, tw, dw)

	var ar bytes.Buffer
	ar.WriteString("!<arch>\n")
	member := func(name string, b []byte) {
		fmt.Fprintf(&ar, "%-16s%-12d%-6d%-6d%-8s%-10d`\n", name, 1700000000, 0, 0, "100644", len(b))
		ar.Write(b)
		if len(b)%2 == 1 {
			ar.WriteByte('\n')
		}
	}
	member("debian-binary", []byte("2.0\n"))
	member("control.tar.gz", ctl.Bytes())
	ext := "gz"
	if comp == "xz" {
		ext = "xz"
	}
	member("data.tar."+ext, data.Bytes())
	return ar.Bytes()
}

func writeTar(t testing.TB, tw *tar.Writer, h *tar.Header, body ...string) {
	t.Helper()
	if err := tw.WriteHeader(h); err != nil {
		t.Fatal(err)
	}
	for _, b := range body {
		if _, err := tw.Write([]byte(b)); err != nil {
			t.Fatal(err)
		}
	}
}

func closeAll(t testing.TB, cs ...interface{ Close() error }) {
	t.Helper()
	for _, c := range cs {
		if err := c.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

// fakeELF is a minimal x86-64 shared object whose dynamic section needs
// the given libraries and searches runpath (when not empty): enough for
// debug/elf, not for a loader.
func fakeELF(runpath string, needed ...string) []byte {
	// .dynstr
	strtab := []byte{0}
	var dyn []uint64
	for _, n := range needed {
		dyn = append(dyn, uint64(elf.DT_NEEDED), uint64(len(strtab)))
		strtab = append(append(strtab, n...), 0)
	}
	if runpath != "" {
		dyn = append(dyn, uint64(elf.DT_RUNPATH), uint64(len(strtab)))
		strtab = append(append(strtab, runpath...), 0)
	}
	dyn = append(dyn, uint64(elf.DT_NULL), 0)
	shstr := []byte("\x00.dynstr\x00.dynamic\x00.shstrtab\x00")
	const ehsize, shentsize = 64, 64
	strOff := uint64(ehsize)
	dynOff := strOff + uint64(len(strtab))
	dynOff = (dynOff + 7) &^ 7
	shstrOff := dynOff + uint64(len(dyn)*8)
	shOff := (shstrOff + uint64(len(shstr)) + 7) &^ 7
	buf := make([]byte, shOff+4*shentsize)
	copy(buf, elf.ELFMAG)
	buf[4], buf[5], buf[6] = byte(elf.ELFCLASS64), byte(elf.ELFDATA2LSB), byte(elf.EV_CURRENT)
	le := binary.LittleEndian
	le.PutUint16(buf[16:], uint16(elf.ET_DYN))
	le.PutUint16(buf[18:], uint16(elf.EM_X86_64))
	le.PutUint32(buf[20:], uint32(elf.EV_CURRENT))
	le.PutUint64(buf[40:], shOff)
	le.PutUint16(buf[52:], ehsize)
	le.PutUint16(buf[58:], shentsize)
	le.PutUint16(buf[60:], 4) // sections
	le.PutUint16(buf[62:], 3) // .shstrtab
	copy(buf[strOff:], strtab)
	for i, v := range dyn {
		le.PutUint64(buf[dynOff+uint64(i*8):], v)
	}
	copy(buf[shstrOff:], shstr)
	sh := func(i int, name uint32, typ elf.SectionType, off, size uint64, link uint32, entsize uint64) {
		b := buf[shOff+uint64(i*shentsize):]
		le.PutUint32(b[0:], name)
		le.PutUint32(b[4:], uint32(typ))
		le.PutUint64(b[24:], off)
		le.PutUint64(b[32:], size)
		le.PutUint32(b[40:], link)
		le.PutUint64(b[48:], 1)
		le.PutUint64(b[56:], entsize)
	}
	sh(1, 1, elf.SHT_STRTAB, strOff, uint64(len(strtab)), 0, 0)
	sh(2, 9, elf.SHT_DYNAMIC, dynOff, uint64(len(dyn)*8), 1, 16)
	sh(3, 18, elf.SHT_STRTAB, shstrOff, uint64(len(shstr)), 0, 0)
	return buf
}

// fakeWorld is a set of fake packages written as .deb files, their lock,
// and two fake binaries.
type fakeWorld struct {
	bins []Binary
	debs []string
	dir  string
	lock *Lock
}

// newFakeWorld writes the fake packages of a tiny root file system: a
// "libc6" with an ELF loader-less libc, ca-certificates with two
// certificates, tzdata with UTC, base-files with /tmp 0755 (which the
// image must make 1777), and libblas3 whose library sits in a
// subdirectory, as update-alternatives would link it.
func newFakeWorld(t testing.TB) *fakeWorld {
	t.Helper()
	dir := t.TempDir()
	w := &fakeWorld{dir: dir, lock: &Lock{Suite: "bookworm", Arch: "amd64", Request: []string{"ffmpeg"}}}
	pkgs := []struct {
		name, version, comp string
		files               []fakeFile
	}{
		{"base-files", "12.4", "xz", []fakeFile{{name: "./tmp/"}, {name: "./etc/"}, {name: "./usr/lib/os-release", body: "ID=debian\n"}, {name: "./etc/os-release", link: "../usr/lib/os-release"}}},
		{"ca-certificates", "20250419", "xz", []fakeFile{
			{name: "./usr/share/ca-certificates/mozilla/B.crt", body: "-----BEGIN CERTIFICATE-----\nBBBB\n-----END CERTIFICATE-----\n"},
			{name: "./usr/share/ca-certificates/mozilla/A.crt", body: "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"},
		}},
		{"libc6", "2.36-9", "xz", []fakeFile{
			{name: "./lib/x86_64-linux-gnu/"},
			{name: "./lib/x86_64-linux-gnu/libc.so.6", body: string(fakeELF(""))},
			{name: "./lib64/ld-linux-x86-64.so.2", link: "/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"},
			{name: "./lib/x86_64-linux-gnu/ld-linux-x86-64.so.2", body: "loader"},
		}},
		{"libblas3", "3.11.0-2", "gz", []fakeFile{
			{name: "./usr/lib/x86_64-linux-gnu/blas/libblas.so.3.11.0", body: string(fakeELF("", "libc.so.6"))},
			{name: "./usr/lib/x86_64-linux-gnu/blas/libblas.so.3", link: "libblas.so.3.11.0"},
		}},
		{"ffmpeg", "7:5.1.9-0+deb12u1", "xz", []fakeFile{
			{name: "./usr/bin/ffmpeg", body: string(fakeELF("", "libc.so.6", "libblas.so.3")), mode: 0o755},
			{name: "./usr/bin/ffprobe", hard: "./usr/bin/ffmpeg"},
			{name: "./usr/share/doc/ffmpeg/" + strings.Repeat("long-name-", 12) + "README", body: "a name longer than 100 bytes"},
		}},
		{"tzdata", "2026f", "gz", []fakeFile{{name: "./usr/share/zoneinfo/Etc/UTC", body: "TZif2"}}},
	}
	for _, p := range pkgs {
		b := fakeDeb(t, p.name, p.version, p.comp, p.files)
		lp := LockedPackage{Name: p.name, Version: p.version, Arch: "amd64", Size: int64(len(b)), Filename: "pool/main/" + p.name + ".deb"}
		h := sha256.Sum256(b)
		lp.SHA256 = hex.EncodeToString(h[:])
		f := filepath.Join(dir, lp.DebFile())
		if err := os.WriteFile(f, b, 0o644); err != nil {
			t.Fatal(err)
		}
		w.debs = append(w.debs, f)
		w.lock.Packages = append(w.lock.Packages, lp)
	}
	for _, n := range []string{"musetalk", "musetalk-cuda"} {
		needs := []string{"libc.so.6"}
		if n == "musetalk-cuda" {
			needs = append(needs, "libcuda.so.1")
		}
		f := filepath.Join(dir, n)
		if err := os.WriteFile(f, fakeELF("", needs...), 0o700); err != nil {
			t.Fatal(err)
		}
		w.bins = append(w.bins, Binary{Name: n, Path: f})
	}
	return w
}

func (w *fakeWorld) options() Options {
	return Options{
		Binaries: w.bins,
		Created:  time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC),
		Debs:     w.debs,
		Lock:     w.lock,
		Revision: "0123456789abcdef",
		Version:  "v1.2.3",
	}
}
