//go:build ignore

// gen writes the emulator's kernel trampolines and table from ../src/*.cu
// (see package kernelgen) and removes generated files whose source is
// gone:
//
//	go generate ./kernels/cuda/emu
package main

import (
	"log"
	"os"
	"path/filepath"
	"strings"

	"github.com/avatargen/musetalk/kernels/cuda/internal/kernelgen"
)

func main() {
	files, err := kernelgen.Generate("../src", "../src")
	if err != nil {
		log.Fatal(err)
	}
	old, err := filepath.Glob("*_cu.c")
	if err != nil {
		log.Fatal(err)
	}
	for _, f := range old {
		if _, keep := files[f]; !keep && strings.HasSuffix(f, "_cu.c") {
			if err := os.Remove(f); err != nil {
				log.Fatal(err)
			}
		}
	}
	for name, b := range files {
		if err := os.WriteFile(name, b, 0o644); err != nil {
			log.Fatal(err)
		}
	}
}
