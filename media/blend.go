package media

import (
	"fmt"
	"math"
)

// Box is an axis-aligned pixel box [x1, y1, x2, y2): x2 and y2 are exclusive.
type Box [4]int

// CropBox is MuseTalk's get_crop_box: a square of side 2s centred on the
// face box (floor-division centre), s = int(max(w, h)//2·expand). The result
// may extend past the frame.
func CropBox(face Box, expand float64) (crop Box, s int) {
	xc, yc := floorDiv(face[0]+face[2], 2), floorDiv(face[1]+face[3], 2)
	w, h := face[2]-face[0], face[3]-face[1]
	s = int(float64(floorDiv(max(w, h), 2)) * expand)
	return Box{xc - s, yc - s, xc + s, yc + s}, s
}

func floorDiv(a, b int) int {
	q := a / b
	if (a%b != 0) && ((a < 0) != (b < 0)) {
		q--
	}
	return q
}

// CropResizeLanczos4 is MuseTalk's face crop: cv2.resize(frame[y1:y2,
// x1:x2], (w, h), INTER_LANCZOS4). The box must lie inside the frame.
func CropResizeLanczos4(frame *Image8, box Box, w, h int) *Image8 {
	if box[0] < 0 || box[1] < 0 || box[2] > frame.W || box[3] > frame.H || box[2] <= box[0] || box[3] <= box[1] {
		panic(fmt.Sprintf("media: crop box %v outside %dx%d frame", box, frame.W, frame.H))
	}
	return ResizeLanczos4(frame.Crop(box[0], box[1], box[2], box[3]), w, h)
}

// VAEInput is MuseTalk's VAE.preprocess_img for a 3-channel BGR crop: an
// RGB NCHW [1,3,H,W] float32 tensor, float32(u/255.0) mapped by
// (x−0.5)/0.5. With halfMask, rows from H/2 on are exactly −1.
func VAEInput(bgr *Image8, halfMask bool) []float32 {
	W, H := bgr.W, bgr.H
	out := make([]float32, 3*W*H)
	for c := range 3 {
		for y := range H {
			for x := range W {
				v := float32(float64(bgr.Pix[(y*W+x)*3+2-c]) / 255.0)
				if halfMask && y >= H/2 {
					v = 0
				}
				out[(c*H+y)*W+x] = (v - 0.5) / 0.5
			}
		}
	}
	return out
}

// ParsingMode is a FaceParsing post-processing mode.
type ParsingMode int

// Parsing modes: ParsingRaw (MuseTalk v1), ParsingNeck, and ParsingJaw
// (v1.5, needs a 512×512 map).
const (
	ParsingRaw ParsingMode = iota
	ParsingNeck
	ParsingJaw
)

// JawKernel returns the 33×33 dilation kernel of FaceParsing's jaw mode
// (1 = set): rows 10–20 hold a cone of width 2(r−10)+1 and rows 21–32 a
// band of width 21, centred on column 16. Its anchor is (16, 16).
func JawKernel() []uint8 {
	const n = 33
	k := make([]uint8, n*n)
	for r := 10; r < n; r++ {
		half := min(r-10, 10)
		for c := 16 - half; c <= 16+half; c++ {
			k[r*n+c] = 1
		}
	}
	return k
}

// CheekKernel returns cv2.getStructuringElement(MORPH_ELLIPSE, (35, 3)):
// 3 rows of 35, row 1 all ones and rows 0 and 2 only column 17. Its anchor
// is (1, 17).
func CheekKernel() []uint8 {
	k := make([]uint8, 3*35)
	for c := range 35 {
		k[35+c] = 1
	}
	k[17], k[2*35+17] = 1, 1
	return k
}

// CheekMask returns FaceParsing's w×h cheek mask: 255 where x ≤ w/2−left
// or x ≥ w/2+right, else 0.
func CheekMask(w, h, left, right int) *Image8 {
	m := NewImage8(w, h, 1)
	for y := range h {
		for x := range w {
			if x <= w/2-left || x >= w/2+right {
				m.Pix[y*w+x] = 255
			}
		}
	}
	return m
}

// JawStages holds the intermediate masks of the jaw mode.
type JawStages struct {
	FaceRegion, Dilated, Eroded *Image8
}

// ParsingMask applies FaceParsing.__call__'s mode post-processing to an
// argmax map of class ids (1 channel) and returns the 0/255 mask. The jaw
// mode uses CheekMask(W, H, leftCheek, rightCheek) and also returns its
// stages; the other modes ignore the cheek widths and return nil stages.
func ParsingMask(parsing *Image8, mode ParsingMode, leftCheek, rightCheek int) (*Image8, *JawStages) {
	out := NewImage8(parsing.W, parsing.H, 1)
	in := func(p uint8, set ...uint8) bool {
		for _, s := range set {
			if p == s {
				return true
			}
		}
		return false
	}
	switch mode {
	case ParsingRaw, ParsingNeck:
		for i, p := range parsing.Pix {
			if in(p, 1, 11, 12, 13) || (mode == ParsingNeck && p == 14) {
				out.Pix[i] = 255
			}
		}
		return out, nil
	case ParsingJaw:
		st := &JawStages{FaceRegion: NewImage8(parsing.W, parsing.H, 1)}
		for i, p := range parsing.Pix {
			if p == 1 {
				st.FaceRegion.Pix[i] = 255
			}
		}
		st.Dilated = Morph(st.FaceRegion, JawKernel(), 33, 33, 16, 16, true)
		ck := CheekKernel()
		st.Eroded = Morph(Morph(st.Dilated, ck, 3, 35, 1, 17, false), ck, 3, 35, 1, 17, false)
		cheek := CheekMask(parsing.W, parsing.H, leftCheek, rightCheek)
		for i, p := range parsing.Pix {
			fr2 := (st.Eroded.Pix[i] & cheek.Pix[i]) | (st.Dilated.Pix[i] &^ cheek.Pix[i])
			if (fr2 == 255 && p != 10) || in(p, 11, 12, 13) {
				out.Pix[i] = 255
			}
		}
		return out, st
	}
	panic(fmt.Sprintf("media: unknown parsing mode %d", mode))
}

// BlurKSize is MuseTalk's mask blur size for a crop of side s:
// int(ratio·s//2·2)+1 (ratio 0.1 realtime, 0.05 offline).
func BlurKSize(s int, ratio float64) int {
	return int(math.Floor(ratio*float64(s)/2)*2) + 1
}

// MaskUnblurred is the mask assembly of get_image / get_image_prepare_material
// before the blur: the parsing mask (any size) is resized to the crop with
// Pillow BICUBIC (seg), kept only inside the face box (relative to crop)
// and in rows ≥ int(S·upperRatio); it returns the mask and seg.
func MaskUnblurred(mask *Image8, face, crop Box, upperRatio float64) (out, seg *Image8) {
	S := crop[2] - crop[0]
	seg = ResizePIL(mask, S, crop[3]-crop[1], PILBicubic)
	out = NewImage8(seg.W, seg.H, 1)
	top := int(float64(seg.H) * upperRatio)
	for y := max(face[1]-crop[1], top, 0); y < min(face[3]-crop[1], seg.H); y++ {
		for x := max(face[0]-crop[0], 0); x < min(face[2]-crop[0], seg.W); x++ {
			out.Pix[y*seg.W+x] = seg.Pix[y*seg.W+x]
		}
	}
	return out, seg
}

// BlendMask is the blurred blending mask: GaussianBlur(MaskUnblurred, k)
// with k = BlurKSize(crop width, blurRatio).
func BlendMask(mask *Image8, face, crop Box, upperRatio, blurRatio float64) *Image8 {
	m, _ := MaskUnblurred(mask, face, crop, upperRatio)
	return GaussianBlur(m, BlurKSize(m.W, blurRatio))
}

// Blend is MuseTalk's get_image_blending on BGR images: the frame region
// crop is cut out (zero outside the frame), faceBGR (already face-box sized)
// is copied in at the face box, and the result is pasted back at the crop
// origin through mask (crop-sized, 1 channel) with Pillow's arithmetic. It
// returns a new BGR frame.
func Blend(frameBGR, faceBGR *Image8, face, crop Box, mask *Image8) *Image8 {
	if faceBGR.W != face[2]-face[0] || faceBGR.H != face[3]-face[1] {
		panic(fmt.Sprintf("media: face %dx%d does not fill box %v", faceBGR.W, faceBGR.H, face))
	}
	body := frameBGR.Clone()
	large := body.Crop(crop[0], crop[1], crop[2], crop[3])
	large.Paste(faceBGR, face[0]-crop[0], face[1]-crop[1])
	body.PasteMask(large, crop[0], crop[1], mask)
	return body
}
