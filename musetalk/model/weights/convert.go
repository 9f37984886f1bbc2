package weights

import (
	"context"
	"fmt"
	"maps"
	"os"
	"path/filepath"
)

// ConvertOptions adjusts [Convert].
type ConvertOptions struct {
	// Kind selects the name mapping; "" or [KindAuto] detects it.
	Kind Kind
	// FP16 writes floating tensors as F16 instead of F32. Integer tensors
	// (BatchNorm's num_batches_tracked) are written as I64 either way.
	FP16 bool
	// Expect, when set, is the model's tensor list: conversion fails before
	// writing anything if a tensor is missing, misshapen or (unless
	// DropUnexpected) not in the list.
	Expect []TensorSpec
	// DropUnexpected leaves out tensors that Expect does not list instead of
	// failing on them.
	DropUnexpected bool
	// StateDictKey is passed to [OpenPyTorch] for PyTorch sources.
	StateDictKey string
	// Metadata is added to the output's __metadata__, next to "format",
	// "musetalk_kind" and "source" that Convert writes.
	Metadata map[string]string
}

// ConvertResult describes a finished conversion.
type ConvertResult struct {
	Kind    Kind
	Format  Format // of the source
	Tensors int    // written
	Bytes   int64  // size of the output file
	// Dropped lists the tensors not written: those the mapping drops
	// (Whisper's decoder, by source name) and, with DropUnexpected, those
	// Expect lacks (by mapped name).
	Dropped []string
}

// Convert rewrites the weights file src (safetensors or a PyTorch
// checkpoint) as a safetensors file at dst with the names of kind (see
// [MapNames]), optionally checked against a spec. Tensors stream through one
// at a time; the output appears at dst only when complete. Convert stops
// between tensors when ctx is cancelled. Spec mismatches are reported as a
// *[SpecError] naming every missing, misshapen or unexpected tensor.
func Convert(ctx context.Context, src, dst string, opts ConvertOptions) (*ConvertResult, error) {
	if same, err := sameFile(src, dst); err != nil {
		return nil, err
	} else if same {
		return nil, fmt.Errorf("converting %s: source and destination are the same file", src)
	}
	format, err := DetectFormat(src)
	if err != nil {
		return nil, err
	}
	var r Reader
	if format == FormatSafetensors {
		r, err = OpenSafetensors(src)
	} else {
		r, err = OpenPyTorch(src, PyTorchOptions{StateDictKey: opts.StateDictKey})
	}
	if err != nil {
		return nil, err
	}
	m, err := MapNames(r, opts.Kind)
	if err != nil {
		r.Close()
		return nil, fmt.Errorf("%s: mapping names: %w", src, err)
	}
	defer m.Close()

	res := &ConvertResult{Kind: m.Kind(), Format: format, Dropped: m.Dropped()}
	tensors := m.Tensors()
	if opts.Expect != nil {
		if err := CheckSpec(tensors, opts.Expect, opts.DropUnexpected); err != nil {
			return nil, fmt.Errorf("%s: %s weights: %w", src, res.Kind, err)
		}
		if opts.DropUnexpected {
			tensors, res.Dropped = keepSpec(tensors, opts.Expect, res.Dropped)
		}
	}

	out := make([]TensorInfo, len(tensors))
	for i, t := range tensors {
		out[i] = TensorInfo{Name: t.Name, Shape: t.Shape, DType: F32}
		switch {
		case !t.DType.IsFloat():
			out[i].DType = I64
		case opts.FP16:
			out[i].DType = F16
		}
	}
	meta := map[string]string{"format": "pt", "musetalk_kind": string(res.Kind), "source": filepath.Base(src)}
	maps.Copy(meta, opts.Metadata)
	w, err := CreateSafetensors(dst, out, meta)
	if err != nil {
		return nil, err
	}
	defer w.Abort() // no-op after a successful Close
	for _, t := range out {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("converting %s: %w", src, err)
		}
		if t.DType == I64 {
			v, err := m.ReadInt64(t.Name)
			if err == nil {
				err = w.WriteInt64(t.Name, v)
			}
			if err != nil {
				return nil, err
			}
			continue
		}
		v, err := m.ReadFloat32(t.Name)
		if err == nil {
			err = w.WriteFloat32(t.Name, v.Data)
		}
		if err != nil {
			return nil, err
		}
	}
	if err := w.Close(); err != nil {
		return nil, err
	}
	st, err := os.Stat(dst)
	if err != nil {
		return nil, fmt.Errorf("converting %s: %w", src, err)
	}
	res.Tensors, res.Bytes = len(out), st.Size()
	return res, nil
}

// keepSpec keeps the tensors that spec lists, adding the others to dropped.
func keepSpec(tensors []TensorInfo, spec []TensorSpec, dropped []string) ([]TensorInfo, []string) {
	want := make(map[string]bool, len(spec))
	for _, s := range spec {
		want[s.Name] = true
	}
	var kept []TensorInfo
	for _, t := range tensors {
		if want[t.Name] {
			kept = append(kept, t)
		} else {
			dropped = append(dropped, t.Name)
		}
	}
	return kept, dropped
}

// sameFile reports whether a and b are the same existing file.
func sameFile(a, b string) (bool, error) {
	sa, err := os.Stat(a)
	if err != nil {
		return false, fmt.Errorf("opening weights file: %w", err)
	}
	sb, err := os.Stat(b)
	if err != nil {
		return false, nil // b does not exist (yet) or cannot be seen
	}
	return os.SameFile(sa, sb), nil
}
