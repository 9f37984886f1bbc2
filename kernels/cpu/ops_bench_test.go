package cpu

import (
	"testing"

	"github.com/avatargen/musetalk/kernels/kerneltest"
)

// BenchmarkOps times the hot ops at MuseTalk's sizes (kerneltest.Benchmark)
// on the best ISA with every thread:
//
//	go test -run '^$' -bench BenchmarkOps -benchtime 1x ./kernels/cpu/
func BenchmarkOps(b *testing.B) {
	be, err := New(Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer be.Close()
	kerneltest.Benchmark(b, be, kerneltest.Options{})
}
