// Package musetalk is the MuseTalk lip-sync pipeline: the worker's
// "musetalk" engine ([NewEngine]) and `musetalk render` both run a
// [Renderer].
//
// A render ([Renderer.Render]) loads the networks of the requested version
// once (package modeldir), prepares the avatar or takes it from the
// content-addressed avatar cache (package avatar), turns the speech into
// Whisper features, and then, batch by batch, runs MuseTalk's UNet at
// timestep 0 and the VAE decoder, resizes each generated face into its box
// and blends it into the source frame through the face-parsing mask, and
// pipes the frames into one ffmpeg process that encodes H.264 and muxes
// the speech. Memory does not grow with the video's length.
//
// Where it differs from the Python reference (all documented in
// docs/PIPELINE.md): the frame count is ceil(samples·fps/16000) with the
// exact rational fps ([FrameCount]), no frame is dropped, the audio windows
// use the exact rate instead of int(fps), frames without a face (or whose
// face box is one flat colour) pass through unchanged, and the output is
// encoded in one pass.
package musetalk
