package worker

import (
	"context"
	"errors"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	metricnoop "go.opentelemetry.io/otel/metric/noop"

	"github.com/avatargen/musetalk/worker/engine"
)

// The worker's OpenTelemetry metrics (Config.MeterProvider). The worker is
// told apart by its resource (service.instance.id = WORKER_ID, as
// cmd/musetalk sets it), so the metrics carry only the engine and stage.
const (
	// MetricStageDuration is a histogram of the time (s) one attempt spent
	// in each stage: the worker's own (download, engine, upload) and the
	// engine's (engine.Job.StageTime: for MuseTalk load, prepare,
	// features, unet, vae_decode, blend, encode, each that stage's busy
	// time in the render). Attributes: musetalk.engine, musetalk.stage.
	MetricStageDuration = "musetalk.worker.stage.duration"
	// MetricFrames counts output frames of the attempts the engine
	// finished; its rate is the worker's frames/s over any window.
	// Attribute: musetalk.engine.
	MetricFrames = "musetalk.worker.frames"
	// MetricFramesPerSecond is the last finished attempt's output frames
	// divided by its engine time (load and preparation included).
	// Attribute: musetalk.engine.
	MetricFramesPerSecond = "musetalk.worker.frames_per_second"
	// MetricGPUMemory is the device memory (bytes) held by the allocator
	// of an engine that runs on a GPU (engine.DeviceMemoryReporter), by
	// musetalk.memory.state: in_use (live tensors) or pooled (freed, kept
	// for reuse). Absent on the CPU.
	MetricGPUMemory = "musetalk.worker.gpu.memory"
)

// stageBuckets are the stage histogram's bucket bounds, in seconds: from a
// batch's blend to an hour-long render.
var stageBuckets = []float64{0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600}

// workerMetrics holds the worker's instruments.
type workerMetrics struct {
	stage  metric.Float64Histogram
	frames metric.Int64Counter
	fps    metric.Float64Gauge
}

// newWorkerMetrics makes the instruments on mp (nil: no-op) and
// registers the GPU memory callback for the engines that report it.
func newWorkerMetrics(mp metric.MeterProvider, engines []engine.Engine) (*workerMetrics, error) {
	if mp == nil {
		mp = metricnoop.NewMeterProvider()
	}
	m := mp.Meter(tracerName)
	stage, err1 := m.Float64Histogram(MetricStageDuration, metric.WithUnit("s"),
		metric.WithDescription("Time one attempt spent in each stage (download, the engine's stages, upload)"),
		metric.WithExplicitBucketBoundaries(stageBuckets...))
	frames, err2 := m.Int64Counter(MetricFrames, metric.WithUnit("{frame}"),
		metric.WithDescription("Output frames of the attempts the engine finished"))
	fps, err3 := m.Float64Gauge(MetricFramesPerSecond, metric.WithUnit("{frame}/s"),
		metric.WithDescription("The last finished attempt's output frames per second of engine time"))
	if err := errors.Join(err1, err2, err3); err != nil {
		return nil, err
	}
	var gpu []engine.Engine
	for _, e := range engines {
		if _, ok := e.(engine.DeviceMemoryReporter); ok {
			gpu = append(gpu, e)
		}
	}
	if len(gpu) > 0 {
		_, err := m.Int64ObservableGauge(MetricGPUMemory, metric.WithUnit("By"),
			metric.WithDescription("Device memory held by the engine's allocator"),
			metric.WithInt64Callback(func(_ context.Context, o metric.Int64Observer) error {
				for _, e := range gpu {
					inUse, pooled, ok := e.(engine.DeviceMemoryReporter).DeviceMemory()
					if !ok {
						continue
					}
					eng := attribute.String("musetalk.engine", e.Name())
					o.Observe(inUse, metric.WithAttributes(eng, attribute.String("musetalk.memory.state", "in_use")))
					o.Observe(pooled, metric.WithAttributes(eng, attribute.String("musetalk.memory.state", "pooled")))
				}
				return nil
			}))
		if err != nil {
			return nil, err
		}
	}
	return &workerMetrics{stage: stage, frames: frames, fps: fps}, nil
}

// stageTime records one stage of an attempt.
func (m *workerMetrics) stageTime(ctx context.Context, eng, stage string, d time.Duration) {
	m.stage.Record(ctx, d.Seconds(), metric.WithAttributes(
		attribute.String("musetalk.engine", eng), attribute.String("musetalk.stage", stage)))
}

// engineDone records a finished engine run of frames output frames.
func (m *workerMetrics) engineDone(ctx context.Context, eng string, frames int, d time.Duration) {
	attrs := metric.WithAttributes(attribute.String("musetalk.engine", eng))
	m.stageTime(ctx, eng, "engine", d)
	if frames <= 0 {
		return
	}
	m.frames.Add(ctx, int64(frames), attrs)
	if d > 0 {
		m.fps.Record(ctx, float64(frames)/d.Seconds(), attrs)
	}
}

// frames is the output frame count of the attempt's last progress report
// (0 when the engine reported none).
func (a *attempt) frames(mu *sync.Mutex) int {
	mu.Lock()
	defer mu.Unlock()
	if a.progress == nil {
		return 0
	}
	return max(a.progress.FramesTotal, a.progress.FramesDone)
}
