package cpu

// aPacker packs A (m×k): rows [i0,i0+mc) and columns [k0,k0+kc) into dst as
// consecutive mr-row slivers of kc groups of mr values, scaled by alpha
// (0 means 1); rows past mc are zero.
type aPacker interface {
	packA(kern *microKernel, dst []float32, i0, mc, k0, kc int, alpha float32)
}

// bPacker packs B (k×n): rows [k0,k0+kc) and columns [j0,j0+nc) into dst as
// consecutive nr-column slivers of kc groups of nr values; columns past nc
// are zero.
type bPacker interface {
	packB(kern *microKernel, dst []float32, k0, kc, j0, nc int)
}

// strided is a matrix whose element (r, c) is data[r·rs + c·cs]; it serves
// as A or B, transposed or not.
type strided struct {
	data   []float32
	rs, cs int
}

func (s strided) packA(kern *microKernel, dst []float32, i0, mc, k0, kc int, alpha float32) {
	mr := kern.mr
	for is := 0; is < mc; is += mr {
		d := dst[is*kc : (is+mr)*kc]
		rows := min(mr, mc-is)
		switch {
		case s.rs == 1: // a column of A is contiguous
			src := s.data[k0*s.cs+i0+is:]
			if !packRows(kern, d, src, s.cs, rows, mr, kc) {
				packRowsGo(d, src, s.cs, rows, mr, kc)
			}
		case s.cs == 1: // a row of A is contiguous
			src := s.data[(i0+is)*s.rs+k0:]
			if !packGather(kern, d, src, s.rs, rows, mr, kc) {
				packGatherGo(d, src, s.rs, rows, mr, kc)
			}
		default:
			for r := range rows {
				src := s.data[(i0+is+r)*s.rs+k0*s.cs:]
				for k := range kc {
					d[k*mr+r] = src[k*s.cs]
				}
			}
			for r := rows; r < mr; r++ {
				for k := range kc {
					d[k*mr+r] = 0
				}
			}
		}
		if alpha != 0 && alpha != 1 {
			for i := range d {
				d[i] *= alpha
			}
		}
	}
}

func (s strided) packB(kern *microKernel, dst []float32, k0, kc, j0, nc int) {
	nr := kern.nr
	for js := 0; js < nc; js += nr {
		d := dst[js*kc : (js+nr)*kc]
		cols := min(nr, nc-js)
		switch {
		case s.cs == 1: // a row of B is contiguous
			src := s.data[k0*s.rs+j0+js:]
			if !packRows(kern, d, src, s.rs, cols, nr, kc) {
				packRowsGo(d, src, s.rs, cols, nr, kc)
			}
		case s.rs == 1: // a column of B is contiguous
			src := s.data[(j0+js)*s.cs+k0:]
			if !packGather(kern, d, src, s.cs, cols, nr, kc) {
				packGatherGo(d, src, s.cs, cols, nr, kc)
			}
		default:
			for c := range cols {
				src := s.data[(j0+js+c)*s.cs+k0*s.rs:]
				for k := range kc {
					d[k*nr+c] = src[k*s.rs]
				}
			}
			for c := cols; c < nr; c++ {
				for k := range kc {
					d[k*nr+c] = 0
				}
			}
		}
	}
}

// packRowsGo sets d[k·width+c] = src[k·ld+c] for c < n, 0 up to width.
func packRowsGo(d, src []float32, ld, n, width, kc int) {
	for k := range kc {
		dk := d[k*width : k*width+width]
		copy(dk, src[k*ld:k*ld+n])
		clear(dk[n:])
	}
}

// packGatherGo interleaves n vectors of stride ld: d[k·width+l] =
// src[l·ld+k] for l < n, 0 up to width.
func packGatherGo(d, src []float32, ld, n, width, kc int) {
	d = d[:kc*width]
	for l := range n {
		v := src[l*ld : l*ld+kc]
		for k, x := range v {
			d[k*width+l] = x
		}
	}
	for l := n; l < width; l++ {
		for k := range kc {
			d[k*width+l] = 0
		}
	}
}
