package cpu_test

import (
	"fmt"

	"github.com/avatargen/musetalk/kernels"
	"github.com/avatargen/musetalk/kernels/cpu"
)

// A 3×3 convolution followed by GroupNorm+SiLU, the way a model uses a
// backend: weights registered once, activations from the pool and handed
// back when no longer needed.
func Example() {
	b, err := cpu.New(cpu.Options{})
	if err != nil {
		panic(err)
	}
	defer b.Close()
	var be kernels.Backend = b // models see only the interface

	w := make([]float32, 8*4*3*3)
	for i := range w {
		w[i] = 0.01 * float32(i%7)
	}
	weight := be.Weight(w, 8, 4, 3, 3)
	x := kernels.Upload(be, make([]float32, 1*4*16*16), 1, 4, 16, 16)
	p := kernels.Conv2DPad(1, 1)
	h := be.Alloc(p.OutShape(x, weight)...)
	be.Conv2D(h, x, weight, nil, p)
	be.GroupNorm(h, h, nil, nil, kernels.GroupNormParams{Groups: 4, Eps: 1e-5, SiLU: true})
	out := make([]float32, h.Len())
	if err := be.Download(out, h); err != nil {
		panic(err)
	}
	be.Free(h)
	be.Free(x)
	fmt.Println(h.Shape(), out[0])
	// Output: [1 8 16 16] 0
}
