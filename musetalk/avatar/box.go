package avatar

import (
	"fmt"

	"github.com/avatargen/musetalk/media"
)

// checkFaceBox reports an error wrapping ErrInvalidOptions unless the
// override box lies inside a w×h frame.
func checkFaceBox(b media.Box, w, h int) error {
	if b[0] < 0 || b[1] < 0 || b[2] > w || b[3] > h || b[2] <= b[0] || b[3] <= b[1] {
		return fmt.Errorf("%w: face box %v does not lie inside the %dx%d frame with x1 < x2 and y1 < y2",
			ErrInvalidOptions, b, w, h)
	}
	return nil
}

// faceBox turns a detected (or overriding) box into the box the face is
// cropped from and blended at, for a w×h frame and normalized options n.
// The box is first clipped to the frame (detectors and landmarks may
// overshoot; NumPy slicing clips the same way); an empty result means no
// face. Then, when shift is set, v1's bbox_shift moves the upper edge by
// 2·shift (clamped at 0; dropped when it would empty the box; MuseTalk's
// landmark rules apply it themselves), and v1.5's extra margin moves the
// lower edge down, clamped to the frame.
func faceBox(b media.Box, w, h int, n Options, shift bool) (media.Box, bool) {
	b = media.Box{max(b[0], 0), max(b[1], 0), min(b[2], w), min(b[3], h)}
	if b[2] <= b[0] || b[3] <= b[1] {
		return media.Box{}, false
	}
	if s := n.BBoxShift; s != 0 && shift {
		if top := max(b[1]+2*s, 0); top < b[3] {
			b[1] = top
		}
	}
	if n.Version == VersionV15 {
		b[3] = min(b[3]+n.ExtraMargin, h)
	}
	return b, true
}

// blankSpread is the largest difference between two pixel values (per
// channel) that blankBox still counts as one flat colour, which absorbs the
// noise of a lossy codec on a black or uniformly coloured frame.
const blankSpread = 8

// blankBox reports whether box (clipped to the frame) is one flat colour:
// no face can be there, whatever a fixed face box or a detector claims, so
// preparation marks the frame faceless and it passes through instead of
// getting a mouth painted on a black or blank picture. A real face's box
// is never this flat.
func blankBox(frame *media.Image8, box media.Box) bool {
	x0, y0 := max(box[0], 0), max(box[1], 0)
	x1, y1 := min(box[2], frame.W), min(box[3], frame.H)
	if x0 >= x1 || y0 >= y1 {
		return true
	}
	c := frame.C
	var lo, hi [4]uint8
	first := frame.Pix[(y0*frame.W+x0)*c:]
	for ch := range min(c, 4) {
		lo[ch], hi[ch] = first[ch], first[ch]
	}
	for y := y0; y < y1; y++ {
		row := frame.Pix[(y*frame.W+x0)*c : (y*frame.W+x1)*c]
		for p := 0; p < len(row); p += c {
			for ch := range min(c, 4) {
				v := row[p+ch]
				lo[ch], hi[ch] = min(lo[ch], v), max(hi[ch], v)
				if hi[ch]-lo[ch] > blankSpread {
					return false
				}
			}
		}
	}
	return true
}
