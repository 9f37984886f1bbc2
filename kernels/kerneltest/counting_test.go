package kerneltest_test

import (
	"testing"

	"github.com/avatargen/musetalk/kernels/cpu"
	"github.com/avatargen/musetalk/kernels/kerneltest"
)

func TestCounting(t *testing.T) {
	b, err := cpu.New(cpu.Options{Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	c := kerneltest.NewCounting(b)
	w := c.Weight(make([]float32, 6), 2, 3)
	before := c.Snapshot()
	x := c.Alloc(4, 5)
	y := c.Alloc(3)
	c.Free(x.Reshape(20)) // a view of x frees x
	if got := c.LiveSince(before); len(got) != 1 || got[0] != "alloc [3]" {
		t.Errorf("live since the snapshot: %v, want [alloc [3]]", got)
	}
	c.Free(y)
	c.Free(w)
	if c.Live() != 0 {
		t.Errorf("%d live after freeing everything: %v", c.Live(), c.LiveSince(nil))
	}
}
