package image

import (
	"archive/tar"
	"bytes"
	"debug/elf"
	"fmt"
	"io"
	"os"
	"path"
	"slices"
	"strings"
)

// HostLibraries are the shared libraries the image may need without
// carrying them: the NVIDIA container runtime mounts the driver's
// libcuda.so.1 (the only library musetalk-cuda links beyond glibc).
var HostLibraries = []string{"libcuda.so.1"}

// systemDirs are the dynamic loader's default directories on Debian
// amd64 (`ld.so --help`); the image has no /etc/ld.so.cache.
var systemDirs = []string{"lib/x86_64-linux-gnu", "usr/lib/x86_64-linux-gnu", "lib", "usr/lib"}

// missingLibraries reads every x86-64 ELF program and library in the
// trees and returns the libraries (DT_NEEDED) the loader would not find
// in them, each with the objects that need it. The first tree is the
// root file system that libraries are looked up in; the others (the
// binaries) are only checked. Libraries in HostLibraries count as found.
func missingLibraries(root *Tree, others []*Tree) (map[string][]string, error) {
	missing := map[string][]string{}
	for _, t := range append([]*Tree{root}, others...) {
		for _, p := range t.Paths() {
			f := t.Get(p)
			if f.Type != tar.TypeReg {
				continue
			}
			needed, dirs, err := elfNeeds(f)
			if err != nil {
				return nil, fmt.Errorf("/%s: %w", p, err)
			}
			for _, lib := range needed {
				if slices.Contains(HostLibraries, lib) || findLibrary(root, lib, dirs, path.Dir(p)) {
					continue
				}
				missing[lib] = append(missing[lib], "/"+p)
			}
		}
	}
	return missing, nil
}

// checkLibraries fails naming every library some program or library of
// the trees needs and the image lacks.
func checkLibraries(root *Tree, others ...*Tree) error {
	missing, err := missingLibraries(root, others)
	if err != nil {
		return err
	}
	if len(missing) == 0 {
		return nil
	}
	var lines []string
	for lib, by := range missing {
		if len(by) > 3 {
			by = append(by[:3:3], fmt.Sprintf("and %d more", len(by)-3))
		}
		lines = append(lines, fmt.Sprintf("%s (needed by %s)", lib, strings.Join(by, ", ")))
	}
	slices.Sort(lines)
	return fmt.Errorf("the image lacks %d shared libraries that its programs need (add the packages that ship them to packages.txt, or stop excluding them):\n  %s", len(lines), strings.Join(lines, "\n  "))
}

// elfNeeds returns the libraries an x86-64 dynamic ELF file needs and
// its own search directories (DT_RUNPATH, else DT_RPATH), or nothing for
// any other file.
func elfNeeds(f *File) (needed, dirs []string, err error) {
	var r io.ReaderAt
	if f.Source != "" {
		src, err := os.Open(f.Source)
		if err != nil {
			return nil, nil, err
		}
		defer src.Close()
		r = src
	} else {
		if !bytes.HasPrefix(f.Data, []byte(elf.ELFMAG)) {
			return nil, nil, nil
		}
		r = bytes.NewReader(f.Data)
	}
	magic := make([]byte, 4)
	if _, err := r.ReadAt(magic, 0); err != nil || string(magic) != elf.ELFMAG {
		return nil, nil, nil
	}
	e, err := elf.NewFile(r)
	if err != nil {
		// Not every file that starts like ELF is one the loader reads.
		return nil, nil, nil
	}
	defer e.Close()
	if e.Machine != elf.EM_X86_64 || (e.Type != elf.ET_DYN && e.Type != elf.ET_EXEC) || e.Section(".dynamic") == nil {
		return nil, nil, nil
	}
	if needed, err = e.DynString(elf.DT_NEEDED); err != nil {
		return nil, nil, err
	}
	paths, _ := e.DynString(elf.DT_RUNPATH)
	if len(paths) == 0 {
		paths, _ = e.DynString(elf.DT_RPATH)
	}
	for _, p := range paths {
		dirs = append(dirs, strings.Split(p, ":")...)
	}
	return needed, dirs, nil
}

// findLibrary says whether the loader finds lib for an object in dir
// (for $ORIGIN) with the object's own search dirs, then the system's.
func findLibrary(t *Tree, lib string, dirs []string, origin string) bool {
	if strings.Contains(lib, "/") {
		f, _ := t.Resolve(lib)
		return f != nil && f.Type == tar.TypeReg
	}
	for _, d := range append(slices.Clone(dirs), systemDirs...) {
		d = strings.ReplaceAll(strings.ReplaceAll(d, "${ORIGIN}", "/"+origin), "$ORIGIN", "/"+origin)
		if f, _ := t.Resolve(path.Join(d, lib)); f != nil && f.Type == tar.TypeReg {
			return true
		}
	}
	return false
}
