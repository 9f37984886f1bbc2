// Package kernelgen reads the kernel declarations of the CUDA sources
// (kernels/cuda/src/*.cu) and writes what the emulator needs to launch
// them by name: per source file, a C file that includes the source and
// defines one trampoline per kernel (unpacking an argument array into the
// kernel's typed parameters), and the kernel table that lists them.
//
// A kernel is declared as `KERNEL void name(params)` or `KERNEL void
// KNAME(base)(params)`, the declaration starting a line; each parameter is
// a pointer, int, unsigned (int) or float. A source whose kernels use
// KNAME is built once per storage type (see [Storages]): its kernels are
// base_f32 and base_f16. A source mixes no plain names with KNAME.
package kernelgen

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
)

// Param kinds, as they appear in the table's signature strings.
const (
	KindPtr   = 'p'
	KindInt   = 'i'
	KindUint  = 'u'
	KindFloat = 'f'
)

// Kernel is one `KERNEL void name(...)` declaration, or one storage
// type's instance of a `KERNEL void KNAME(base)(...)` declaration.
type Kernel struct {
	Name    string
	File    string // base name of the .cu file
	Line    int
	Kinds   string // one Kind letter per parameter
	Storage string // "" for a plain kernel, else a Storage's Suffix
}

// Storage is one storage type a KNAME source is compiled for.
type Storage struct {
	Suffix string // of kernel names, "_f32"
	Define string // preprocessor symbol defined for it, "" for none
}

// Storages are the storage types of KNAME sources, as src/common.cuh
// defines them.
var Storages = []Storage{{Suffix: "_f32"}, {Suffix: "_f16", Define: "MUSETALK_F16"}}

// Generic reports whether src (a .cu file's text) declares its kernels
// with KNAME, so that it is compiled once per [Storages] entry.
func Generic(src []byte) bool {
	return knameRE.MatchString(stripComments(string(src)))
}

var (
	declRE    = regexp.MustCompile(`(?m)^[ \t]*KERNEL[ \t]+void[ \t]+(?:KNAME\([ \t]*([A-Za-z_][A-Za-z0-9_]*)[ \t]*\)|([A-Za-z_][A-Za-z0-9_]*))[ \t]*\(([^)]*)\)`)
	knameRE   = regexp.MustCompile(`(?m)^[ \t]*KERNEL[ \t]+void[ \t]+KNAME\(`)
	kernelRE  = regexp.MustCompile(`\bKERNEL\b`)
	identRE   = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
	qualifier = map[string]bool{"const": true, "volatile": true, "__restrict__": true, "__restrict": true}
)

// Parse returns the kernels declared in src, the text of the file named
// file: for a KNAME source, one per storage type.
func Parse(file string, src []byte) ([]Kernel, error) {
	text := stripComments(string(src))
	decls := declRE.FindAllStringSubmatchIndex(text, -1)
	if n := len(kernelRE.FindAllStringIndex(text, -1)); n != len(decls) {
		return nil, fmt.Errorf("%s: %d uses of KERNEL but %d declarations of the form `KERNEL void name(params)` starting a line", file, n, len(decls))
	}
	var ks []Kernel
	generic := 0
	for _, d := range decls {
		k := Kernel{File: file, Line: 1 + strings.Count(text[:d[0]], "\n")}
		if d[2] >= 0 {
			k.Name = text[d[2]:d[3]]
			generic++
		} else {
			k.Name = text[d[4]:d[5]]
		}
		params := strings.TrimSpace(text[d[6]:d[7]])
		if params != "" && params != "void" {
			for i, p := range strings.Split(params, ",") {
				kind, err := paramKind(p)
				if err != nil {
					return nil, fmt.Errorf("%s:%d: kernel %s, parameter %d: %w", file, k.Line, k.Name, i+1, err)
				}
				k.Kinds += string(kind)
			}
		}
		ks = append(ks, k)
	}
	if generic == 0 {
		return ks, nil
	}
	if generic != len(ks) {
		return nil, fmt.Errorf("%s: %d of its %d kernels are declared with KNAME: a source's kernels are all KNAME or none", file, generic, len(ks))
	}
	var out []Kernel
	for _, st := range Storages {
		for _, k := range ks {
			k.Name += st.Suffix
			k.Storage = st.Suffix
			out = append(out, k)
		}
	}
	return out, nil
}

// paramKind classifies one parameter declaration such as "const float *x".
func paramKind(decl string) (byte, error) {
	fields := strings.Fields(strings.ReplaceAll(decl, "*", " * "))
	if len(fields) < 2 || !identRE.MatchString(fields[len(fields)-1]) {
		return 0, fmt.Errorf("%q is not a named parameter", strings.TrimSpace(decl))
	}
	var typ []string
	ptr := false
	for _, f := range fields[:len(fields)-1] {
		switch {
		case f == "*":
			ptr = true
		case !qualifier[f]:
			typ = append(typ, f)
		}
	}
	if ptr {
		return KindPtr, nil
	}
	switch strings.Join(typ, " ") {
	case "int":
		return KindInt, nil
	case "unsigned", "unsigned int":
		return KindUint, nil
	case "float":
		return KindFloat, nil
	}
	return 0, fmt.Errorf("type %q: kernels take pointers, int, unsigned or float", strings.Join(typ, " "))
}

// stripComments blanks out // and /* */ comments, keeping newlines so that
// line numbers stay right.
func stripComments(s string) string {
	b := []byte(s)
	for i := 0; i < len(b); i++ {
		switch {
		case b[i] == '"': // skip string literals
			for i++; i < len(b) && b[i] != '"' && b[i] != '\n'; i++ {
				if b[i] == '\\' {
					i++
				}
			}
		case b[i] == '/' && i+1 < len(b) && b[i+1] == '/':
			for ; i < len(b) && b[i] != '\n'; i++ {
				b[i] = ' '
			}
		case b[i] == '/' && i+1 < len(b) && b[i+1] == '*':
			b[i], b[i+1] = ' ', ' '
			for i += 2; i < len(b) && !(b[i] == '*' && i+1 < len(b) && b[i+1] == '/'); i++ {
				if b[i] != '\n' {
					b[i] = ' '
				}
			}
			if i+1 < len(b) {
				b[i], b[i+1] = ' ', ' '
				i++
			}
		}
	}
	return string(b)
}

// header starts every generated file.
const header = "// Code generated by kernelgen (go generate ./kernels/cuda/emu); DO NOT EDIT.\n\n"

// TableFile is the generated kernel table's file name.
const TableFile = "kernels_table.c"

// SourceFile returns the name of the generated C file for a .cu file and
// a storage suffix ("" or "_f32" for the first build, "_f16" for the
// second).
func SourceFile(cu, storage string) string {
	if storage == "_f32" {
		storage = ""
	}
	return strings.TrimSuffix(cu, ".cu") + storage + "_cu.c"
}

// Generate reads srcDir/*.cu and returns the generated files (name →
// contents): one SourceFile per .cu file and the TableFile. includeDir is
// how the generated files name srcDir in their #include lines.
//
// The table records a SHA-256 of every .cu and .cuh file in srcDir. The Go
// build cache does not see files that cgo code includes from outside its
// package, so this digest is what makes an edited kernel source rebuild
// the emulator: the edit changes the digest, the regenerated table, and so
// the package (and the check that the generated files are current fails
// until they are regenerated).
func Generate(srcDir, includeDir string) (map[string][]byte, error) {
	names, err := filepath.Glob(filepath.Join(srcDir, "*.cu"))
	if err != nil {
		return nil, fmt.Errorf("listing kernel sources: %w", err)
	}
	if len(names) == 0 {
		return nil, fmt.Errorf("no .cu files in %s", srcDir)
	}
	headers, err := filepath.Glob(filepath.Join(srcDir, "*.cuh"))
	if err != nil {
		return nil, fmt.Errorf("listing kernel headers: %w", err)
	}
	all := append(slices.Clone(names), headers...)
	sort.Strings(all)
	digest := sha256.New()
	for _, name := range all {
		src, err := os.ReadFile(name)
		if err != nil {
			return nil, fmt.Errorf("reading kernel source: %w", err)
		}
		fmt.Fprintf(digest, "%s %d\n", filepath.Base(name), len(src))
		digest.Write(src)
	}
	sort.Strings(names)
	out := make(map[string][]byte)
	var kernels []Kernel
	seen := make(map[string]Kernel)
	for _, name := range names {
		src, err := os.ReadFile(name)
		if err != nil {
			return nil, fmt.Errorf("reading kernel source: %w", err)
		}
		base := filepath.Base(name)
		ks, err := Parse(base, src)
		if err != nil {
			return nil, err
		}
		for _, k := range ks {
			if prev, dup := seen[k.Name]; dup {
				return nil, fmt.Errorf("%s:%d: kernel %s is also declared at %s:%d", k.File, k.Line, k.Name, prev.File, prev.Line)
			}
			seen[k.Name] = k
		}
		for _, st := range storagesOf(ks) {
			var part []Kernel
			for _, k := range ks {
				if k.Storage == st.Suffix {
					part = append(part, k)
				}
			}
			out[SourceFile(base, st.Suffix)] = sourceFile(includeDir+"/"+base, st.Define, part)
		}
		kernels = append(kernels, ks...)
	}
	slices.SortFunc(kernels, func(a, b Kernel) int { return strings.Compare(a.Name, b.Name) })
	out[TableFile] = tableFile(kernels, hex.EncodeToString(digest.Sum(nil)))
	return out, nil
}

// storagesOf returns the storage types a source's kernels are built for:
// every one of Storages for a KNAME source, one without a define else.
func storagesOf(ks []Kernel) []Storage {
	if len(ks) > 0 && ks[0].Storage != "" {
		return Storages
	}
	return []Storage{{}}
}

// sourceFile includes the kernel source, built with define (if any)
// defined, and defines its trampolines.
func sourceFile(include, define string, ks []Kernel) []byte {
	var w bytes.Buffer
	w.WriteString(header)
	if define != "" {
		fmt.Fprintf(&w, "#define %s\n", define)
	}
	fmt.Fprintf(&w, "#include \"cuda_emu.h\"\n#include \"emu.h\"\n\n#include %q\n", include)
	for _, k := range ks {
		args := make([]string, len(k.Kinds))
		for i, c := range []byte(k.Kinds) {
			dec := map[byte]string{KindPtr: "ptr", KindInt: "i32", KindUint: "u32", KindFloat: "f32"}[c]
			args[i] = fmt.Sprintf("emu_arg_%s(a[%d])", dec, i)
		}
		fmt.Fprintf(&w, "\nvoid emu_run_%s(const uint64_t *a) {\n", k.Name)
		if len(args) == 0 {
			w.WriteString("\t(void)a;\n")
		}
		fmt.Fprintf(&w, "\t%s(%s);\n}\n", k.Name, strings.Join(args, ", "))
	}
	return w.Bytes()
}

// tableFile lists every kernel with its signature and trampoline, under
// the digest of the sources.
func tableFile(ks []Kernel, digest string) []byte {
	var w bytes.Buffer
	w.WriteString(header)
	fmt.Fprintf(&w, "// Kernel sources (*.cu, *.cuh) SHA-256: %s\n\n", digest)
	w.WriteString("#include \"emu.h\"\n\n")
	for _, k := range ks {
		fmt.Fprintf(&w, "void emu_run_%s(const uint64_t *a);\n", k.Name)
	}
	w.WriteString("\nconst emu_kernel emu_kernels[] = {\n")
	for _, k := range ks {
		fmt.Fprintf(&w, "\t{%q, %q, emu_run_%s},\n", k.Name, k.Kinds, k.Name)
	}
	fmt.Fprintf(&w, "};\n\nconst int emu_nkernels = %d;\n", len(ks))
	return w.Bytes()
}
