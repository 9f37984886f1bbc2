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
	packPanels(kern, dst, s.data, s.rs, s.cs, i0, mc, k0, kc, kern.mr, alpha)
}

// packB packs B's columns as packA packs A's rows: B's column j is row j of
// the transposed view.
func (s strided) packB(kern *microKernel, dst []float32, k0, kc, j0, nc int) {
	packPanels(kern, dst, s.data, s.cs, s.rs, j0, nc, k0, kc, kern.nr, 1)
}

// packPanels packs rows [i0, i0+n) × columns [k0, k0+kc) of the matrix
// whose element (i, k) is data[i·rs + k·cs] into panels of width rows,
// interleaved (panel element (k, r) at k·width + r), zero-padding the last
// panel and scaling by alpha unless it is 0 or 1.
func packPanels(kern *microKernel, dst, data []float32, rs, cs, i0, n, k0, kc, width int, alpha float32) {
	for is := 0; is < n; is += width {
		d := dst[is*kc : (is+width)*kc]
		rows := min(width, n-is)
		switch {
		case rs == 1: // a column (fixed k) is contiguous
			src := data[k0*cs+i0+is:]
			if !packRows(kern, d, src, cs, rows, width, kc) {
				packRowsGo(d, src, cs, rows, width, kc)
			}
		case cs == 1: // a row (fixed i) is contiguous
			src := data[(i0+is)*rs+k0:]
			if !packGather(kern, d, src, rs, rows, width, kc) {
				packGatherGo(d, src, rs, rows, width, kc)
			}
		default:
			for r := range rows {
				src := data[(i0+is+r)*rs+k0*cs:]
				for k := range kc {
					d[k*width+r] = src[k*cs]
				}
			}
			for r := rows; r < width; r++ {
				for k := range kc {
					d[k*width+r] = 0
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
