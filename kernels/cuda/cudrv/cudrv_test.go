//go:build cuda

package cudrv

import (
	"encoding/binary"
	"math"
	"testing"

	"github.com/avatargen/musetalk/kernels/cuda"
)

// TestScaleOnTheGPU runs one kernel on device 0 (GPU machines only: this
// binary cannot start without one).
func TestScaleOnTheGPU(t *testing.T) {
	d, err := Open(0)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	t.Logf("device %+v", d.Info())
	const n = 1000
	buf := make([]byte, 4*n)
	for i := range n {
		binary.LittleEndian.PutUint32(buf[4*i:], math.Float32bits(float32(i)))
	}
	p, err := d.Alloc(len(buf))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Free(p)
	if err := d.CopyHtoD(p, buf); err != nil {
		t.Fatal(err)
	}
	if err := d.Launch("scale_f32", cuda.D1((n+255)/256), cuda.D1(256), 0, p, p, int32(n), float32(2)); err != nil {
		t.Fatal(err)
	}
	if err := d.CopyDtoH(buf, p); err != nil {
		t.Fatal(err)
	}
	for i := range n {
		if got := math.Float32frombits(binary.LittleEndian.Uint32(buf[4*i:])); got != 2*float32(i) {
			t.Fatalf("element %d = %v, want %v", i, got, 2*float32(i))
		}
	}
	if err := d.Launch("no_such_kernel", cuda.D1(1), cuda.D1(1), 0); err == nil {
		t.Error("launching an unknown kernel succeeded")
	}
}
