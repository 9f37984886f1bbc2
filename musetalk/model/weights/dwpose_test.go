package weights

import (
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// pyIntDict is a dict with int keys (an optimizer's per-parameter state).
type pyIntDict struct {
	keys []int
	vals []pyValue
}

func (d *pyIntDict) pickle(p *pickler) {
	p.b.WriteByte('}')
	p.put()
	p.b.WriteByte('(')
	for i, k := range d.keys {
		pyInt(k).pickle(p)
		d.vals[i].pickle(p)
	}
	p.b.WriteByte('u')
}

// pyList is a list.
type pyList []pyValue

func (l pyList) pickle(p *pickler) {
	p.b.WriteByte(']')
	p.put()
	if len(l) == 0 {
		return
	}
	p.b.WriteByte('(')
	for _, v := range l {
		v.pickle(p)
	}
	p.b.WriteByte('e')
}

// pyObject is an instance of a class the reader does not know, pickled as
// copyreg's __reduce_ex__(2) does (NEWOBJ, then BUILD with its __dict__),
// such as mmengine's HistoryBuffer in a checkpoint's message_hub.
type pyObject struct {
	module, name string
	state        *pyDict
}

func (o pyObject) pickle(p *pickler) {
	p.global(o.module, o.name)
	p.b.WriteByte(')')
	p.b.WriteByte(0x81) // NEWOBJ
	p.put()
	o.state.pickle(p)
	p.b.WriteByte('b') // BUILD
}

// mmengineCheckpoint wraps a state dict the way mmengine's runner saves a
// checkpoint (meta, state_dict, message_hub, optimizer, param_schedulers),
// with objects of classes this package does not model.
func mmengineCheckpoint(sd *pyDict, opt *torchStorage) *pyDict {
	hist := pyObject{"mmengine.logging.history_buffer", "HistoryBuffer",
		(&pyDict{}).set("max_length", pyInt(1000000)).set("_log_history", pyList{pyInt(1)})}
	return (&pyDict{}).
		set("meta", (&pyDict{}).set("epoch", pyInt(270)).set("iter", pyInt(123456)).
			set("mmengine_version", pyStr("0.7.4")).
			set("dataset_meta", (&pyDict{}).set("dataset_name", pyStr("coco_wholebody")).set("flip_indices", pyList{pyInt(0), pyInt(2), pyInt(1)}))).
		set("state_dict", sd).
		set("message_hub", (&pyDict{}).
			set("log_scalars", (&pyDict{}).set("train/loss", hist)).
			set("runtime_info", (&pyDict{}).set("epoch", pyInt(270)))).
		set("optimizer", (&pyDict{}).
			set("state", &pyIntDict{keys: []int{0}, vals: []pyValue{(&pyDict{}).
				set("step", contiguous(opt, 1)).set("exp_avg", contiguous(opt, 1))}}).
			set("param_groups", pyList{(&pyDict{}).set("lr", pyInt(0)).set("params", pyList{pyInt(0)})})).
		set("param_schedulers", pyList{(&pyDict{}).set("by_epoch", pyBool(true))})
}

// TestDWPoseCheckpoint writes golden case k1's state dict (the real mmpose
// module names, num_batches_tracked as the 0-d int64 tensor torch saves)
// inside an mmengine checkpoint with a stray tensor, and reads it back:
// kind detected, the stray tensor dropped, every weight and buffer as
// stored.
func TestDWPoseCheckpoint(t *testing.T) {
	t.Parallel()
	s, _ := goldenCase(t, "k_dwpose_model")
	sd := stateDict()
	var names []string
	for i, info := range s.Tensors() {
		if !strings.HasPrefix(info.Name, "backbone.") && !strings.HasPrefix(info.Name, "head.") {
			continue
		}
		names = append(names, info.Name)
		key := fmt.Sprint(i)
		if strings.HasSuffix(info.Name, ".num_batches_tracked") {
			sd.set(info.Name, &pyTensor{st: i64Storage(key, []int64{int64(i)}), shape: []int{}, stride: []int{}})
			continue
		}
		v, err := s.ReadFloat32(info.Name)
		if err != nil {
			t.Fatal(err)
		}
		sd.set(info.Name, contiguous(f32Storage(key, v.Data), info.Shape...))
	}
	sd.set("data_preprocessor.stray", contiguous(f32Storage("stray", []float32{1, 2, 3}), 3))
	path := filepath.Join(t.TempDir(), "dw-ll_ucoco_384.pth")
	writeTorchZip(t, path, "dw-ll_ucoco_384", mmengineCheckpoint(sd, f32Storage("opt", []float32{7})), zipOptions{})

	m, err := OpenMapped(path, KindAuto)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if m.Kind() != KindDWPose {
		t.Fatalf("kind %s, want dwpose", m.Kind())
	}
	if d := m.Dropped(); !slices.Equal(d, []string{"data_preprocessor.stray"}) {
		t.Errorf("dropped %v", d)
	}
	got := m.Tensors()
	if len(got) != len(names) || len(names) != 470 {
		t.Fatalf("%d tensors, want the %d of the state dict (470)", len(got), len(names))
	}
	for i, info := range s.Tensors() {
		if !strings.HasPrefix(info.Name, "backbone.") && !strings.HasPrefix(info.Name, "head.") {
			continue
		}
		if strings.HasSuffix(info.Name, ".num_batches_tracked") {
			gi, _ := m.Info(info.Name)
			v, err := m.ReadInt64(info.Name)
			if err != nil || gi.DType != I64 || len(gi.Shape) != 0 || !slices.Equal(v, []int64{int64(i)}) {
				t.Errorf("%s: %v %v = %v, %v", info.Name, gi.DType, gi.Shape, v, err)
			}
			continue
		}
		want, _ := s.ReadFloat32(info.Name)
		v, err := m.ReadFloat32(info.Name)
		if err != nil || !slices.Equal(v.Shape, info.Shape) || !slices.Equal(v.Data, want.Data) {
			t.Errorf("%s: shape %v, err %v, or values differ", info.Name, v.Shape, err)
		}
	}
}
