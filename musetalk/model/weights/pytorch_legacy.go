package weights

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/big"

	"github.com/nlpodyssey/gopickle/types"
)

// legacyMagic is the number torch.save's legacy format starts with.
const legacyMagic = "1950a86a20f9469cfc6c"

// loadLegacy reads the pre-1.6 format: pickles of the magic number, the
// protocol version (1001), the system info and the object, a pickled list of
// storage keys, then each storage as an int64 element count and raw bytes.
func (p *PyTorch) loadLegacy() (any, error) {
	r := &posReader{d: p.data, buf: make([]byte, 64<<10)}
	plain := func() (any, error) { return unpickle(newUnpickler(r, nil)) }

	magic, err := plain()
	if n, ok := magic.(*big.Int); err != nil || !ok || n.Text(16) != legacyMagic {
		return nil, p.formatErr("no PyTorch magic number at the start of the file")
	}
	if v, err := plain(); err != nil || v != 1001 {
		return nil, p.formatErr("legacy protocol version is %s, want 1001", describe(v))
	}
	sysInfo, err := plain()
	if err != nil {
		return nil, p.formatErr("unpickling system info: %v", err)
	}
	if entries, ok := dictEntries(sysInfo); ok {
		for _, e := range entries {
			if e.key == "little_endian" && e.value == false {
				return nil, fmt.Errorf("%s: big-endian checkpoint: %w", p.path, ErrUnsupported)
			}
		}
	}

	storages := storageTable{}
	root, err := unpickle(newUnpickler(r, func(pid any) (any, error) {
		t, ok := pid.(*types.Tuple)
		if !ok || t.Len() < 1 {
			return nil, fmt.Errorf("unexpected persistent id %s", describe(pid))
		}
		switch t.Get(0) {
		case "module":
			return &opaqueObject{class: &opaqueClass{module: "torch", name: "module"}}, nil
		case "storage":
		default:
			return nil, fmt.Errorf("unexpected persistent id type %s", describe(t.Get(0)))
		}
		// ('storage', storage_type, root_key, location, numel, view_metadata)
		if t.Len() != 6 {
			return nil, fmt.Errorf("storage persistent id has %d fields, want 6", t.Len())
		}
		key, ok := t.Get(2).(string)
		if !ok {
			return nil, fmt.Errorf("storage key is %s, not a string", describe(t.Get(2)))
		}
		s, err := storages.get(key, t.Get(1), t.Get(4))
		if err != nil {
			return nil, err
		}
		if t.Get(5) == nil {
			return &storageView{root: s, numel: s.numel}, nil
		}
		// (view_key, offset, view_size), from PyTorch < 1.0.
		vm, ok := t.Get(5).(*types.Tuple)
		if !ok || vm.Len() != 3 {
			return nil, fmt.Errorf("storage %q: view metadata %s, want (key, offset, size)", key, describe(t.Get(5)))
		}
		off, ok1 := vm.Get(1).(int)
		size, ok2 := vm.Get(2).(int)
		if !ok1 || !ok2 || off < 0 || size < 0 || int64(off)+int64(size) > s.numel {
			return nil, fmt.Errorf("storage %q: invalid view [%v, +%v) of %d elements", key, vm.Get(1), vm.Get(2), s.numel)
		}
		return &storageView{root: s, offset: int64(off), numel: int64(size)}, nil
	}))
	if err != nil {
		if errors.Is(err, ErrUnsupported) {
			return nil, fmt.Errorf("%s: unpickling the checkpoint: %w", p.path, err)
		}
		return nil, p.formatErr("unpickling the checkpoint: %v", err)
	}
	keysObj, err := plain()
	if err != nil {
		return nil, p.formatErr("unpickling the storage key list: %v", err)
	}
	keys, ok := keysObj.(*types.List)
	if !ok {
		return nil, p.formatErr("storage key list is %s, not a list", describe(keysObj))
	}
	pos := r.pos
	seen := make(map[string]bool, keys.Len())
	for i := range keys.Len() {
		key, ok := keys.Get(i).(string)
		if !ok {
			return nil, p.formatErr("storage key %d is %s, not a string", i, describe(keys.Get(i)))
		}
		s, ok := storages[key]
		if !ok || seen[key] {
			return nil, p.formatErr("storage key list names %q, which no tensor references or which is listed twice", key)
		}
		seen[key] = true
		var nb [8]byte
		if _, err := p.data.ReadAt(nb[:], pos); err != nil {
			return nil, p.formatErr("storage %q: reading its size at offset %d: %v (truncated file?)", key, pos, err)
		}
		if n := int64(binary.LittleEndian.Uint64(nb[:])); n != s.numel {
			return nil, p.formatErr("storage %q: stored element count %d, but the pickle says %d", key, n, s.numel)
		}
		nbytes := s.numel * int64(s.dtype.Size())
		if nbytes > p.data.size-pos-8 {
			return nil, p.formatErr("storage %q: %d bytes at offset %d run past the end of the file (%d bytes)", key, nbytes, pos+8, p.data.size)
		}
		s.loc = storageLocation{off: pos + 8}
		pos += 8 + nbytes
	}
	for key := range storages {
		if !seen[key] {
			return nil, p.formatErr("storage %q is referenced but missing from the storage key list", key)
		}
	}
	return root, nil
}

// posReader reads sequentially through an io.ReaderAt, buffering, while
// tracking exactly how many bytes were consumed (bufio would hide that).
type posReader struct {
	d      io.ReaderAt
	pos    int64 // next byte to hand out
	buf    []byte
	bstart int64 // file offset of buf[0]
	bn     int   // valid bytes in buf
}

func (r *posReader) fill() error {
	if r.pos >= r.bstart && r.pos < r.bstart+int64(r.bn) {
		return nil
	}
	n, err := r.d.ReadAt(r.buf, r.pos)
	if n == 0 {
		if err == nil {
			err = io.ErrUnexpectedEOF
		}
		return err
	}
	r.bstart, r.bn = r.pos, n
	return nil
}

func (r *posReader) Read(b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	if err := r.fill(); err != nil {
		return 0, err
	}
	n := copy(b, r.buf[r.pos-r.bstart:r.bn])
	r.pos += int64(n)
	return n, nil
}

func (r *posReader) ReadByte() (byte, error) {
	if err := r.fill(); err != nil {
		return 0, err
	}
	b := r.buf[r.pos-r.bstart]
	r.pos++
	return b, nil
}
