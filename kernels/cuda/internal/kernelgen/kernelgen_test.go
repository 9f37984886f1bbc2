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
	want := []Kernel{{"a", "x.cu", 5, "ppiuuf", ""}, {"b", "x.cu", 8, "", ""}, {"c", "x.cu", 9, "", ""}}
	if len(ks) != len(want) {
		t.Fatalf("got %+v, want %+v", ks, want)
	}
	for i := range want {
		if ks[i] != want[i] {
			t.Errorf("kernel %d: got %+v, want %+v", i, ks[i], want[i])
		}
	}
}

// A KNAME source gives one kernel per storage type, f32 first.
func TestParseStorages(t *testing.T) {
	src := "#include \"common.cuh\"\nKERNEL void KNAME(scale)(st_t *dst, const st_t *x, int n, float s) {}\nKERNEL void KNAME( copy )(st_t *dst, const st_t *x, int n) {}\n"
	if !Generic([]byte(src)) {
		t.Error("Generic = false for a KNAME source")
	}
	ks, err := Parse("e.cu", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	want := []Kernel{
		{"scale_f32", "e.cu", 2, "ppif", "_f32"}, {"copy_f32", "e.cu", 3, "ppi", "_f32"},
		{"scale_f16", "e.cu", 2, "ppif", "_f16"}, {"copy_f16", "e.cu", 3, "ppi", "_f16"},
	}
	if len(ks) != len(want) {
		t.Fatalf("got %+v, want %+v", ks, want)
	}
	for i := range want {
		if ks[i] != want[i] {
			t.Errorf("kernel %d: got %+v, want %+v", i, ks[i], want[i])
		}
	}
	if Generic([]byte("// KERNEL void KNAME(x)(int n) in a comment\nKERNEL void plain(int n) {}\n")) {
		t.Error("Generic = true for a plain source")
	}
	if got, want := SourceFile("e.cu", "_f16"), "e_f16_cu.c"; got != want {
		t.Errorf("SourceFile = %q, want %q", got, want)
	}
	if got, want := SourceFile("e.cu", "_f32"), "e_cu.c"; got != want {
		t.Errorf("SourceFile = %q, want %q", got, want)
	}
}

func TestParseErrors(t *testing.T) {
	for _, c := range []struct{ src, want string }{
		{"KERNEL void f(double x) {}", `parameter 1: type "double"`},
		{"KERNEL void f(int) {}", "not a named parameter"},
		{"KERNEL void __launch_bounds__(256) f(int x) {}", "kernel __launch_bounds__, parameter 1"},
		{"static KERNEL void f(int x) {}", "declarations of the form"},
		{"\n\nKERNEL void g(int x, long long y) {}", "x.cu:3: kernel g, parameter 2"},
		{"KERNEL void KNAME(f)(int x) {}\nKERNEL void g(int x) {}", "1 of its 2 kernels are declared with KNAME"},
	} {
		_, err := Parse("x.cu", []byte(c.src))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Parse(%q) = %v, want an error containing %q", c.src, err, c.want)
		}
	}
}
