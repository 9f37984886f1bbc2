package weights

import (
	"archive/zip"
	"fmt"
	"io"
	"strings"

	"github.com/nlpodyssey/gopickle/pickle"
	"github.com/nlpodyssey/gopickle/types"
)

// PyTorchOptions adjusts [OpenPyTorch].
type PyTorchOptions struct {
	// StateDictKey names the top-level key holding the state dict when the
	// checkpoint is a dict of several things. Empty means: the root if it is
	// a dict of tensors, else the first of "state_dict", "model_state_dict",
	// "model", "module", "net", "network", "params" that holds one.
	StateDictKey string

	noMmap bool // tests: read with ReadAt instead of a mapping
}

// stateDictKeys are the keys searched for a nested state dict, in order.
func stateDictKeys() []string {
	return []string{"state_dict", "model_state_dict", "model", "module", "net", "network", "params"}
}

// PyTorch is an open PyTorch checkpoint holding a state dict. It implements
// [Reader]; tensor names are the state-dict keys, in state-dict order.
//
// Opening unpickles only the object structure (a few hundred kilobytes for
// the MuseTalk UNet): each tensor becomes a reference to a storage, an
// offset, a shape and strides, and its bytes are read when asked for, from
// the memory-mapped file. Non-contiguous tensors (a saved transpose, a
// slice) are materialised in row-major order.
type PyTorch struct {
	path    string
	format  Format
	data    *fileData
	tensors infoIndex
	refs    []*tensorRef // parallel to tensors.infos
}

var _ Reader = (*PyTorch)(nil)

// storageLocation says where a storage's bytes are: at a file offset, or
// inside a compressed zip entry that must be decompressed to be read.
type storageLocation struct {
	off int64     // file offset of the first byte when zf is nil
	zf  *zip.File // a compressed zip entry, or nil
}

// OpenPyTorch opens a checkpoint written by torch.save: the zip format
// (PyTorch >= 1.6: <name>/data.pkl and <name>/data/<key>) or the legacy
// format (magic number, pickles, then raw storages). The checkpoint must
// hold a state dict, possibly nested under a key (see [PyTorchOptions]).
// TorchScript archives and tar-based files of PyTorch < 0.4 are rejected
// with [ErrUnsupported]; malformed files with [ErrFormat].
func OpenPyTorch(path string, opts PyTorchOptions) (*PyTorch, error) {
	d, err := openFileData(path, !opts.noMmap)
	if err != nil {
		return nil, err
	}
	p := &PyTorch{path: path, data: d}
	if err := p.load(opts); err != nil {
		d.Close()
		return nil, err
	}
	return p, nil
}

func (p *PyTorch) formatErr(format string, args ...any) error {
	return fmt.Errorf("%s: %s: %w", p.path, fmt.Sprintf(format, args...), ErrFormat)
}

func (p *PyTorch) load(opts PyTorchOptions) error {
	head := make([]byte, min(512, p.data.size))
	if _, err := p.data.ReadAt(head, 0); err != nil {
		return fmt.Errorf("%s: reading header: %w", p.path, err)
	}
	format, err := sniffFormat(p.path, head, p.data.size)
	if err != nil {
		return err
	}
	var root any
	switch format {
	case FormatPyTorchZip:
		root, err = p.loadZip()
	case FormatPyTorchLegacy:
		root, err = p.loadLegacy()
	default:
		return fmt.Errorf("%s: is a %s file, not a PyTorch checkpoint: %w", p.path, format, ErrUnsupported)
	}
	if err != nil {
		return err
	}
	p.format = format
	entries, err := p.findStateDict(root, opts.StateDictKey)
	if err != nil {
		return err
	}
	for _, e := range entries {
		name, t := e.key.(string), e.value.(*tensorRef) // checked by tensorDict
		if err := p.checkBounds(name, t); err != nil {
			return err
		}
		p.tensors.add(TensorInfo{Name: name, DType: t.view.root.dtype, Shape: t.shape})
		p.refs = append(p.refs, t)
	}
	return nil
}

// newUnpickler makes an unpickler that resolves torch globals and hands
// persistent ids to persistentLoad.
func newUnpickler(r io.Reader, persistentLoad func(any) (any, error)) *pickle.Unpickler {
	u := pickle.NewUnpickler(r)
	u.FindClass = findClass
	u.PersistentLoad = persistentLoad
	return &u
}

// storageTable creates storages on first reference and checks that later
// references agree.
type storageTable map[string]*storage

func (st storageTable) get(key string, class any, numel any) (*storage, error) {
	sc, ok := class.(*storageClass)
	if !ok {
		return nil, fmt.Errorf("storage %q: type %s is not a torch storage class", key, describe(class))
	}
	if sc.dtype == unknown {
		return nil, fmt.Errorf("storage %q: storage type %s: %w", key, sc.name, ErrUnsupported)
	}
	n, ok := numel.(int)
	if !ok || n < 0 {
		return nil, fmt.Errorf("storage %q: invalid element count %s", key, describe(numel))
	}
	if s, ok := st[key]; ok {
		if s.dtype != sc.dtype || s.numel != int64(n) {
			return nil, fmt.Errorf("storage %q referenced as %s×%d and as %s×%d", key, s.dtype, s.numel, sc.dtype, n)
		}
		return s, nil
	}
	s := &storage{key: key, dtype: sc.dtype, numel: int64(n)}
	st[key] = s
	return s, nil
}

// kv is one dict entry of an unpickled dict.
type kv struct {
	key   any
	value any
}

// dictEntries returns the entries of a dict or OrderedDict, in order.
func dictEntries(v any) ([]kv, bool) {
	switch d := v.(type) {
	case *types.Dict:
		out := make([]kv, 0, d.Len())
		for _, e := range *d {
			out = append(out, kv{e.Key, e.Value})
		}
		return out, true
	case *types.OrderedDict:
		out := make([]kv, 0, d.Len())
		for el := d.List.Front(); el != nil; el = el.Next() {
			e := el.Value.(*types.OrderedDictEntry)
			out = append(out, kv{e.Key, e.Value})
		}
		return out, true
	}
	return nil, false
}

// findStateDict locates the dict of tensors in the unpickled root object.
func (p *PyTorch) findStateDict(root any, key string) ([]kv, error) {
	entries, ok := dictEntries(root)
	if !ok {
		if _, isTensor := root.(*tensorRef); isTensor {
			return nil, fmt.Errorf("%s: the checkpoint is a single tensor, not a state dict: %w", p.path, ErrUnsupported)
		}
		return nil, fmt.Errorf("%s: the checkpoint holds %s, not a state dict: %w", p.path, describe(root), ErrUnsupported)
	}
	lookup := func(k string) (any, bool) {
		for _, e := range entries {
			if e.key == k {
				return e.value, true
			}
		}
		return nil, false
	}
	if key != "" {
		v, ok := lookup(key)
		if !ok {
			return nil, fmt.Errorf("%s: no key %q at the top level; keys are %s: %w", p.path, key, keyList(entries), ErrNotFound)
		}
		sd, err := tensorDict(v)
		if err != nil {
			return nil, fmt.Errorf("%s: key %q: %w", p.path, key, err)
		}
		return sd, nil
	}
	if sd, err := tensorDict(root); err == nil {
		return sd, nil
	} else if hasTensor(entries) {
		return nil, fmt.Errorf("%s: %w", p.path, err) // a broken state dict at the root
	}
	for _, k := range stateDictKeys() {
		if v, ok := lookup(k); ok {
			if sd, err := tensorDict(v); err == nil {
				return sd, nil
			}
		}
	}
	return nil, fmt.Errorf("%s: no state dict found: top-level keys are %s; set the state dict key: %w", p.path, keyList(entries), ErrNotFound)
}

func hasTensor(entries []kv) bool {
	for _, e := range entries {
		if _, ok := e.value.(*tensorRef); ok {
			return true
		}
	}
	return false
}

// tensorDict checks that v is a non-empty dict of string keys to tensors,
// with no key twice.
func tensorDict(v any) ([]kv, error) {
	entries, ok := dictEntries(v)
	if !ok {
		return nil, fmt.Errorf("%s is not a dict: %w", describe(v), ErrUnsupported)
	}
	if len(entries) == 0 {
		return nil, fmt.Errorf("the state dict is empty: %w", ErrFormat)
	}
	seen := make(map[string]bool, len(entries))
	for _, e := range entries {
		name, ok := e.key.(string)
		if !ok {
			return nil, fmt.Errorf("state dict key %s is not a string: %w", describe(e.key), ErrFormat)
		}
		if _, ok := e.value.(*tensorRef); !ok {
			return nil, fmt.Errorf("state dict entry %q is %s, not a tensor: %w", name, describe(e.value), ErrUnsupported)
		}
		if seen[name] {
			return nil, fmt.Errorf("state dict entry %q appears twice: %w", name, ErrFormat)
		}
		seen[name] = true
	}
	return entries, nil
}

func keyList(entries []kv) string {
	keys := make([]string, len(entries))
	for i, e := range entries {
		if s, ok := e.key.(string); ok {
			keys[i] = fmt.Sprintf("%q", s)
		} else {
			keys[i] = describe(e.key)
		}
	}
	return "[" + strings.Join(keys, ", ") + "]"
}

// checkBounds makes sure every element of t lies inside its storage view.
func (p *PyTorch) checkBounds(name string, t *tensorRef) error {
	numel := int64(1)
	last := t.offset
	for i, d := range t.shape {
		if d == 0 {
			return nil // no elements, nothing to read
		}
		if numel > (1<<62)/int64(d) || t.stride[i] > (1<<62)/int64(d) {
			return p.formatErr("tensor %q: shape %v is too large", name, t.shape)
		}
		numel *= int64(d)
		last += int64(d-1) * t.stride[i]
	}
	if last >= t.view.numel {
		return p.formatErr("tensor %q: shape %v, stride %v, offset %d reach element %d of storage %q, which has %d",
			name, t.shape, t.stride, t.offset, last, t.view.root.key, t.view.numel)
	}
	return nil
}

// Path returns the path the file was opened with.
func (p *PyTorch) Path() string { return p.path }

// Format returns the container format of the checkpoint.
func (p *PyTorch) Format() Format { return p.format }

// Tensors implements [Reader]; the order is the state dict's.
func (p *PyTorch) Tensors() []TensorInfo { return p.tensors.list() }

// Info implements [Reader].
func (p *PyTorch) Info(name string) (TensorInfo, bool) {
	t, _, ok := p.tensors.lookup(name)
	return t, ok
}

func (p *PyTorch) find(name string) (TensorInfo, *tensorRef, error) {
	t, i, ok := p.tensors.lookup(name)
	if !ok {
		return t, nil, fmt.Errorf("%s: tensor %q: %w", p.path, name, ErrNotFound)
	}
	return t, p.refs[i], nil
}

// ReadFloat32 implements [Reader].
func (p *PyTorch) ReadFloat32(name string) (*Tensor, error) { return readFloat32(p, name) }

// ReadFloat32Into implements [Reader].
func (p *PyTorch) ReadFloat32Into(name string, dst []float32) error {
	info, ref, err := p.find(name)
	if err != nil {
		return err
	}
	if len(dst) != info.NumElements() {
		return fmt.Errorf("%s: tensor %q: destination has %d elements, tensor %v has %d", p.path, name, len(dst), info.Shape, info.NumElements())
	}
	err = p.readElements(ref, len(dst), func(b []byte) error {
		n := len(b) / info.DType.Size()
		if err := decodeFloat32(dst[:n], b, info.DType); err != nil {
			return err
		}
		dst = dst[n:]
		return nil
	})
	if err != nil {
		return fmt.Errorf("%s: tensor %q: %w", p.path, name, err)
	}
	return nil
}

// ReadInt64 implements [Reader].
func (p *PyTorch) ReadInt64(name string) ([]int64, error) {
	info, ref, err := p.find(name)
	if err != nil {
		return nil, err
	}
	if info.DType.IsFloat() {
		return nil, fmt.Errorf("%s: tensor %q is %s; ReadInt64 reads integer tensors: %w", p.path, name, info.DType, ErrUnsupported)
	}
	out := make([]int64, info.NumElements())
	dst := out
	err = p.readElements(ref, len(out), func(b []byte) error {
		n := len(b) / info.DType.Size()
		if err := decodeInt64(dst[:n], b, info.DType); err != nil {
			return err
		}
		dst = dst[n:]
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("%s: tensor %q: %w", p.path, name, err)
	}
	return out, nil
}

// readElements hands fn the tensor's numel elements in row-major order, in
// pieces of whole elements. Contiguous tensors stream straight from the
// file; strided ones are gathered from the byte span they cover.
func (p *PyTorch) readElements(t *tensorRef, numel int, fn func([]byte) error) error {
	if numel == 0 {
		return nil
	}
	s := t.view.root
	es := int64(s.dtype.Size())
	start := (t.view.offset + t.offset) * es
	if isContiguous(t.shape, t.stride) {
		return p.storageChunks(s, start, int64(numel)*es, int(es), fn)
	}
	span := int64(1)
	for i, d := range t.shape {
		span += int64(d-1) * t.stride[i]
	}
	src, err := p.storageBytes(s, start, span*es)
	if err != nil {
		return err
	}
	dst := make([]byte, int64(numel)*es)
	gather(dst, src, t.shape, t.stride, int(es))
	return fn(dst)
}

// isContiguous reports whether stride is the row-major stride of shape
// (dimensions of size 1 may have any stride).
func isContiguous(shape []int, stride []int64) bool {
	want := int64(1)
	for i := len(shape) - 1; i >= 0; i-- {
		if shape[i] != 1 && stride[i] != want {
			return false
		}
		want *= int64(shape[i])
	}
	return true
}

// gather copies the strided elements of src into dst in row-major order.
func gather(dst, src []byte, shape []int, stride []int64, es int) {
	nd := len(shape)
	idx := make([]int, nd)
	inner, innerStride := shape[nd-1], stride[nd-1]*int64(es)
	for o := 0; o < len(dst); {
		var base int64
		for i := 0; i < nd-1; i++ {
			base += int64(idx[i]) * stride[i]
		}
		pos := base * int64(es)
		for range inner {
			copy(dst[o:o+es], src[pos:pos+int64(es)])
			o += es
			pos += innerStride
		}
		for i := nd - 2; i >= 0; i-- {
			idx[i]++
			if idx[i] < shape[i] {
				break
			}
			idx[i] = 0
		}
	}
}

// storageChunks hands fn the bytes [start, start+n) of storage s.
func (p *PyTorch) storageChunks(s *storage, start, n int64, align int, fn func([]byte) error) error {
	if s.loc.zf == nil {
		return p.data.chunks(s.loc.off+start, n, align, fn)
	}
	rc, err := s.loc.zf.Open()
	if err != nil {
		return fmt.Errorf("opening %s: %w", s.loc.zf.Name, err)
	}
	defer rc.Close()
	if _, err := io.CopyN(io.Discard, rc, start); err != nil {
		return fmt.Errorf("reading %s: %w", s.loc.zf.Name, err)
	}
	step := int64(chunkSize - chunkSize%align)
	buf := make([]byte, min(step, n))
	for n > 0 {
		k := min(step, n)
		if _, err := io.ReadFull(rc, buf[:k]); err != nil {
			return fmt.Errorf("reading %s: %w", s.loc.zf.Name, err)
		}
		if err := fn(buf[:k]); err != nil {
			return err
		}
		n -= k
	}
	return nil
}

// storageBytes returns the bytes [start, start+n) of storage s, without a
// copy where the file is mapped and the entry stored uncompressed.
func (p *PyTorch) storageBytes(s *storage, start, n int64) ([]byte, error) {
	if s.loc.zf == nil {
		return p.data.bytes(s.loc.off+start, n)
	}
	out := make([]byte, 0, n)
	err := p.storageChunks(s, start, n, 1, func(b []byte) error {
		out = append(out, b...)
		return nil
	})
	return out, err
}

// Close implements [Reader].
func (p *PyTorch) Close() error { return p.data.Close() }
