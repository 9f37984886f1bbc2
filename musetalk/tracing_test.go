package musetalk

import (
	"context"
	"io"
	"log/slog"
	"path/filepath"
	"slices"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/avatargen/musetalk/protocol"
	"github.com/avatargen/musetalk/worker/engine"
)

// TestEngineSpansAndStageTimes runs the engine under a span: every
// pipeline stage is its child (the networks and the blend once per batch,
// under generate), and the stage times reach Job.StageTime.
func TestEngineSpansAndStageTimes(t *testing.T) {
	t.Parallel()
	needFFmpeg(t)
	dir := t.TempDir()
	e := NewEngine(EngineOptions{Options: Options{WeightsDir: tinyWeights(t), CacheDir: filepath.Join(dir, "c"), NewBackend: cpuBackend(2), Preset: "ultrafast",
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}})
	defer e.Close()
	if _, _, ok := e.DeviceMemory(); ok {
		t.Error("DeviceMemory reports memory before the backend started")
	}
	writePNG(t, filepath.Join(dir, "a.png"), 64, 64)
	writeWAV(t, filepath.Join(dir, "a.wav"), 0.3) // 8 frames at 25 fps: 2 batches of 4
	stages := map[string]time.Duration{}
	job := &engine.Job{ID: "j", AvatarPath: filepath.Join(dir, "a.png"), AudioPath: filepath.Join(dir, "a.wav"),
		OutputPath: filepath.Join(dir, "o.mp4"), Params: protocol.JobParams{FaceBox: []int{16, 16, 48, 48}, ParsingMode: "raw", BatchSize: 4},
		StageTime: func(stage string, d time.Duration) { stages[stage] += d }}

	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	ctx, root := tp.Tracer("test").Start(context.Background(), "engine")
	if err := e.Run(ctx, job, nil); err != nil {
		t.Fatal(err)
	}
	root.End()

	spans := exp.GetSpans()
	id := map[string]tracetest.SpanStub{}
	count := map[string]int{}
	var order []string
	for _, s := range spans {
		id[s.SpanContext.SpanID().String()] = s
		count[s.Name]++
		if s.Parent.SpanID() == root.SpanContext().SpanID() {
			order = append(order, s.Name)
		}
	}
	slices.SortFunc(order, func(a, b string) int {
		return id[firstSpan(spans, a)].StartTime.Compare(id[firstSpan(spans, b)].StartTime)
	})
	if want := []string{SpanLoad, SpanDecodeAudio, SpanPrepare, SpanFeatures, SpanGenerate, SpanEncode}; !slices.Equal(order, want) {
		t.Errorf("the engine span's children %v, want %v in that order", order, want)
	}
	gen := id[firstSpan(spans, SpanGenerate)]
	for _, s := range spans {
		switch s.Name {
		case SpanUNet, SpanVAEDecode, SpanBlend:
			if s.Parent.SpanID() != gen.SpanContext.SpanID() {
				t.Errorf("a %s span is not a child of generate", s.Name)
			}
		}
	}
	for _, n := range []string{SpanUNet, SpanVAEDecode, SpanBlend} {
		if count[n] != 2 {
			t.Errorf("%d %s spans, want one per batch (2)", count[n], n)
		}
	}
	for _, st := range []string{SpanLoad, SpanPrepare, SpanFeatures, SpanUNet, SpanVAEDecode, SpanBlend, SpanEncode} {
		if stages[st] <= 0 {
			t.Errorf("stage %s: StageTime got %v", st, stages[st])
		}
	}

	// Without a span in the context the pipeline records nothing.
	before := len(exp.GetSpans())
	job.OutputPath = filepath.Join(dir, "o2.mp4")
	if err := e.Run(context.Background(), job, nil); err != nil {
		t.Fatal(err)
	}
	if after := len(exp.GetSpans()); after != before {
		t.Errorf("a run without a span made %d spans", after-before)
	}
	if _, _, ok := e.DeviceMemory(); ok {
		t.Error("DeviceMemory reports memory on the CPU")
	}
}

// firstSpan returns the span id of the first span named name.
func firstSpan(spans tracetest.SpanStubs, name string) string {
	for _, s := range spans {
		if s.Name == name {
			return s.SpanContext.SpanID().String()
		}
	}
	return ""
}
