package weights

import (
	"fmt"
	"slices"
	"strings"
)

// TensorSpec is one tensor a model expects: its name and shape.
type TensorSpec struct {
	Name  string
	Shape []int
}

// ShapeMismatch is a tensor present with the wrong shape.
type ShapeMismatch struct {
	Name string
	Got  []int
	Want []int
}

// SpecError lists every way a set of tensors differs from a spec. It wraps
// [ErrNotFound] when tensors are missing.
type SpecError struct {
	Missing    []string
	Misshapen  []ShapeMismatch
	Unexpected []string
}

// maxListed caps how many names of each group an error message spells out.
const maxListed = 10

func (e *SpecError) Error() string {
	var parts []string
	list := func(what string, names []string) {
		if len(names) == 0 {
			return
		}
		shown := names[:min(len(names), maxListed)]
		s := fmt.Sprintf("%d %s: %s", len(names), what, strings.Join(quoteAll(shown), ", "))
		if len(names) > len(shown) {
			s += ", ..."
		}
		parts = append(parts, s)
	}
	list("missing", e.Missing)
	if len(e.Misshapen) > 0 {
		var ms []string
		for _, m := range e.Misshapen[:min(len(e.Misshapen), maxListed)] {
			ms = append(ms, fmt.Sprintf("%q is %v, want %v", m.Name, m.Got, m.Want))
		}
		s := fmt.Sprintf("%d misshapen: %s", len(e.Misshapen), strings.Join(ms, ", "))
		if len(e.Misshapen) > maxListed {
			s += ", ..."
		}
		parts = append(parts, s)
	}
	list("unexpected", e.Unexpected)
	return "tensors do not match the model: " + strings.Join(parts, "; ")
}

// Unwrap makes errors.Is(err, ErrNotFound) true when tensors are missing.
func (e *SpecError) Unwrap() error {
	if len(e.Missing) > 0 {
		return ErrNotFound
	}
	return nil
}

func quoteAll(names []string) []string {
	out := make([]string, len(names))
	for i, n := range names {
		out[i] = fmt.Sprintf("%q", n)
	}
	return out
}

// CheckSpec compares tensors with spec: every spec entry must be present
// with exactly its shape and, unless allowUnexpected, no other tensor may be
// present. It returns nil or a *[SpecError] listing every difference.
func CheckSpec(tensors []TensorInfo, spec []TensorSpec, allowUnexpected bool) error {
	have := make(map[string][]int, len(tensors))
	for _, t := range tensors {
		have[t.Name] = t.Shape
	}
	want := make(map[string]bool, len(spec))
	e := &SpecError{}
	for _, s := range spec {
		want[s.Name] = true
		got, ok := have[s.Name]
		switch {
		case !ok:
			e.Missing = append(e.Missing, s.Name)
		case !slices.Equal(got, s.Shape):
			e.Misshapen = append(e.Misshapen, ShapeMismatch{Name: s.Name, Got: slices.Clone(got), Want: slices.Clone(s.Shape)})
		}
	}
	if !allowUnexpected {
		for _, t := range tensors {
			if !want[t.Name] {
				e.Unexpected = append(e.Unexpected, t.Name)
			}
		}
	}
	if len(e.Missing)+len(e.Misshapen)+len(e.Unexpected) == 0 {
		return nil
	}
	return e
}
