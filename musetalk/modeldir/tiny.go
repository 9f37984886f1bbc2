package modeldir

import (
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"maps"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"

	"github.com/avatargen/musetalk/internal/outfile"
	"github.com/avatargen/musetalk/musetalk/model"
	"github.com/avatargen/musetalk/musetalk/model/weights"
)

// The tiny networks' sizes. The Whisper encoder keeps the real 80 mel bins
// and 1500 positions, so MuseTalk's 30 s windows work unchanged; the UNet's
// cross-attention width is the tiny encoder's d_model; the VAE keeps 4
// latent channels and four blocks (down-sampling by 8: 256×256 crops give
// 32×32 latents).
const (
	tinyWhisperDim = 64
	tinyVAELatent  = 4
)

func tinyUNetJSON() map[string]any {
	return map[string]any{
		"_class_name":            "UNet2DConditionModel",
		"act_fn":                 "silu",
		"attention_head_dim":     2,
		"block_out_channels":     []int{16, 32, 32, 32},
		"center_input_sample":    false,
		"cross_attention_dim":    tinyWhisperDim,
		"down_block_types":       []string{"CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"},
		"downsample_padding":     1,
		"flip_sin_to_cos":        true,
		"freq_shift":             0,
		"in_channels":            2 * tinyVAELatent,
		"layers_per_block":       1,
		"mid_block_scale_factor": 1,
		"norm_eps":               1e-5,
		"norm_num_groups":        8,
		"out_channels":           tinyVAELatent,
		"sample_size":            32,
		"up_block_types":         []string{"UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"},
	}
}

func tinyVAEJSON() map[string]any {
	return map[string]any{
		"_class_name":        "AutoencoderKL",
		"act_fn":             "silu",
		"block_out_channels": []int{8, 16, 16, 16},
		"down_block_types":   []string{"DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D"},
		"in_channels":        3,
		"latent_channels":    tinyVAELatent,
		"layers_per_block":   1,
		"norm_num_groups":    8,
		"out_channels":       3,
		"sample_size":        256,
		"scaling_factor":     0.18215,
		"up_block_types":     []string{"UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D"},
	}
}

func tinyWhisperJSON() map[string]any {
	return map[string]any{
		"activation_function":     "gelu",
		"architectures":           []string{"WhisperForConditionalGeneration"},
		"d_model":                 tinyWhisperDim,
		"decoder_attention_heads": 2,
		"decoder_ffn_dim":         128,
		"decoder_layers":          2,
		"encoder_attention_heads": 2,
		"encoder_ffn_dim":         128,
		"encoder_layers":          2,
		"max_source_positions":    1500,
		"max_target_positions":    448,
		"model_type":              "whisper",
		"num_mel_bins":            80,
		"scale_embedding":         false,
		"vocab_size":              51865,
	}
}

// whisperPreprocessorJSON is the feature extractor setting MuseTalk's audio
// path assumes: 80 mel bins of 25 ms windows every 10 ms at 16 kHz, 30 s
// chunks.
func whisperPreprocessorJSON() map[string]any {
	return map[string]any{
		"chunk_length":           30,
		"feature_extractor_type": "WhisperFeatureExtractor",
		"feature_size":           80,
		"hop_length":             160,
		"n_fft":                  400,
		"n_samples":              480000,
		"nb_max_frames":          3000,
		"padding_side":           "right",
		"padding_value":          0.0,
		"return_attention_mask":  false,
		"sampling_rate":          16000,
	}
}

// tinyNet is one weight file WriteTiny writes.
type tinyNet struct {
	file  File
	spec  []model.TensorSpec
	dtype weights.DType
}

// WriteTiny writes a complete weight directory at dir (created if needed)
// holding seeded random weights for every network in the official layout:
// tiny but valid UNets for both versions, VAE and Whisper encoder (configs
// included), the full-structure S3FD and BiSeNet, whose shapes their
// checkpoints fix, and DWPose's structure at an eighth of its width (the
// widths golden case k1 uses). Weight files are safetensors (F16 for S3FD
// and BiSeNet, F32 for the rest). The same seed writes the same bytes. Each file appears
// complete or not at all; existing files of the layout are replaced.
//
// Values follow the usual initialisations, so activations stay in range
// (drawn uniformly with these means and standard deviations): matrices and
// kernels N(0, g/fan_in) with g = 2 for the ReLU networks
// (S3FD, BiSeNet; S3FD's first layer divided by 64 for its 0…255 input,
// BiSeNet's classifiers g = 1) and g = 1 otherwise; biases 0.1·N(0,1);
// norm scales 1 + 0.2·N(0,1) (S3FD's L2Norm scales 10, 8 and 5 times
// that); BatchNorm running means 0.1·N(0,1) and variances exp(0.3·N(0,1)).
// One exception makes a render with these weights visible: BiSeNet's
// classifier gets a large bias towards skin (see biasTinyParser), so the
// blend mask is the face box's lower half and the mouth region shows the
// tiny networks' output; and DWPose draws a fixed schematic face
// whatever the picture (see biasTinyDWPose), whose landmarks MuseTalk's
// rules turn into the box (0.36, 0.18)–(0.64, 0.62) of a square frame, so
// tiny renders take the landmark path. The random S3FD's box is
// arbitrary.
func WriteTiny(dir string, seed uint64) error {
	return writeRandom(dir, seed, "tiny", map[string]any{
		"musetalk/musetalk.json":           tinyUNetJSON(),
		"musetalkV15/musetalk.json":        tinyUNetJSON(),
		"sd-vae/config.json":               tinyVAEJSON(),
		"whisper/config.json":              tinyWhisperJSON(),
		"whisper/preprocessor_config.json": whisperPreprocessorJSON(),
	}, weights.F32, dwposeTiny())
}

// WriteFullSize writes a weight directory like [WriteTiny] but with the
// real networks' configs (MuseTalk's musetalk.json, sd-vae-ft-mse,
// whisper-tiny), so every network has its full size: seeded random
// weights for benchmarks, about 1.9 GB on disk (the UNets and VAE as F16).
func WriteFullSize(dir string, seed uint64) error {
	configs, err := fullSizeConfigs()
	if err != nil {
		return fmt.Errorf("writing full-size weights: %w", err)
	}
	return writeRandom(dir, seed, "full-size", configs, weights.F16, model.DWPoseL())
}

// fullSizeConfigs returns the config files of the real networks.
func fullSizeConfigs() (map[string]any, error) {
	var unet, vae map[string]any
	if err := json.Unmarshal(weights.MuseTalkUNetJSON(), &unet); err != nil {
		return nil, err
	}
	if err := json.Unmarshal(weights.SDVAEJSON(), &vae); err != nil {
		return nil, err
	}
	w := weights.DefaultWhisperConfig()
	whisper := tinyWhisperJSON()
	for k, v := range map[string]int{
		"d_model": w.DModel, "encoder_layers": w.EncoderLayers, "encoder_attention_heads": w.EncoderAttentionHeads,
		"encoder_ffn_dim": w.EncoderFFNDim, "decoder_layers": w.DecoderLayers,
		"decoder_attention_heads": w.DecoderAttentionHeads, "decoder_ffn_dim": w.DecoderFFNDim,
	} {
		whisper[k] = v
	}
	return map[string]any{
		"musetalk/musetalk.json":           unet,
		"musetalkV15/musetalk.json":        unet,
		"sd-vae/config.json":               vae,
		"whisper/config.json":              whisper,
		"whisper/preprocessor_config.json": whisperPreprocessorJSON(),
	}, nil
}

// writeRandom writes the config files (path → JSON value) and random
// weights for every network of the layout; UNet, VAE, Whisper and DWPose
// (of shape dwpose) weights are stored as dtype, S3FD and BiSeNet always
// as F16.
func writeRandom(dir string, seed uint64, what string, configs map[string]any, dtype weights.DType, dwpose model.DWPoseConfig) error {
	parsers := map[string]func([]byte) error{
		"musetalk/musetalk.json":    parseUNet,
		"musetalkV15/musetalk.json": parseUNet,
		"sd-vae/config.json":        parseVAE,
		"whisper/config.json":       parseWhisper,
	}
	var unetCfg weights.UNetConfig
	var vaeCfg weights.VAEConfig
	var whisperCfg weights.WhisperConfig
	for _, path := range slices.Sorted(maps.Keys(configs)) {
		c := struct {
			path  string
			value any
			parse func([]byte) error
		}{path, configs[path], parsers[path]}
		data, err := json.MarshalIndent(c.value, "", "  ")
		if err != nil {
			return fmt.Errorf("writing %s weights: %s: %w", what, c.path, err)
		}
		data = append(data, '\n')
		if c.parse != nil {
			if err := c.parse(data); err != nil {
				return fmt.Errorf("writing %s weights: %s: %w", what, c.path, err)
			}
		}
		if err := writeFileAtomic(filepath.Join(dir, filepath.FromSlash(c.path)), data); err != nil {
			return fmt.Errorf("writing %s weights: %w", what, err)
		}
	}
	d := Dir(dir)
	var err error
	if unetCfg, err = d.UNetConfig(V15); err != nil {
		return err
	}
	if vaeCfg, err = d.VAEConfig(); err != nil {
		return err
	}
	if whisperCfg, err = d.WhisperConfig(); err != nil {
		return err
	}
	unetSpec, err := model.UNetSpec(unetCfg)
	if err != nil {
		return fmt.Errorf("writing %s weights: %w", what, err)
	}
	vaeSpec, err := model.VAESpec(vaeCfg)
	if err != nil {
		return fmt.Errorf("writing %s weights: %w", what, err)
	}
	files, err := Files(Versions()...)
	if err != nil {
		return err
	}
	var nets []tinyNet
	for _, f := range files {
		if !f.Weights {
			continue
		}
		net := tinyNet{file: f, dtype: dtype}
		switch f.Kind {
		case weights.KindUNet:
			net.spec = unetSpec
		case weights.KindVAE:
			net.spec = vaeSpec
		case weights.KindWhisper:
			net.spec = model.WhisperEncoderSpec(whisperCfg)
		case weights.KindS3FD:
			net.spec, net.dtype = model.S3FDSpec(), weights.F16
		case weights.KindBiSeNet:
			net.spec, net.dtype = model.BiSeNetSpec(), weights.F16
		case weights.KindDWPose:
			net.spec = model.DWPoseSpec(dwpose)
		default:
			return fmt.Errorf("writing %s weights: no random network for %s", what, f.Kind)
		}
		nets = append(nets, net)
	}
	// The files are independent: write them on as many goroutines as
	// there are processors.
	errs := make([]error, len(nets))
	sem := make(chan struct{}, runtime.GOMAXPROCS(0))
	var wg sync.WaitGroup
	for i, net := range nets {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			if err := writeTinyNet(dir, net, seed); err != nil {
				errs[i] = fmt.Errorf("writing %s weights: %w", what, err)
			}
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

func parseUNet(data []byte) error {
	c, err := weights.ParseUNetConfig(data)
	if err == nil {
		err = model.ValidateUNetConfig(*c)
	}
	return err
}

func parseVAE(data []byte) error {
	c, err := weights.ParseVAEConfig(data)
	if err == nil {
		err = model.ValidateVAEConfig(*c)
	}
	return err
}

func parseWhisper(data []byte) error {
	_, err := model.ParseWhisperConfig(data)
	return err
}

// writeTinyNet writes one network's random tensors as safetensors at the
// file's safetensors path.
func writeTinyNet(dir string, net tinyNet, seed uint64) error {
	path := filepath.Join(dir, filepath.FromSlash(net.file.SafetensorsPath()))
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	infos := make([]weights.TensorInfo, len(net.spec))
	for i, s := range net.spec {
		infos[i] = weights.TensorInfo{Name: s.Name, DType: net.dtype, Shape: s.Shape}
	}
	meta := map[string]string{"format": "pt", "musetalk_kind": string(net.file.Kind), "musetalk_tiny_seed": fmt.Sprint(seed)}
	w, err := weights.CreateSafetensors(path, infos, meta)
	if err != nil {
		return err
	}
	defer w.Abort() // no-op after Close
	for _, s := range net.spec {
		if err := w.WriteFloat32(s.Name, tinyTensor(net.file, s, seed)); err != nil {
			return err
		}
	}
	return w.Close()
}

// tinyTensor draws one tensor; its values depend only on the seed, the
// file and the tensor's name and shape.
func tinyTensor(f File, s model.TensorSpec, seed uint64) []float32 {
	h := fnv.New64a()
	h.Write([]byte(f.Path + "\x00" + s.Name))
	rng := rand.New(rand.NewPCG(seed, h.Sum64()))
	n := 1
	for _, d := range s.Shape {
		n *= d
	}
	out := make([]float32, n)
	// Uniform values with the given mean and standard deviation: as good
	// as normal ones for keeping activations in range, and cheaper.
	fill := func(center, std float64) {
		half := std * math.Sqrt(3)
		for i := range out {
			out[i] = float32(center + half*(2*rng.Float64()-1))
		}
	}
	name := s.Name
	switch {
	case strings.HasSuffix(name, ".running_mean"):
		fill(0, 0.1)
	case strings.HasSuffix(name, ".running_var"):
		fill(0, 0.3)
		for i, v := range out {
			out[i] = float32(math.Exp(float64(v)))
		}
	case strings.HasSuffix(name, ".bias"):
		fill(0, 0.1)
	case len(s.Shape) == 1:
		fill(l2NormScale(f.Kind, name), 0.2*l2NormScale(f.Kind, name))
	default:
		fanIn := n / s.Shape[0]
		gain := 1.0
		if f.Kind == weights.KindS3FD || f.Kind == weights.KindBiSeNet {
			gain = 2
		}
		if f.Kind == weights.KindBiSeNet && isClassifier(name) {
			gain = 1
		}
		std := math.Sqrt(gain / float64(fanIn))
		if f.Kind == weights.KindS3FD && name == "conv1_1.weight" {
			std /= 64
		}
		fill(0, std)
	}
	switch f.Kind {
	case weights.KindBiSeNet:
		biasTinyParser(name, out)
	case weights.KindDWPose:
		biasTinyDWPose(name, s.Shape, out)
	}
	return out
}

// The random BiSeNet's logits reach a few hundred (with seed 7: about ±200
// on photos, up to ±500 on saturated stripes), spread over every class,
// and skin (class 1), which MuseTalk's blend masks are made of, rarely
// wins: without a bias the mask is nearly empty and a render leaves every
// frame as it was. tinyParserSkinLogit is
// the bias biasTinyParser gives the skin logit, far above that spread, so
// the tiny parser labels every pixel of an ordinary picture as skin. The
// blend mask is then what MuseTalk cuts it to, the face box's part below
// the middle of the crop: the mouth region is regenerated, the rest of the
// frame is not. An F16 value, exactly.
const tinyParserSkinLogit = 2048

// tinyParserSkinClass is CelebAMask-HQ's skin class, which both parsing
// modes (raw and jaw) put in the mask.
const tinyParserSkinClass = 1

// biasTinyParser turns channel 0 of BiSeNet's main head (conv_out.conv,
// ConvBNReLU) into the constant 1 (BatchNorm scale 0, shift 1) and makes
// the classifier's weights from that channel a bias: tinyParserSkinLogit
// for skin, 0 for the other classes (the classifier has no bias of its
// own). Other tensors are left as drawn.
func biasTinyParser(name string, out []float32) {
	switch name {
	case "conv_out.conv.bn.weight":
		out[0] = 0
	case "conv_out.conv.bn.bias":
		out[0] = 1
	case "conv_out.conv_out.weight": // [19, mid, 1, 1]
		mid := len(out) / model.BiSeNetClasses
		for k := range model.BiSeNetClasses {
			out[k*mid] = 0
		}
		out[tinyParserSkinClass*mid] = tinyParserSkinLogit
	}
}

// isClassifier reports whether a BiSeNet weight is one of the three final
// 1×1 classifiers (conv_out.conv_out, conv_out16.conv_out,
// conv_out32.conv_out).
func isClassifier(name string) bool {
	switch name {
	case "conv_out.conv_out.weight", "conv_out16.conv_out.weight", "conv_out32.conv_out.weight":
		return true
	}
	return false
}

// l2NormScale is the centre of a rank-1 scale: S3FD's L2Norm layers start
// at 10, 8 and 5, every other norm at 1.
func l2NormScale(kind weights.Kind, name string) float64 {
	if kind == weights.KindS3FD {
		switch {
		case strings.HasPrefix(name, "conv3_3_norm"):
			return 10
		case strings.HasPrefix(name, "conv4_3_norm"):
			return 8
		case strings.HasPrefix(name, "conv5_3_norm"):
			return 5
		}
	}
	return 1
}

// writeFileAtomic writes data to path through a temporary file in the same
// directory, creating the directory if needed.
func writeFileAtomic(path string, data []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return outfile.WriteFile(path, data)
}
