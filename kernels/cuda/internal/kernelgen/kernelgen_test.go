package kernelgen

import (
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	src := `#include "common.cuh"
// KERNEL void commented_out(int x) in a comment does not count
/* nor
   KERNEL void this_one(float y) */
KERNEL void a(float *dst, const float *__restrict__ x, int n, unsigned m,
              unsigned int k, float s) {
}
  KERNEL void b() {}
KERNEL void c(void) {}
`
	ks, err := Parse("x.cu", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	want := []Kernel{{"a", "x.cu", 5, "ppiuuf"}, {"b", "x.cu", 8, ""}, {"c", "x.cu", 9, ""}}
	if len(ks) != len(want) {
		t.Fatalf("got %+v, want %+v", ks, want)
	}
	for i := range want {
		if ks[i] != want[i] {
			t.Errorf("kernel %d: got %+v, want %+v", i, ks[i], want[i])
		}
	}
}

func TestParseErrors(t *testing.T) {
	for _, c := range []struct{ src, want string }{
		{"KERNEL void f(double x) {}", `parameter 1: type "double"`},
		{"KERNEL void f(int) {}", "not a named parameter"},
		{"KERNEL void __launch_bounds__(256) f(int x) {}", "kernel __launch_bounds__, parameter 1"},
		{"static KERNEL void f(int x) {}", "declarations of the form"},
		{"\n\nKERNEL void g(int x, long long y) {}", "x.cu:3: kernel g, parameter 2"},
	} {
		_, err := Parse("x.cu", []byte(c.src))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Parse(%q) = %v, want an error containing %q", c.src, err, c.want)
		}
	}
}
