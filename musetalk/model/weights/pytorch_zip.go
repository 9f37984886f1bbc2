package weights

import (
	"archive/zip"
	"bufio"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/nlpodyssey/gopickle/types"
)

// loadZip reads the zip format: one top-level directory holding data.pkl,
// data/<key> for each storage, and version or .data/version.
func (p *PyTorch) loadZip() (any, error) {
	zr, err := zip.NewReader(p.data, p.data.size)
	if err != nil {
		return nil, p.formatErr("reading zip archive: %v", err)
	}
	if len(zr.File) == 0 {
		return nil, p.formatErr("empty zip archive")
	}
	prefix, _, ok := strings.Cut(zr.File[0].Name, "/")
	if !ok {
		return nil, p.formatErr("zip entry %q is not inside an archive directory", zr.File[0].Name)
	}
	prefix += "/"
	files := make(map[string]*zip.File, len(zr.File))
	for _, f := range zr.File {
		rel, ok := strings.CutPrefix(f.Name, prefix)
		if !ok {
			return nil, p.formatErr("zip entry %q is outside the archive directory %q", f.Name, prefix)
		}
		files[rel] = f
	}
	if _, ok := files["constants.pkl"]; ok {
		return nil, fmt.Errorf("%s: TorchScript archive (constants.pkl): %w; save the model's state_dict() instead", p.path, ErrUnsupported)
	}
	if f, ok := files["byteorder"]; ok {
		b, err := readZipFile(f, 16)
		if err != nil {
			return nil, p.formatErr("reading %s: %v", f.Name, err)
		}
		if s := strings.TrimSpace(string(b)); s != "little" {
			return nil, fmt.Errorf("%s: byte order %q: %w (little-endian only)", p.path, s, ErrUnsupported)
		}
	}
	pkl, ok := files["data.pkl"]
	if !ok {
		return nil, p.formatErr("no %sdata.pkl in the zip archive", prefix)
	}
	rc, err := pkl.Open()
	if err != nil {
		return nil, p.formatErr("opening %s: %v", pkl.Name, err)
	}
	defer rc.Close()

	storages := storageTable{}
	u := newUnpickler(bufio.NewReader(rc), func(pid any) (any, error) {
		// ('storage', storage_type, key, location, numel)
		t, ok := pid.(*types.Tuple)
		if !ok || t.Len() != 5 || t.Get(0) != "storage" {
			return nil, fmt.Errorf("unexpected persistent id %s, want ('storage', type, key, location, numel)", describe(pid))
		}
		key, ok := t.Get(2).(string)
		if !ok {
			return nil, fmt.Errorf("storage key is %s, not a string", describe(t.Get(2)))
		}
		s, err := storages.get(key, t.Get(1), t.Get(4))
		if err != nil {
			return nil, err
		}
		return &storageView{root: s, numel: s.numel}, nil
	})
	root, err := unpickle(u)
	if err != nil {
		if errors.Is(err, ErrUnsupported) {
			return nil, fmt.Errorf("%s: unpickling %s: %w", p.path, pkl.Name, err)
		}
		return nil, p.formatErr("unpickling %s: %v", pkl.Name, err)
	}
	for key, s := range storages {
		f, ok := files["data/"+key]
		if !ok {
			return nil, p.formatErr("storage %q: no zip entry %sdata/%s", key, prefix, key)
		}
		if want := s.numel * int64(s.dtype.Size()); f.UncompressedSize64 != uint64(want) {
			return nil, p.formatErr("storage %q: zip entry %s has %d bytes, %s×%d needs %d", key, f.Name, f.UncompressedSize64, s.dtype, s.numel, want)
		}
		if f.Method != zip.Store {
			s.loc = storageLocation{zf: f}
			continue
		}
		off, err := f.DataOffset()
		if err != nil {
			return nil, p.formatErr("storage %q: locating %s: %v", key, f.Name, err)
		}
		if off < 0 || int64(f.UncompressedSize64) > p.data.size-off {
			return nil, p.formatErr("storage %q: entry %s runs past the end of the file", key, f.Name)
		}
		s.loc = storageLocation{off: off}
	}
	return root, nil
}

func readZipFile(f *zip.File, limit int64) ([]byte, error) {
	rc, err := f.Open()
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	return io.ReadAll(io.LimitReader(rc, limit))
}
