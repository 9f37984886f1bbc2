//go:build ignore

// gen compiles every kernels/cuda/src/*.cu to PTX for each target of
// ptx.Targets with nvcc, writing <module>.<target>.ptx here (or into
// $PTX_OUT), where the module is the source's name, and for a source
// declaring its kernels with KNAME also <name>_f16 built with
// -DMUSETALK_F16 (see kernelgen.Storages). Run from this directory (go
// generate does). NVCC names the compiler (default nvcc).
package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"

	"github.com/avatargen/musetalk/kernels/cuda/internal/kernelgen"
)

// targets must match ptx.Targets (checked by TestPTXIsCurrent).
var targets = []string{"compute_80", "compute_70"}

func main() {
	out := os.Getenv("PTX_OUT")
	if out == "" {
		out = "."
	}
	if err := run("../src", out); err != nil {
		fmt.Fprintln(os.Stderr, "gen:", err)
		os.Exit(1)
	}
}

func run(srcDir, outDir string) error {
	nvcc := os.Getenv("NVCC")
	if nvcc == "" {
		nvcc = "nvcc"
	}
	sources, err := filepath.Glob(filepath.Join(srcDir, "*.cu"))
	if err != nil {
		return err
	}
	old, _ := filepath.Glob(filepath.Join(outDir, "*.ptx"))
	for _, f := range old {
		os.Remove(f)
	}
	var cmds []*exec.Cmd
	for _, src := range sources {
		text, err := os.ReadFile(src)
		if err != nil {
			return err
		}
		storages := []kernelgen.Storage{{}}
		if kernelgen.Generic(text) {
			storages = kernelgen.Storages
		}
		base := strings.TrimSuffix(filepath.Base(src), ".cu")
		for _, st := range storages {
			module := base
			var defs []string
			if st.Define != "" {
				module += st.Suffix
				defs = append(defs, "-D"+st.Define)
			}
			for _, t := range targets {
				out := filepath.Join(outDir, module+"."+t+".ptx")
				// -lineinfo off and no -G: the PTX depends only on the
				// source, the compiler version and these flags.
				args := append([]string{"-ptx", "-arch=" + t, "-O3", "-std=c++14", "-I", srcDir}, defs...)
				cmds = append(cmds, exec.Command(nvcc, append(args, "-o", out, src)...))
			}
		}
	}
	// nvcc spends most of its time starting up: run a few at once.
	errs := make([]error, len(cmds))
	sem := make(chan struct{}, 2*runtime.NumCPU())
	var wg sync.WaitGroup
	for i, cmd := range cmds {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			if b, err := cmd.CombinedOutput(); err != nil {
				errs[i] = fmt.Errorf("%s: %v\n%s", strings.Join(cmd.Args, " "), err, b)
			}
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}
