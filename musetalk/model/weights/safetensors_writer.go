package weights

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/avatargen/musetalk/internal/half"
	"maps"
	"math"
	"os"
	"path/filepath"
	"slices"
)

// SafetensorsWriter streams tensors into a new safetensors file. The tensor
// list is fixed when the writer is created (the header comes first); the
// data of each tensor is then written in that order, one tensor at a time,
// so memory use is bounded by the largest tensor the caller holds.
//
// The file is written under a temporary name in the destination directory
// and renamed into place by Close, so an interrupted write never leaves a
// partial file at the destination. A SafetensorsWriter is not safe for
// concurrent use.
type SafetensorsWriter struct {
	path    string
	tmp     *os.File
	w       *bufio.Writer
	tensors []TensorInfo
	next    int
	done    bool
	err     error // first write error; the file is abandoned after one
}

// writable reports whether d is an output type: floats are written with
// WriteFloat32, I64 with WriteInt64.
func writable(d DType) bool {
	switch d {
	case F32, F16, BF16, F64, I64:
		return true
	}
	return false
}

// CreateSafetensors starts a safetensors file at path holding tensors, in
// that order, with the given __metadata__ (may be nil). Each tensor's DType
// must be F32, F16, BF16, F64 or I64; names must be unique and non-empty.
func CreateSafetensors(path string, tensors []TensorInfo, metadata map[string]string) (*SafetensorsWriter, error) {
	header, err := buildHeader(tensors, metadata)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".tmp-"+filepath.Base(path)+"-*")
	if err != nil {
		return nil, fmt.Errorf("creating safetensors file: %w", err)
	}
	sw := &SafetensorsWriter{path: path, tmp: tmp, w: bufio.NewWriterSize(tmp, 1<<20)}
	for _, t := range tensors {
		sw.tensors = append(sw.tensors, TensorInfo{Name: t.Name, DType: t.DType, Shape: slices.Clone(t.Shape)})
	}
	var lenBuf [8]byte
	binary.LittleEndian.PutUint64(lenBuf[:], uint64(len(header)))
	sw.write(lenBuf[:])
	sw.write(header)
	if sw.err != nil {
		sw.Abort()
		return nil, fmt.Errorf("%s: writing header: %w", path, sw.err)
	}
	return sw, nil
}

// buildHeader renders the JSON header with keys in tensor order and pads it
// with spaces to a multiple of 8 bytes.
func buildHeader(tensors []TensorInfo, metadata map[string]string) ([]byte, error) {
	var b bytes.Buffer
	b.WriteByte('{')
	if metadata != nil {
		keys := slices.Sorted(maps.Keys(metadata))
		b.WriteString(`"__metadata__":{`)
		for i, k := range keys {
			if i > 0 {
				b.WriteByte(',')
			}
			writeJSONString(&b, k)
			b.WriteByte(':')
			writeJSONString(&b, metadata[k])
		}
		b.WriteByte('}')
	}
	seen := make(map[string]bool, len(tensors))
	var off int64
	for i, t := range tensors {
		if t.Name == "" || t.Name == "__metadata__" {
			return nil, fmt.Errorf("tensor %d: invalid name %q", i, t.Name)
		}
		if seen[t.Name] {
			return nil, fmt.Errorf("tensor %q listed twice", t.Name)
		}
		seen[t.Name] = true
		if !writable(t.DType) {
			return nil, fmt.Errorf("tensor %q: cannot write dtype %q (want F32, F16, BF16, F64 or I64)", t.Name, t.DType)
		}
		shape := make([]int64, len(t.Shape))
		for j, d := range t.Shape {
			shape[j] = int64(d)
		}
		numel, err := shapeElements(shape, t.DType.Size())
		if err != nil {
			return nil, fmt.Errorf("tensor %q: %w", t.Name, err)
		}
		end := off + numel*int64(t.DType.Size())
		if b.Len() > 1 {
			b.WriteByte(',')
		}
		writeJSONString(&b, t.Name)
		fmt.Fprintf(&b, `:{"dtype":"%s","shape":[`, t.DType)
		for j, d := range shape {
			if j > 0 {
				b.WriteByte(',')
			}
			fmt.Fprintf(&b, "%d", d)
		}
		fmt.Fprintf(&b, `],"data_offsets":[%d,%d]}`, off, end)
		off = end
	}
	b.WriteByte('}')
	for b.Len()%8 != 0 {
		b.WriteByte(' ')
	}
	if b.Len() > maxHeaderSize {
		return nil, fmt.Errorf("header of %d bytes exceeds the limit of %d", b.Len(), maxHeaderSize)
	}
	return b.Bytes(), nil
}

func writeJSONString(b *bytes.Buffer, s string) {
	enc, _ := json.Marshal(s) // marshalling a string cannot fail
	b.Write(enc)
}

func (sw *SafetensorsWriter) write(p []byte) {
	if sw.err == nil {
		_, sw.err = sw.w.Write(p)
	}
}

// begin checks that name is the next tensor and that n elements fit it.
func (sw *SafetensorsWriter) begin(name string, n int) (TensorInfo, error) {
	switch {
	case sw.done:
		return TensorInfo{}, fmt.Errorf("%s: tensor %q: writer is closed", sw.path, name)
	case sw.err != nil:
		return TensorInfo{}, fmt.Errorf("%s: tensor %q: earlier write failed: %w", sw.path, name, sw.err)
	case sw.next >= len(sw.tensors):
		return TensorInfo{}, fmt.Errorf("%s: tensor %q: all %d declared tensors are already written", sw.path, name, len(sw.tensors))
	}
	t := sw.tensors[sw.next]
	if t.Name != name {
		return t, fmt.Errorf("%s: tensor %q written out of order: tensor %q comes next", sw.path, name, t.Name)
	}
	if n != t.NumElements() {
		return t, fmt.Errorf("%s: tensor %q: got %d elements, shape %v needs %d", sw.path, name, n, t.Shape, t.NumElements())
	}
	return t, nil
}

// WriteFloat32 writes the next tensor, which must be name, converting data
// to its declared float type. It refuses finite values that would overflow
// F16 (or BF16) to infinity.
func (sw *SafetensorsWriter) WriteFloat32(name string, data []float32) error {
	t, err := sw.begin(name, len(data))
	if err != nil {
		return err
	}
	es := t.DType.Size()
	if !t.DType.IsFloat() {
		return fmt.Errorf("%s: tensor %q is declared %s; use WriteInt64", sw.path, name, t.DType)
	}
	buf := make([]byte, min(len(data), chunkSize/es)*es)
	for base := 0; base < len(data); {
		n := min(len(data)-base, len(buf)/es)
		for i, v := range data[base : base+n] {
			b := buf[i*es:]
			switch t.DType {
			case F32:
				binary.LittleEndian.PutUint32(b, math.Float32bits(v))
			case F64:
				binary.LittleEndian.PutUint64(b, math.Float64bits(float64(v)))
			case F16:
				h := half.FromFloat32(v)
				if h&0x7fff == 0x7c00 && !math.IsInf(float64(v), 0) {
					return fmt.Errorf("%s: tensor %q: element %d = %g overflows float16", sw.path, name, base+i, v)
				}
				binary.LittleEndian.PutUint16(b, h)
			case BF16:
				h := f32ToBF16(v)
				if h&0x7fff == 0x7f80 && !math.IsInf(float64(v), 0) {
					return fmt.Errorf("%s: tensor %q: element %d = %g overflows bfloat16", sw.path, name, base+i, v)
				}
				binary.LittleEndian.PutUint16(b, h)
			}
		}
		sw.write(buf[:n*es])
		base += n
	}
	if sw.err != nil {
		return fmt.Errorf("%s: tensor %q: %w", sw.path, name, sw.err)
	}
	sw.next++
	return nil
}

// WriteInt64 writes the next tensor, which must be name and declared I64.
func (sw *SafetensorsWriter) WriteInt64(name string, data []int64) error {
	t, err := sw.begin(name, len(data))
	if err != nil {
		return err
	}
	if t.DType != I64 {
		return fmt.Errorf("%s: tensor %q is declared %s; use WriteFloat32", sw.path, name, t.DType)
	}
	var b [8]byte
	for _, v := range data {
		binary.LittleEndian.PutUint64(b[:], uint64(v))
		sw.write(b[:])
	}
	if sw.err != nil {
		return fmt.Errorf("%s: tensor %q: %w", sw.path, name, sw.err)
	}
	sw.next++
	return nil
}

// Close checks that every declared tensor was written, flushes and syncs
// the file and renames it to its destination. If anything is missing or
// fails, the temporary file is removed and nothing appears at the
// destination. Close after Close or Abort returns an error.
func (sw *SafetensorsWriter) Close() error {
	if sw.done {
		return fmt.Errorf("%s: writer already closed", sw.path)
	}
	if sw.err == nil && sw.next < len(sw.tensors) {
		sw.err = fmt.Errorf("only %d of %d tensors written; tensor %q is missing", sw.next, len(sw.tensors), sw.tensors[sw.next].Name)
	}
	if sw.err == nil {
		sw.err = sw.w.Flush()
	}
	if sw.err == nil {
		sw.err = sw.tmp.Chmod(0o644) // CreateTemp makes it 0600
	}
	if sw.err == nil {
		sw.err = sw.tmp.Sync()
	}
	if err := sw.tmp.Close(); sw.err == nil {
		sw.err = err
	}
	if sw.err == nil {
		sw.err = os.Rename(sw.tmp.Name(), sw.path)
	}
	sw.done = true
	if sw.err != nil {
		os.Remove(sw.tmp.Name())
		return fmt.Errorf("%s: finishing safetensors file: %w", sw.path, sw.err)
	}
	return nil
}

// Abort abandons the file and removes the temporary file. It is a no-op
// after Close or Abort.
func (sw *SafetensorsWriter) Abort() {
	if sw.done {
		return
	}
	sw.done = true
	if sw.err == nil {
		sw.err = errors.New("aborted")
	}
	sw.tmp.Close()
	os.Remove(sw.tmp.Name())
}
