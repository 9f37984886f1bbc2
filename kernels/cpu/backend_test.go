package cpu

import (
	"fmt"
	"testing"

	"github.com/avatargen/musetalk/kernels/kerneltest"
)

// TestOps runs the whole op table against the reference loops on every
// code path this machine has, single-threaded and with more threads than
// cores.
func TestOps(t *testing.T) {
	for _, isa := range []ISA{ISAGo, ISAAVX2, ISAAVX512} {
		for _, threads := range []int{1, 3} {
			t.Run(fmt.Sprintf("%v/threads%d", isa, threads), func(t *testing.T) {
				t.Parallel()
				if !isa.Available() {
					t.Skipf("%v not available on this CPU", isa)
				}
				b, err := New(Options{ISA: isa, Threads: threads})
				if err != nil {
					t.Fatal(err)
				}
				defer b.Close()
				kerneltest.Exercise(t, b)
			})
		}
	}
}
