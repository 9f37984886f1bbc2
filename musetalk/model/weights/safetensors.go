package weights

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"sort"
)

// maxHeaderSize is the largest safetensors header accepted, as in the
// reference implementation (100 MB).
const maxHeaderSize = 100_000_000

// Safetensors is an open safetensors file. It implements [Reader].
//
// Opening validates the whole header strictly: a JSON object without
// duplicate keys or unknown fields, known dtypes, non-negative shapes, data
// offsets whose length matches dtype × shape, and tensors that tile the data
// section exactly (no overlaps, no holes, nothing past its end).
type Safetensors struct {
	path     string
	data     *fileData
	base     int64 // file offset of the data section
	tensors  infoIndex
	offsets  [][2]int64 // byte range in the data section, parallel to tensors.infos
	metadata map[string]string
}

var _ Reader = (*Safetensors)(nil)

// OpenSafetensors opens and validates the safetensors file at path. Errors
// about the contents name the file and the tensor and wrap [ErrFormat].
func OpenSafetensors(path string) (*Safetensors, error) {
	return openSafetensors(path, true)
}

func openSafetensors(path string, useMmap bool) (*Safetensors, error) {
	d, err := openFileData(path, useMmap)
	if err != nil {
		return nil, err
	}
	s := &Safetensors{path: path, data: d}
	if err := s.parseHeader(); err != nil {
		d.Close()
		return nil, err
	}
	return s, nil
}

// stEntry is one tensor entry of a safetensors header.
type stEntry struct {
	DType       DType   `json:"dtype"`
	Shape       []int64 `json:"shape"`
	DataOffsets []int64 `json:"data_offsets"`
}

func (s *Safetensors) formatErr(format string, args ...any) error {
	return fmt.Errorf("%s: %s: %w", s.path, fmt.Sprintf(format, args...), ErrFormat)
}

func (s *Safetensors) parseHeader() error {
	size := s.data.size
	if size < 8 {
		return s.formatErr("file is %d bytes, shorter than the 8-byte header length", size)
	}
	var lenBuf [8]byte
	if _, err := s.data.ReadAt(lenBuf[:], 0); err != nil {
		return fmt.Errorf("%s: reading header length: %w", s.path, err)
	}
	n := binary.LittleEndian.Uint64(lenBuf[:])
	switch {
	case n == 0:
		return s.formatErr("header length is 0")
	case n > maxHeaderSize:
		return s.formatErr("header length %d exceeds the limit of %d bytes", n, maxHeaderSize)
	case n > uint64(size-8):
		return s.formatErr("header length %d exceeds the %d bytes after the length field (truncated file?)", n, size-8)
	}
	header, err := s.data.bytes(8, int64(n))
	if err != nil {
		return fmt.Errorf("%s: reading header: %w", s.path, err)
	}
	s.base = 8 + int64(n)
	dataLen := size - s.base

	entries, names, err := s.decodeHeader(header)
	if err != nil {
		return err
	}

	// Validate each entry on its own, then the tiling of the data section.
	type span struct {
		begin, end int64
		name       string
	}
	spans := make([]span, 0, len(names))
	for _, name := range names {
		e := entries[name]
		if e.DType.Size() == 0 {
			return s.formatErr("tensor %q: unknown dtype %q", name, e.DType)
		}
		if e.Shape == nil {
			return s.formatErr("tensor %q: missing shape", name)
		}
		if len(e.DataOffsets) != 2 {
			return s.formatErr("tensor %q: data_offsets must be [begin, end], got %v", name, e.DataOffsets)
		}
		begin, end := e.DataOffsets[0], e.DataOffsets[1]
		if begin < 0 || end < begin {
			return s.formatErr("tensor %q: invalid data_offsets [%d, %d]", name, begin, end)
		}
		if end > dataLen {
			return s.formatErr("tensor %q: data_offsets [%d, %d] out of range: the data section has %d bytes", name, begin, end, dataLen)
		}
		numel, err := shapeElements(e.Shape, e.DType.Size())
		if err != nil {
			return s.formatErr("tensor %q: %v", name, err)
		}
		if want := numel * int64(e.DType.Size()); end-begin != want {
			return s.formatErr("tensor %q: data_offsets [%d, %d] span %d bytes, but %s %v needs %d", name, begin, end, end-begin, e.DType, e.Shape, want)
		}
		spans = append(spans, span{begin, end, name})
	}
	sort.SliceStable(spans, func(i, j int) bool {
		if spans[i].begin != spans[j].begin {
			return spans[i].begin < spans[j].begin
		}
		return spans[i].end < spans[j].end
	})
	var pos int64
	prev := ""
	for _, sp := range spans {
		switch {
		case sp.begin < pos:
			return s.formatErr("tensor %q: data_offsets [%d, %d] overlap tensor %q, which ends at %d", sp.name, sp.begin, sp.end, prev, pos)
		case sp.begin > pos:
			return s.formatErr("bytes [%d, %d) of the data section belong to no tensor (hole before tensor %q)", pos, sp.begin, sp.name)
		}
		pos = sp.end
		prev = sp.name
	}
	if pos != dataLen {
		return s.formatErr("tensors cover %d bytes but the data section has %d (trailing bytes)", pos, dataLen)
	}

	// Keep file order, which is also the order a streaming copy wants.
	s.offsets = make([][2]int64, 0, len(spans))
	for _, sp := range spans {
		e := entries[sp.name]
		shape := make([]int, len(e.Shape))
		for i, d := range e.Shape {
			shape[i] = int(d)
		}
		s.tensors.add(TensorInfo{Name: sp.name, DType: e.DType, Shape: shape})
		s.offsets = append(s.offsets, [2]int64{sp.begin, sp.end})
	}
	return nil
}

// decodeHeader parses the JSON header, rejecting duplicate keys, unknown
// fields and anything after the closing brace other than white space.
func (s *Safetensors) decodeHeader(header []byte) (map[string]stEntry, []string, error) {
	dec := json.NewDecoder(bytes.NewReader(header))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return nil, nil, s.formatErr("header is not a JSON object")
	}
	entries := make(map[string]stEntry)
	var names []string
	seenMeta := false
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, nil, s.formatErr("header JSON: %v", err)
		}
		name := tok.(string) // object keys are always strings
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return nil, nil, s.formatErr("header JSON at %q: %v", name, err)
		}
		if name == "__metadata__" {
			if seenMeta {
				return nil, nil, s.formatErr("duplicate key %q in header", name)
			}
			seenMeta = true
			if err := json.Unmarshal(raw, &s.metadata); err != nil {
				return nil, nil, s.formatErr("__metadata__ must map strings to strings: %v", err)
			}
			continue
		}
		if _, dup := entries[name]; dup {
			return nil, nil, s.formatErr("duplicate tensor %q in header", name)
		}
		var e stEntry
		ed := json.NewDecoder(bytes.NewReader(raw))
		ed.DisallowUnknownFields()
		if err := ed.Decode(&e); err != nil {
			return nil, nil, s.formatErr("tensor %q: invalid entry %s: %v", name, raw, err)
		}
		entries[name] = e
		names = append(names, name)
	}
	if _, err := dec.Token(); err != nil { // the closing brace
		return nil, nil, s.formatErr("header JSON: %v", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, nil, s.formatErr("unexpected data after the header's JSON object")
	}
	return entries, names, nil
}

// Path returns the path the file was opened with.
func (s *Safetensors) Path() string { return s.path }

// Metadata returns a copy of the header's __metadata__ (nil if absent).
func (s *Safetensors) Metadata() map[string]string { return maps.Clone(s.metadata) }

// Tensors implements [Reader]; the order is the order of the data.
func (s *Safetensors) Tensors() []TensorInfo { return s.tensors.list() }

// Info implements [Reader].
func (s *Safetensors) Info(name string) (TensorInfo, bool) {
	t, _, ok := s.tensors.lookup(name)
	return t, ok
}

// RawBytes returns the stored little-endian bytes of the named tensor, in a
// new slice.
func (s *Safetensors) RawBytes(name string) ([]byte, error) {
	_, i, err := s.find(name)
	if err != nil {
		return nil, err
	}
	off := s.offsets[i]
	out := make([]byte, off[1]-off[0])
	if _, err := s.data.ReadAt(out, s.base+off[0]); err != nil {
		return nil, fmt.Errorf("%s: tensor %q: %w", s.path, name, err)
	}
	return out, nil
}

func (s *Safetensors) find(name string) (TensorInfo, int, error) {
	t, i, ok := s.tensors.lookup(name)
	if !ok {
		return t, i, fmt.Errorf("%s: tensor %q: %w", s.path, name, ErrNotFound)
	}
	return t, i, nil
}

// ReadFloat32 implements [Reader].
func (s *Safetensors) ReadFloat32(name string) (*Tensor, error) { return readFloat32(s, name) }

// ReadFloat32Into implements [Reader].
func (s *Safetensors) ReadFloat32Into(name string, dst []float32) error {
	t, i, err := s.find(name)
	if err != nil {
		return err
	}
	if len(dst) != t.NumElements() {
		return fmt.Errorf("%s: tensor %q: destination has %d elements, tensor %v has %d", s.path, name, len(dst), t.Shape, t.NumElements())
	}
	es := t.DType.Size()
	off := s.offsets[i]
	err = s.data.chunks(s.base+off[0], off[1]-off[0], es, func(b []byte) error {
		n := len(b) / es
		if err := decodeFloat32(dst[:n], b, t.DType); err != nil {
			return err
		}
		dst = dst[n:]
		return nil
	})
	if err != nil {
		return fmt.Errorf("%s: tensor %q: %w", s.path, name, err)
	}
	return nil
}

// ReadInt64 implements [Reader].
func (s *Safetensors) ReadInt64(name string) ([]int64, error) {
	t, i, err := s.find(name)
	if err != nil {
		return nil, err
	}
	if t.DType.IsFloat() {
		return nil, fmt.Errorf("%s: tensor %q is %s; ReadInt64 reads integer tensors: %w", s.path, name, t.DType, ErrUnsupported)
	}
	dst := make([]int64, t.NumElements())
	out := dst
	es := t.DType.Size()
	off := s.offsets[i]
	err = s.data.chunks(s.base+off[0], off[1]-off[0], es, func(b []byte) error {
		n := len(b) / es
		if err := decodeInt64(dst[:n], b, t.DType); err != nil {
			return err
		}
		dst = dst[n:]
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("%s: tensor %q: %w", s.path, name, err)
	}
	return out, nil
}

// Close implements [Reader].
func (s *Safetensors) Close() error { return s.data.Close() }
