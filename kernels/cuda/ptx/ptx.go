// Package ptx holds the CUDA kernels of kernels/cuda/src compiled to PTX
// by nvcc (Debian's CUDA 11.8), embedded for the gorgonia.org/cu driver to
// load: the binary links only libcuda.so.1 and the driver JIT-compiles the
// PTX for the card it runs on.
//
// The .ptx files are generated (`go generate ./kernels/cuda/ptx/`) and
// committed; TestPTXIsCurrent regenerates them and fails on a difference,
// and TestPTXASLimits assembles every kernel for sm_80, sm_86, sm_89 and
// sm_90 and checks its registers, shared memory and spills.
package ptx

//go:generate go run gen.go

import (
	"embed"
	"slices"
	"strings"
)

// Targets are the virtual architectures every source is compiled for, in
// the order a loader should prefer them (newest first); a driver JIT
// compiles a target's PTX for any newer card. compute_80 (Ampere) has the
// tensor-core instructions (mma.sync m16n8k16, ldmatrix, cp.async) that
// the fleet's RTX 3060-4090 and the data centre's A100/H100 run; compute_70
// (Volta, Turing) is the oldest card supported, on CUDA cores.
var Targets = []string{"compute_80", "compute_70"}

// TargetArch returns a target's compute capability ×10: 80 for
// "compute_80".
func TargetArch(target string) int {
	n := 0
	for _, c := range strings.TrimPrefix(target, "compute_") {
		n = 10*n + int(c-'0')
	}
	return n
}

// TargetFor returns the newest of Targets that a device of compute
// capability arch (×10, e.g. 86) runs, or false if it is older than all.
func TargetFor(arch int) (string, bool) {
	for _, t := range Targets {
		if TargetArch(t) <= arch {
			return t, true
		}
	}
	return "", false
}

//go:embed *.ptx
var files embed.FS

// Module returns the PTX text of a module for target, or false when there
// is none. A module is a file name in kernels/cuda/src without ".cu", e.g.
// "elementwise", or with "_f16" added for the fp16-storage build of a
// source whose kernels are declared with KNAME.
func Module(source, target string) (string, bool) {
	b, err := files.ReadFile(FileName(source, target))
	if err != nil {
		return "", false
	}
	return string(b), true
}

// FileName is the name of the PTX file of source for target.
func FileName(source, target string) string { return source + "." + target + ".ptx" }

// Sources lists the modules that have PTX for target, sorted.
func Sources(target string) []string {
	entries, _ := files.ReadDir(".")
	var out []string
	for _, e := range entries {
		if name, ok := strings.CutSuffix(e.Name(), "."+target+".ptx"); ok {
			out = append(out, name)
		}
	}
	slices.Sort(out)
	return out
}
