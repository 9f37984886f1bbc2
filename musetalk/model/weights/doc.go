// Package weights reads and writes the weight files of the MuseTalk networks.
//
// It reads safetensors files ([OpenSafetensors]) and PyTorch checkpoints
// ([OpenPyTorch]: the zip format of torch.save since PyTorch 1.6 and the older
// legacy pickle stream), both through the [Reader] interface, and writes
// safetensors files ([CreateSafetensors]). Tensors are read on demand, one at
// a time, straight from a memory mapping of the file where the platform
// allows it (ReadAt otherwise), so opening a 3.4 GB UNet checkpoint costs
// only its index.
//
// Data leaves the package as plain float32 slices with their shape
// ([Tensor]); the model code wraps them in its own tensor type.
//
// [MapNames] turns the names of the official checkpoints into the names the
// model code uses (legacy VAE attention names, Whisper's "model." prefix),
// [CheckSpec] compares a set of tensors with what a model expects, and
// [Convert] does both while rewriting an official checkpoint as safetensors
// (`musetalk weights convert`). [ParseUNetConfig], [ParseVAEConfig] and
// [ParseWhisperConfig] read the JSON configs of the three networks.
package weights
