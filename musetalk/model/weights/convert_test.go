package weights

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/avatargen/musetalk/internal/half"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// goldenCase opens a golden safetensors file and its JSON.
func goldenCase(t *testing.T, base string) (*Safetensors, goldenJSON) {
	t.Helper()
	dir := goldenDir(t)
	s, err := OpenSafetensors(filepath.Join(dir, base+".safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, readGoldenJSON(t, filepath.Join(dir, base+".json"))
}

// officialCheckpoint writes the weights of a golden file as a PyTorch zip
// checkpoint under the names (and shapes) rename gives, skipping names for
// which it returns "". extra tensors are appended.
func officialCheckpoint(t *testing.T, path string, s *Safetensors, spec []TensorSpec, rename func(name string, shape []int) (string, []int), extra ...Tensor) {
	t.Helper()
	sd := stateDict()
	for i, sp := range spec {
		name, shape := rename(sp.Name, sp.Shape)
		if name == "" {
			continue
		}
		v, err := s.ReadFloat32(sp.Name)
		if err != nil {
			t.Fatal(err)
		}
		sd.set(name, contiguous(f32Storage(fmt.Sprint(i), v.Data), shape...))
	}
	for i, e := range extra {
		sd.set(e.Name, contiguous(f32Storage(fmt.Sprint(len(spec)+i), e.Data), e.Shape...))
	}
	writeTorchZip(t, path, strings.TrimSuffix(filepath.Base(path), filepath.Ext(path)), sd, zipOptions{byteorder: true})
}

// sdVAEName renames diffusers' attention names to sd-vae-ft-mse's legacy
// ones and makes the encoder's output projection conv-shaped.
func sdVAEName(name string, shape []int) (string, []int) {
	re := regexp.MustCompile(`^(.*attentions\.0\.)(to_q|to_k|to_v|to_out\.0)\.(weight|bias)$`)
	m := re.FindStringSubmatch(name)
	if m == nil {
		return name, shape
	}
	old := map[string]string{"to_q": "query", "to_k": "key", "to_v": "value", "to_out.0": "proj_attn"}[m[2]]
	if strings.HasPrefix(name, "encoder.") && m[2] == "to_out.0" && m[3] == "weight" {
		shape = append(slices.Clone(shape), 1, 1)
	}
	return m[1] + old + "." + m[3], shape
}

// checkConverted compares every tensor of the converted file with the
// golden weights (rounded to F16 when fp16).
func checkConverted(t *testing.T, path string, golden *Safetensors, spec []TensorSpec, fp16 bool) {
	t.Helper()
	out, err := OpenSafetensors(path)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	if err := CheckSpec(out.Tensors(), spec, false); err != nil {
		t.Fatalf("converted file: %v", err)
	}
	for _, sp := range spec {
		got, err := out.ReadFloat32(sp.Name)
		if err != nil {
			t.Fatal(err)
		}
		want, err := golden.ReadFloat32(sp.Name)
		if err != nil {
			t.Fatal(err)
		}
		wantDType := F32
		if fp16 {
			wantDType = F16
			for i, v := range want.Data {
				want.Data[i] = half.ToFloat32(half.FromFloat32(v))
			}
		}
		if got.DType != wantDType || !equalBits(got.Data, want.Data) {
			t.Fatalf("%s: %s values differ from the golden weights", sp.Name, got.DType)
		}
	}
}

func TestConvertVAE(t *testing.T) {
	t.Parallel()
	golden, g := goldenCase(t, "b_autoencoder_kl")
	spec := g.weightSpec()
	var stated int
	if err := json.Unmarshal(g.top["num_weight_tensors"], &stated); err != nil || len(spec) == 0 || len(spec) != stated {
		t.Fatalf("golden VAE lists %d weights, its num_weight_tensors is %d (%v)", len(spec), stated, err)
	}
	dir := t.TempDir()
	src := filepath.Join(dir, "diffusion_pytorch_model.bin")
	officialCheckpoint(t, src, golden, spec, sdVAEName)

	m, err := OpenMapped(src, KindAuto)
	if err != nil {
		t.Fatal(err)
	}
	if err := CheckSpec(m.Tensors(), spec, false); err != nil || m.Kind() != KindVAE {
		t.Errorf("OpenMapped: kind %s, %v", m.Kind(), err)
	}
	m.Close()

	for _, fp16 := range []bool{false, true} {
		t.Run(fmt.Sprintf("fp16=%v", fp16), func(t *testing.T) {
			t.Parallel()
			dst := filepath.Join(t.TempDir(), "vae.safetensors")
			res, err := Convert(context.Background(), src, dst, ConvertOptions{FP16: fp16, Expect: spec, Metadata: map[string]string{"model": "sd-vae-ft-mse"}})
			if err != nil {
				t.Fatal(err)
			}
			if res.Kind != KindVAE || res.Format != FormatPyTorchZip || res.Tensors != len(spec) || len(res.Dropped) != 0 || res.Bytes == 0 {
				t.Errorf("result = %+v", res)
			}
			checkConverted(t, dst, golden, spec, fp16)
			out, err := OpenSafetensors(dst)
			if err != nil {
				t.Fatal(err)
			}
			defer out.Close()
			meta := out.Metadata()
			if meta["musetalk_kind"] != "vae" || meta["source"] != "diffusion_pytorch_model.bin" || meta["model"] != "sd-vae-ft-mse" || meta["format"] != "pt" {
				t.Errorf("metadata = %v", meta)
			}
		})
	}
}

func TestConvertWhisper(t *testing.T) {
	t.Parallel()
	golden, g := goldenCase(t, "c_whisper_encoder")
	spec := g.weightSpec()
	src := filepath.Join(t.TempDir(), "pytorch_model.bin")
	officialCheckpoint(t, src, golden, spec,
		func(name string, shape []int) (string, []int) { return "model." + name, shape },
		tensor("model.decoder.layers.0.fc1.weight", 16, 32),
		tensor("proj_out.weight", 64, 32))
	dst := filepath.Join(t.TempDir(), "whisper.safetensors")
	res, err := Convert(context.Background(), src, dst, ConvertOptions{Kind: KindWhisper, Expect: spec})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(res.Dropped, []string{"model.decoder.layers.0.fc1.weight", "proj_out.weight"}) {
		t.Errorf("Dropped = %v", res.Dropped)
	}
	checkConverted(t, dst, golden, spec, false)
}

// TestConvertFromSafetensors converts the F16 BiSeNet weights of a golden
// file (with its I64 num_batches_tracked) and drops the inputs and outputs
// the file also holds.
func TestConvertFromSafetensors(t *testing.T) {
	t.Parallel()
	golden, g := goldenCase(t, "h_bisenet_face_parsing")
	spec := g.weightSpec()
	dst := filepath.Join(t.TempDir(), "bisenet.safetensors")
	src := golden.Path()
	_, err := Convert(context.Background(), src, dst, ConvertOptions{Expect: spec})
	var se *SpecError
	if !errors.As(err, &se) || len(se.Unexpected) == 0 || len(se.Missing)+len(se.Misshapen) != 0 || !strings.Contains(err.Error(), "output.logits") && !strings.Contains(err.Error(), "input.") {
		t.Fatalf("Convert with inputs and outputs present: %v, want an error listing the unexpected tensors", err)
	}
	res, err := Convert(context.Background(), src, dst, ConvertOptions{Expect: spec, DropUnexpected: true})
	if err != nil {
		t.Fatal(err)
	}
	if res.Kind != KindBiSeNet || res.Format != FormatSafetensors || res.Tensors != len(spec) || len(res.Dropped) != len(golden.Tensors())-len(spec) {
		t.Errorf("result = %+v", res)
	}
	out, err := OpenSafetensors(dst)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	for _, sp := range spec {
		info, _ := out.Info(sp.Name)
		gi, _ := golden.Info(sp.Name)
		if gi.DType == I64 {
			want, _ := golden.ReadInt64(sp.Name)
			got, err := out.ReadInt64(sp.Name)
			if info.DType != I64 || err != nil || !slices.Equal(got, want) {
				t.Errorf("%s: %s %v, want I64 %v", sp.Name, info.DType, got, want)
			}
			continue
		}
		want, _ := golden.ReadFloat32(sp.Name)
		got, err := out.ReadFloat32(sp.Name)
		if info.DType != F32 || err != nil || !equalBits(got.Data, want.Data) {
			t.Fatalf("%s: %s values differ from the F16 source", sp.Name, info.DType)
		}
	}
}

func TestConvertSpecErrors(t *testing.T) {
	t.Parallel()
	golden, g := goldenCase(t, "b_autoencoder_kl")
	spec := g.weightSpec()
	dir := t.TempDir()
	const dropped = "decoder.up_blocks.1.resnets.2.conv2.bias"
	src := filepath.Join(dir, "vae.bin")
	officialCheckpoint(t, src, golden, spec, func(name string, shape []int) (string, []int) {
		if name == dropped {
			return "", nil
		}
		return sdVAEName(name, shape)
	})

	dst := filepath.Join(dir, "out.safetensors")
	_, err := Convert(context.Background(), src, dst, ConvertOptions{Kind: KindVAE, Expect: spec})
	var se *SpecError
	if !errors.As(err, &se) || !slices.Equal(se.Missing, []string{dropped}) || !errors.Is(err, ErrNotFound) ||
		!strings.Contains(err.Error(), src) || !strings.Contains(err.Error(), `"`+dropped+`"`) {
		t.Fatalf("Convert with a missing tensor: %v", err)
	}

	// A spec that disagrees on one shape: the error names the tensor and
	// both shapes.
	bad := slices.DeleteFunc(slices.Clone(spec), func(s TensorSpec) bool { return s.Name == dropped })
	for i := range bad {
		if bad[i].Name == "encoder.mid_block.attentions.0.to_out.0.weight" {
			bad[i].Shape = []int{32, 16}
		}
	}
	_, err = Convert(context.Background(), src, dst, ConvertOptions{Kind: KindVAE, Expect: bad})
	if !errors.As(err, &se) || len(se.Misshapen) != 1 || len(se.Missing) != 0 ||
		!strings.Contains(err.Error(), `"encoder.mid_block.attentions.0.to_out.0.weight" is [32 32], want [32 16]`) {
		t.Fatalf("Convert with a misshapen tensor: %v", err)
	}
	if _, err := os.Stat(dst); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("failed conversions left %s behind (%v)", dst, err)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Errorf("files left in the output directory: %v", entries)
	}
}

func TestConvertCancelAndSameFile(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	src := filepath.Join(dir, "model.pth")
	c := newCheckpointCase()
	sd := stateDict()
	sd.set("conv1_1.weight", c.sd.vals[0]).set("fc7.weight", c.sd.vals[1])
	writeTorchZip(t, src, "model", sd, zipOptions{})

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	dst := filepath.Join(dir, "out.safetensors")
	if _, err := Convert(ctx, src, dst, ConvertOptions{}); !errors.Is(err, context.Canceled) {
		t.Errorf("Convert with a cancelled context: %v", err)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Errorf("files left after cancellation: %v", entries)
	}
	if _, err := Convert(context.Background(), src, src, ConvertOptions{}); err == nil || !strings.Contains(err.Error(), "same file") {
		t.Errorf("Convert onto its source: %v", err)
	}
	res, err := Convert(context.Background(), src, dst, ConvertOptions{FP16: true})
	if err != nil || res.Kind != KindS3FD || res.Tensors != 2 {
		t.Fatalf("Convert = %+v, %v", res, err)
	}
}
