package musetalk

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.opentelemetry.io/otel/attribute"

	"github.com/avatargen/musetalk/media"
)

// sourceFrame is what generation needs of one prepared avatar frame.
type sourceFrame struct {
	hasFace bool
	face    media.Box     // where the generated face goes
	crop    media.Box     // the blending square around it
	latent  []float32     // [8, h, w]: masked latent, then reference latent
	mask    *media.Image8 // crop-sized 1-channel blend mask
}

// faceNet turns a batch of avatar latents and audio prompts into faces: the
// UNet at timestep 0, then the VAE decoder (modelNet; tests substitute
// their own).
type faceNet interface {
	// generate runs n items: latents [n, 8, h, w] and prompts [n, tokens,
	// dim], both row-major. It returns n BGR face images and adds the
	// networks' time to st.UNet and st.VAEDecode.
	generate(ctx context.Context, latents, prompts []float32, n int, st *Stats) ([]*media.Image8, error)
	// latentLen is the length of one item's latents (8·h·w).
	latentLen() int
}

// prompter cuts each video frame's audio prompt (features implements it).
type prompter interface {
	// promptLen is the length of one frame's prompt (tokens·dim).
	promptLen() int
	// prompts writes the prompts of the given video frames into dst.
	prompts(dst []float32, frames []int)
}

// frameSink takes the output video's RGB24 frames in order (media.Encoder).
type frameSink interface {
	WriteFrame(rgb []uint8) error
}

// generation is one render's frame loop.
type generation struct {
	src    []sourceFrame                      // the avatar's frames, source order
	pixels func(i int) (*media.Image8, error) // source frame i, BGR
	audio  prompter
	net    faceNet
	sink   frameSink
	frames int // output frames
	batch  int // frames per network batch
	// stats receives the networks' time (from the network goroutine:
	// UNet, VAEDecode, FaceFrames) and compositing's (Blend, Encode); read
	// it only after run returns.
	stats *Stats
	// progress receives the number of frames written so far, after each
	// batch; it never decreases.
	progress func(done int)
}

// genBatch is one batch's network output: faces[j] is output frame
// start+j's generated face, nil where the frame has no face.
type genBatch struct {
	start int
	faces []*media.Image8
	err   error
}

// run renders every output frame into sink. Output frame i shows source
// frame cycleIndex(i, len(src)). Frames with a face get the network's
// face resized into the face box and blended through the frame's mask;
// frames without one pass through unchanged. The networks run one batch
// ahead of compositing on their own goroutine, so a device backend works
// while the CPU blends and ffmpeg encodes; memory holds at most three
// batches of faces. run checks ctx before every batch and returns its
// cause once it is done.
//
// A panic on either side (a network op, compositing, the sink) is
// recovered and returned as a retryable error holding a *[PanicError];
// either way the network goroutine has stopped when run returns, so the
// backend is free for the next render.
func (g *generation) run(ctx context.Context) (err error) {
	if len(g.src) == 0 {
		return errors.New("generation: the avatar has no frames")
	}
	if g.batch < 1 {
		return fmt.Errorf("generation: batch size %d", g.batch)
	}
	if g.stats == nil {
		g.stats = new(Stats)
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	batches := make(chan genBatch, 1)
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer close(batches)
		for start := 0; start < g.frames; start += g.batch {
			if ctx.Err() != nil {
				return
			}
			b := g.safeBatch(ctx, start, min(g.batch, g.frames-start))
			select {
			case batches <- b:
			case <-ctx.Done():
				return
			}
			if b.err != nil {
				return
			}
		}
	}()
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("generation: compositing: %w", recovered(r))
		}
		cancel(err)
		<-done
	}()
	return g.composite(ctx, batches)
}

// safeBatch is generateBatch with a panic (in a network op, on the
// network goroutine, where nothing else would recover it) turned into the
// batch's error.
func (g *generation) safeBatch(ctx context.Context, start, n int) (b genBatch) {
	defer func() {
		if r := recover(); r != nil {
			b = genBatch{start: start, err: fmt.Errorf("generating frames %d-%d: %w", start, start+n-1, recovered(r))}
		}
	}()
	return g.generateBatch(ctx, start, n)
}

// composite writes the batches' frames to the sink in order.
func (g *generation) composite(ctx context.Context, batches <-chan genBatch) error {
	var (
		written  int
		cacheIdx = -1 // source frame held in cached
		cached   *media.Image8
	)
	for {
		var b genBatch
		var ok bool
		select {
		case b, ok = <-batches:
		case <-ctx.Done():
			return context.Cause(ctx)
		}
		if !ok {
			if err := ctx.Err(); err != nil {
				return context.Cause(ctx)
			}
			if written != g.frames {
				return fmt.Errorf("generation: %d of %d frames made", written, g.frames)
			}
			return nil
		}
		if b.err != nil {
			return b.err
		}
		if err := ctx.Err(); err != nil {
			return context.Cause(ctx)
		}
		if err := g.compositeBatch(ctx, b, &written, &cacheIdx, &cached); err != nil {
			return err
		}
		if g.progress != nil {
			g.progress(written)
		}
	}
}

// compositeBatch blends one batch's faces into their frames and writes
// them to the sink, in its own span (blend: resizing, blending and the
// writes to the encoder).
func (g *generation) compositeBatch(ctx context.Context, b genBatch, written, cacheIdx *int, cached **media.Image8) (err error) {
	_, span := startSpan(ctx, SpanBlend, attribute.Int("musetalk.batch.start", b.start), attribute.Int("musetalk.batch.frames", len(b.faces)))
	defer func() { endSpan(span, err) }()
	for j, face := range b.faces {
		i := b.start + j
		k := cycleIndex(i, len(g.src))
		if k != *cacheIdx {
			img, err := g.pixels(k)
			if err != nil {
				return fmt.Errorf("reading avatar frame %d: %w", k, err)
			}
			*cacheIdx, *cached = k, img
		}
		t0 := time.Now()
		out, err := composeFrame(*cached, &g.src[k], face)
		if err != nil {
			return fmt.Errorf("output frame %d (avatar frame %d): %w", i, k, err)
		}
		t1 := time.Now()
		err = g.sink.WriteFrame(out.Pix)
		g.stats.Blend += t1.Sub(t0)
		g.stats.Encode += time.Since(t1)
		if err != nil {
			return fmt.Errorf("encoding frame %d: %w", i, err)
		}
		*written++
	}
	return nil
}

// generateBatch runs the networks on the face frames among output frames
// [start, start+n).
func (g *generation) generateBatch(ctx context.Context, start, n int) genBatch {
	b := genBatch{start: start, faces: make([]*media.Image8, n)}
	var idx []int // output frames with a face
	for j := range n {
		if g.src[cycleIndex(start+j, len(g.src))].hasFace {
			idx = append(idx, start+j)
		}
	}
	if len(idx) == 0 {
		return b
	}
	ll := g.net.latentLen()
	latents := make([]float32, len(idx)*ll)
	for m, i := range idx {
		lat := g.src[cycleIndex(i, len(g.src))].latent
		if len(lat) != ll {
			b.err = fmt.Errorf("generation: avatar frame %d has %d latent values, the networks want %d (prepared with other weights?)",
				cycleIndex(i, len(g.src)), len(lat), ll)
			return b
		}
		copy(latents[m*ll:], lat)
	}
	prompts := make([]float32, len(idx)*g.audio.promptLen())
	g.audio.prompts(prompts, idx)
	g.stats.FaceFrames += len(idx)
	faces, err := g.net.generate(ctx, latents, prompts, len(idx), g.stats)
	if err != nil {
		b.err = fmt.Errorf("generating frames %d-%d: %w", start, start+n-1, err)
		return b
	}
	if len(faces) != len(idx) {
		b.err = fmt.Errorf("generating frames %d-%d: %d faces for %d frames", start, start+n-1, len(faces), len(idx))
		return b
	}
	for m, i := range idx {
		b.faces[i-start] = faces[m]
	}
	return b
}

// composeFrame returns the output frame as RGB24: the source frame (BGR)
// with face resized into the face box (cv2 INTER_LINEAR) and blended
// through the mask (MuseTalk's get_image_blending), or the source frame
// unchanged when face is nil.
func composeFrame(frameBGR *media.Image8, f *sourceFrame, face *media.Image8) (*media.Image8, error) {
	if face == nil {
		return frameBGR.SwapRB(), nil
	}
	w, h := f.face[2]-f.face[0], f.face[3]-f.face[1]
	cw, ch := f.crop[2]-f.crop[0], f.crop[3]-f.crop[1]
	switch {
	case w <= 0 || h <= 0:
		return nil, fmt.Errorf("empty face box %v", f.face)
	case f.mask == nil || f.mask.C != 1 || f.mask.W != cw || f.mask.H != ch:
		return nil, fmt.Errorf("blend mask does not fit the crop box %v", f.crop)
	}
	resized := media.ResizeLinear(face, w, h)
	return media.Blend(frameBGR, resized, f.face, f.crop, f.mask).SwapRB(), nil
}
