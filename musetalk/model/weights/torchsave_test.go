package weights

// A minimal torch.save for tests. It emits the bytes PyTorch 1.13–2.x's
// torch.save produces for a state dict, as far as a reader can tell:
//
//   - pickle protocol 2 written the way CPython's pickler writes it: PROTO 2,
//     GLOBAL for classes and functions, BINUNICODE strings, BININT1/BININT2/
//     BININT/LONG1 ints, TUPLE1-3 or MARK…TUPLE, EMPTY_DICT plus SETITEM(S)
//     in batches, BINPUT after every memoised object and BINGET when an
//     object (a global, an equal string) comes again, NEWFALSE, BINPERSID;
//   - an OrderedDict state dict built by REDUCE on collections.OrderedDict
//     with its _metadata attribute restored by BUILD, each tensor as
//     torch._utils._rebuild_tensor_v2(storage, offset, size, stride,
//     False, OrderedDict()), each storage as the persistent id
//     ('storage', torch.<T>Storage, key, 'cpu', numel);
//   - the zip layout of PyTorchFileWriter: <archive>/data.pkl,
//     <archive>/byteorder (PyTorch >= 2.1), <archive>/data/<key> for each
//     storage in sorted key order, <archive>/version last, all entries
//     STORED with their data aligned to 64 bytes by an "FB" padding extra
//     field and followed by a data descriptor;
//   - the legacy layout of _legacy_save: pickles of the magic number, the
//     protocol version 1001, the sys_info dict and the object (6-field
//     persistent ids ending in None), the sorted list of storage keys, then
//     each storage as an int64 element count and its raw bytes.
//
// It does not reproduce CPython's memo for objects that are equal but not
// identical (it memoises strings by value, which CPython does only for the
// same object), nor miniz's local-header timestamps and the
// .data/serialization_id record of PyTorch >= 2.2; readers ignore both.

import (
	"archive/zip"
	"bytes"
	"encoding/binary"
	"github.com/avatargen/musetalk/internal/half"
	"hash/crc32"
	"io"
	"maps"
	"math"
	"os"
	"slices"
	"testing"
)

// pyValue is a Python object the test pickler can write.
type pyValue interface{ pickle(p *pickler) }

type pyStr string
type pyInt int64
type pyBool bool

// pyDict is a dict (or an OrderedDict) with string keys in order; meta, if
// set, becomes the OrderedDict's _metadata attribute.
type pyDict struct {
	ordered bool
	keys    []string
	vals    []pyValue
	meta    *pyDict
}

func (d *pyDict) set(k string, v pyValue) *pyDict {
	d.keys = append(d.keys, k)
	d.vals = append(d.vals, v)
	return d
}

// torchStorage is a storage: typ is its class name ("FloatStorage", ...).
type torchStorage struct {
	key   string
	typ   string
	numel int
	data  []byte
}

// pyTensor is a strided view of a storage (or of a legacy storage view).
type pyTensor struct {
	st     *torchStorage
	view   pyTuple
	offset int
	shape  []int
	stride []int
}

type pickler struct {
	b        bytes.Buffer
	memo     map[string]int
	next     int
	legacy   bool // 6-field persistent ids
	storages map[string]*torchStorage
}

func newPickler(legacy bool) *pickler {
	p := &pickler{memo: map[string]int{}, legacy: legacy, storages: map[string]*torchStorage{}}
	p.b.Write([]byte{0x80, 2}) // PROTO 2
	return p
}

func (p *pickler) stop() []byte { p.b.WriteByte('.'); return p.b.Bytes() }

func (p *pickler) put() {
	if p.next < 256 {
		p.b.Write([]byte{'q', byte(p.next)})
	} else {
		p.b.WriteByte('r')
		binary.Write(&p.b, binary.LittleEndian, uint32(p.next))
	}
	p.next++
}

func (p *pickler) recall(key string) bool {
	i, ok := p.memo[key]
	if !ok {
		return false
	}
	if i < 256 {
		p.b.Write([]byte{'h', byte(i)})
	} else {
		p.b.WriteByte('j')
		binary.Write(&p.b, binary.LittleEndian, uint32(i))
	}
	return true
}

func (p *pickler) remember(key string) { p.memo[key] = p.next; p.put() }

func (p *pickler) global(module, name string) {
	key := "global:" + module + "." + name
	if p.recall(key) {
		return
	}
	p.b.WriteString("c" + module + "\n" + name + "\n")
	p.remember(key)
}

func (s pyStr) pickle(p *pickler) {
	key := "str:" + string(s)
	if p.recall(key) {
		return
	}
	p.b.WriteByte('X')
	binary.Write(&p.b, binary.LittleEndian, uint32(len(s)))
	p.b.WriteString(string(s))
	p.remember(key)
}

func (v pyInt) pickle(p *pickler) {
	switch {
	case v >= 0 && v < 256:
		p.b.Write([]byte{'K', byte(v)})
	case v >= 0 && v < 65536:
		p.b.WriteByte('M')
		binary.Write(&p.b, binary.LittleEndian, uint16(v))
	case v >= math.MinInt32 && v <= math.MaxInt32:
		p.b.WriteByte('J')
		binary.Write(&p.b, binary.LittleEndian, int32(v))
	default:
		p.b.Write([]byte{0x8a, 8}) // LONG1, 8 bytes two's complement
		binary.Write(&p.b, binary.LittleEndian, int64(v))
	}
}

func (v pyBool) pickle(p *pickler) {
	if v {
		p.b.WriteByte(0x88)
	} else {
		p.b.WriteByte(0x89)
	}
}

type pyNone struct{}

func (pyNone) pickle(p *pickler) { p.b.WriteByte('N') }

// tuple writes a tuple the way protocol 2 does and memoises it.
func (p *pickler) tuple(items ...pyValue) {
	if len(items) == 0 {
		p.b.WriteByte(')')
		return
	}
	if len(items) > 3 {
		p.b.WriteByte('(')
	}
	for _, it := range items {
		it.pickle(p)
	}
	if len(items) > 3 {
		p.b.WriteByte('t')
	} else {
		p.b.WriteByte(0x85 + byte(len(items)-1))
	}
	p.put()
}

type pyTuple []pyValue

func (t pyTuple) pickle(p *pickler) { p.tuple(t...) }

func ints(v []int) pyTuple {
	t := make(pyTuple, len(v))
	for i, x := range v {
		t[i] = pyInt(x)
	}
	return t
}

func (d *pyDict) pickle(p *pickler) {
	if d.ordered {
		p.global("collections", "OrderedDict")
		p.b.WriteByte(')')
		p.b.WriteByte('R')
	} else {
		p.b.WriteByte('}')
	}
	p.put()
	for start := 0; start < len(d.keys); start += 1000 { // CPython's batch size
		end := min(start+1000, len(d.keys))
		if end-start == 1 {
			pyStr(d.keys[start]).pickle(p)
			d.vals[start].pickle(p)
			p.b.WriteByte('s')
			continue
		}
		p.b.WriteByte('(')
		for i := start; i < end; i++ {
			pyStr(d.keys[i]).pickle(p)
			d.vals[i].pickle(p)
		}
		p.b.WriteByte('u')
	}
	if d.meta != nil {
		(&pyDict{keys: []string{"_metadata"}, vals: []pyValue{d.meta}}).pickle(p)
		p.b.WriteByte('b')
	}
}

// pyPersistentStorage is a storage reference; view, in legacy files only,
// makes it a PyTorch < 1.0 storage view (view_key, offset, size).
type pyPersistentStorage struct {
	st   *torchStorage
	view pyTuple
}

func (s pyPersistentStorage) pickle(p *pickler) {
	p.storages[s.st.key] = s.st
	if p.legacy {
		p.b.WriteByte('(')
		pyStr("storage").pickle(p)
		p.global("torch", s.st.typ)
		pyStr(s.st.key).pickle(p)
		pyStr("cpu").pickle(p)
		pyInt(s.st.numel).pickle(p)
		if s.view != nil {
			s.view.pickle(p)
		} else {
			pyNone{}.pickle(p)
		}
		p.b.WriteByte('t')
		p.put()
	} else {
		p.b.WriteByte('(')
		pyStr("storage").pickle(p)
		p.global("torch", s.st.typ)
		pyStr(s.st.key).pickle(p)
		pyStr("cpu").pickle(p)
		pyInt(s.st.numel).pickle(p)
		p.b.WriteByte('t')
		p.put()
	}
	p.b.WriteByte('Q') // BINPERSID; persistent objects are not memoised
}

func (t *pyTensor) pickle(p *pickler) {
	p.global("torch._utils", "_rebuild_tensor_v2")
	p.tuple(pyPersistentStorage{t.st, t.view}, pyInt(t.offset), ints(t.shape), ints(t.stride), pyBool(false), &pyDict{ordered: true})
	p.b.WriteByte('R')
	p.put()
}

// stateDict returns an OrderedDict with torch's _metadata attribute.
func stateDict() *pyDict {
	meta := &pyDict{ordered: true}
	meta.set("", (&pyDict{}).set("version", pyInt(1)))
	return &pyDict{ordered: true, meta: meta}
}

// zipOptions vary the zip layout.
type zipOptions struct {
	// byteorder adds the byteorder record of PyTorch >= 2.1.
	byteorder bool
	// deflate compresses the storages instead of storing them (PyTorch
	// never does; repacked files may).
	deflate bool
}

// writeTorchZip writes obj as torch.save(obj, path) does, under the archive
// directory name archive (PyTorch uses the file name without extension).
func writeTorchZip(t *testing.T, path, archive string, obj pyValue, opts zipOptions) {
	t.Helper()
	p := newPickler(false)
	obj.pickle(p)
	pkl := p.stop()

	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	cw := &countingWriter{w: f}
	zw := zip.NewWriter(cw)
	pending := int64(0) // the previous entry's data descriptor, written by the next Create
	add := func(name string, data []byte, compress bool) {
		name = archive + "/" + name
		defer func() { pending = 16 }()
		if compress {
			w, err := zw.CreateHeader(&zip.FileHeader{Name: name, Method: zip.Deflate})
			if err == nil {
				_, err = w.Write(data)
			}
			if err != nil {
				t.Fatal(err)
			}
			return
		}
		if err := zw.Flush(); err != nil {
			t.Fatal(err)
		}
		// Pad the local header with an "FB" extra field so the data starts
		// on a 64-byte boundary, as PyTorch's miniz writer does.
		start := cw.n + pending + 30 + int64(len(name)) + 4
		pad := (64 - start%64) % 64
		extra := []byte{'F', 'B', byte(pad), byte(pad >> 8)}
		extra = append(extra, bytes.Repeat([]byte{'Z'}, int(pad))...)
		w, err := zw.CreateRaw(&zip.FileHeader{
			Name: name, Method: zip.Store, Extra: extra, Flags: 0x808, // UTF-8 name, data descriptor
			CRC32: crc32.ChecksumIEEE(data), CompressedSize64: uint64(len(data)), UncompressedSize64: uint64(len(data)),
		})
		if err == nil {
			_, err = w.Write(data)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	add("data.pkl", pkl, false)
	if opts.byteorder {
		add("byteorder", []byte("little"), false)
	}
	for _, k := range slices.Sorted(maps.Keys(p.storages)) {
		add("data/"+k, p.storages[k].data, opts.deflate)
	}
	add("version", []byte("3\n"), false)
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

// writeTorchLegacy writes obj as torch.save(obj, path,
// _use_new_zipfile_serialization=False) does.
func writeTorchLegacy(t *testing.T, path string, obj pyValue) {
	t.Helper()
	var out bytes.Buffer
	magic := newPickler(false)
	magic.b.Write([]byte{0x8a, 10}) // LONG1 of 0x1950a86a20f9469cfc6c
	magic.b.Write([]byte{0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19})
	out.Write(magic.stop())
	version := newPickler(false)
	pyInt(1001).pickle(version)
	out.Write(version.stop())
	sys := newPickler(false)
	(&pyDict{}).
		set("protocol_version", pyInt(1001)).
		set("little_endian", pyBool(true)).
		set("type_sizes", (&pyDict{}).set("short", pyInt(2)).set("int", pyInt(4)).set("long", pyInt(4))).
		pickle(sys)
	out.Write(sys.stop())
	p := newPickler(true)
	obj.pickle(p)
	out.Write(p.stop())
	keys := slices.Sorted(maps.Keys(p.storages))
	kp := newPickler(false)
	kp.b.WriteByte(']') // EMPTY_LIST, then CPython's batched appends
	kp.put()
	if len(keys) == 1 {
		pyStr(keys[0]).pickle(kp)
		kp.b.WriteByte('a')
	} else if len(keys) > 1 {
		kp.b.WriteByte('(')
		for _, k := range keys {
			pyStr(k).pickle(kp)
		}
		kp.b.WriteByte('e')
	}
	out.Write(kp.stop())
	for _, k := range keys {
		st := p.storages[k]
		binary.Write(&out, binary.LittleEndian, int64(st.numel))
		out.Write(st.data)
	}
	if err := os.WriteFile(path, out.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(b []byte) (int, error) {
	n, err := c.w.Write(b)
	c.n += int64(n)
	return n, err
}

// Storage constructors from Go values.

func f32Storage(key string, v []float32) *torchStorage {
	b := make([]byte, 4*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(x))
	}
	return &torchStorage{key: key, typ: "FloatStorage", numel: len(v), data: b}
}

func f16Storage(key string, v []float32) *torchStorage {
	b := make([]byte, 2*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint16(b[2*i:], half.FromFloat32(x))
	}
	return &torchStorage{key: key, typ: "HalfStorage", numel: len(v), data: b}
}

func bf16Storage(key string, v []float32) *torchStorage {
	b := make([]byte, 2*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint16(b[2*i:], f32ToBF16(x))
	}
	return &torchStorage{key: key, typ: "BFloat16Storage", numel: len(v), data: b}
}

func f64Storage(key string, v []float64) *torchStorage {
	b := make([]byte, 8*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint64(b[8*i:], math.Float64bits(x))
	}
	return &torchStorage{key: key, typ: "DoubleStorage", numel: len(v), data: b}
}

func i64Storage(key string, v []int64) *torchStorage {
	b := make([]byte, 8*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint64(b[8*i:], uint64(x))
	}
	return &torchStorage{key: key, typ: "LongStorage", numel: len(v), data: b}
}

// contiguous returns a row-major tensor over all of st.
func contiguous(st *torchStorage, shape ...int) *pyTensor {
	stride := make([]int, len(shape))
	s := 1
	for i := len(shape) - 1; i >= 0; i-- {
		stride[i] = s
		s *= shape[i]
	}
	return &pyTensor{st: st, shape: shape, stride: stride}
}
