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
// compiles a target's PTX for any newer card. compute_70 (Volta) is the
// oldest card the fleet's RTX 3060-4090 and data-centre GPUs all exceed.
var Targets = []string{"compute_70"}

//go:embed *.ptx
var files embed.FS

// Module returns the PTX text of source (a file name in kernels/cuda/src
// without ".cu", e.g. "elementwise") for target, or false when there is
// none.
func Module(source, target string) (string, bool) {
	b, err := files.ReadFile(FileName(source, target))
	if err != nil {
		return "", false
	}
	return string(b), true
}

// FileName is the name of the PTX file of source for target.
func FileName(source, target string) string { return source + "." + target + ".ptx" }

// Sources lists the kernel sources that have PTX for target, sorted.
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
