package kerneltest

import (
	"fmt"
	"slices"
	"sync"
	"unsafe"

	"github.com/avatargen/musetalk/kernels"
)

// Counting wraps a backend and keeps the tensors allocated through it
// (Alloc, Weight) that have not been freed, so a test can assert that a
// network's Forward frees every temporary it makes: on a GPU a tensor the
// host forgets is device memory lost until the backend closes. Ops go to
// the wrapped backend unchanged.
type Counting struct {
	kernels.Backend

	mu   sync.Mutex
	live map[any]string // storage → "alloc [shape]" or "weight [shape]"
}

// NewCounting wraps b.
func NewCounting(b kernels.Backend) *Counting {
	return &Counting{Backend: b, live: map[any]string{}}
}

// storageKey names t's storage: the device handle and offset, or the host
// elements' first address (a Reshape of a tensor shares it).
func storageKey(t *kernels.Tensor) any {
	if dev, off := t.Device(); dev != nil {
		return [2]any{dev, off}
	}
	if d := t.Data(); len(d) > 0 {
		return unsafe.SliceData(d)
	}
	return t
}

// Alloc allocates through the wrapped backend and records the tensor.
func (c *Counting) Alloc(shape ...int) *kernels.Tensor {
	t := c.Backend.Alloc(shape...)
	c.add(t, "alloc")
	return t
}

// Weight makes a weight through the wrapped backend and records it.
func (c *Counting) Weight(data []float32, shape ...int) *kernels.Tensor {
	t := c.Backend.Weight(data, shape...)
	c.add(t, "weight")
	return t
}

// Free forgets t and frees it through the wrapped backend.
func (c *Counting) Free(t *kernels.Tensor) {
	c.mu.Lock()
	delete(c.live, storageKey(t))
	c.mu.Unlock()
	c.Backend.Free(t)
}

func (c *Counting) add(t *kernels.Tensor, how string) {
	c.mu.Lock()
	c.live[storageKey(t)] = fmt.Sprintf("%s %v", how, t.Shape())
	c.mu.Unlock()
}

// Live returns how many recorded tensors are not freed.
func (c *Counting) Live() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.live)
}

// LiveSince lists the tensors that are live now but were not in before (a
// snapshot from Snapshot), sorted, for a leak report.
func (c *Counting) LiveSince(before map[any]string) []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for k, v := range c.live {
		if _, ok := before[k]; !ok {
			out = append(out, v)
		}
	}
	slices.Sort(out)
	return out
}

// Snapshot copies the set of live tensors.
func (c *Counting) Snapshot() map[any]string {
	c.mu.Lock()
	defer c.mu.Unlock()
	m := make(map[any]string, len(c.live))
	for k, v := range c.live {
		m[k] = v
	}
	return m
}
