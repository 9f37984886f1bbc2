package weights

import (
	"fmt"
	"math/big"
	"strings"

	"github.com/nlpodyssey/gopickle/pickle"
	"github.com/nlpodyssey/gopickle/types"
)

// storage is one PyTorch storage: a flat array of numel elements of dtype.
// Where its bytes live is filled in after unpickling.
type storage struct {
	key   string
	dtype DType
	numel int64
	loc   storageLocation
}

// storageView is what a persistent id resolves to: a whole storage, or (in
// very old legacy files) an element range of one.
type storageView struct {
	root   *storage
	offset int64 // elements
	numel  int64
}

// tensorRef is a lazily read tensor: a strided view of a storage.
type tensorRef struct {
	view   *storageView
	offset int64 // storage_offset, elements
	shape  []int
	stride []int64
}

// storageClass is a torch.<T>Storage global.
type storageClass struct {
	name  string
	dtype DType // unknown for storage types this package cannot read
}

func storageDType(name string) DType {
	switch name {
	case "FloatStorage":
		return F32
	case "HalfStorage":
		return F16
	case "BFloat16Storage":
		return BF16
	case "DoubleStorage":
		return F64
	case "LongStorage":
		return I64
	case "IntStorage":
		return I32
	case "ShortStorage":
		return I16
	case "CharStorage":
		return I8
	case "ByteStorage":
		return U8
	case "BoolStorage":
		return BOOL
	}
	return unknown
}

// callableFunc adapts a Go function to a pickled callable global.
type callableFunc func(args ...any) (any, error)

func (f callableFunc) Call(args ...any) (any, error) { return f(args...) }

// opaqueClass stands for any global this package does not model (numpy
// scalars, argparse namespaces and the like in checkpoint extras). Calling
// or instantiating it gives an opaqueObject, so unpickling goes on; only a
// tensor that turns out to be opaque is an error.
type opaqueClass struct{ module, name string }

func (c *opaqueClass) Call(args ...any) (any, error)  { return &opaqueObject{class: c}, nil }
func (c *opaqueClass) PyNew(args ...any) (any, error) { return &opaqueObject{class: c}, nil }

type opaqueObject struct{ class *opaqueClass }

func (c *opaqueClass) String() string  { return c.module + "." + c.name }
func (o *opaqueObject) String() string { return o.class.String() }

// The methods below absorb BUILD, SETITEM(S), APPEND(S) and ADDITEMS.
func (o *opaqueObject) PySetState(any) error { return nil }
func (o *opaqueObject) Set(_, _ any)         {}
func (o *opaqueObject) Append(any)           {}
func (o *opaqueObject) Add(any)              {}

// findClass resolves the globals that torch.save emits for state dicts.
func findClass(module, name string) (any, error) {
	switch module + "." + name {
	case "torch._utils._rebuild_tensor_v2":
		return callableFunc(rebuildTensorV2), nil
	case "torch._utils._rebuild_tensor":
		return callableFunc(rebuildTensorV1), nil
	case "torch._utils._rebuild_parameter", "torch._utils._rebuild_parameter_with_state":
		return callableFunc(rebuildParameter), nil
	case "torch._tensor._rebuild_from_type_v2":
		return callableFunc(rebuildFromTypeV2), nil
	}
	if (module == "torch" || module == "torch.cuda") && strings.HasSuffix(name, "Storage") {
		return &storageClass{name: module + "." + name, dtype: storageDType(name)}, nil
	}
	return &opaqueClass{module: module, name: name}, nil
}

// rebuildTensorV2 is torch._utils._rebuild_tensor_v2(storage,
// storage_offset, size, stride, requires_grad, backward_hooks[, metadata]).
func rebuildTensorV2(args ...any) (any, error) {
	if len(args) < 4 || len(args) > 7 {
		return nil, fmt.Errorf("_rebuild_tensor_v2: got %d arguments, want 6 or 7", len(args))
	}
	return rebuildTensorV1(args[:4]...)
}

// rebuildTensorV1 is torch._utils._rebuild_tensor(storage, storage_offset,
// size, stride), used by PyTorch 0.3 legacy files.
func rebuildTensorV1(args ...any) (any, error) {
	if len(args) != 4 {
		return nil, fmt.Errorf("_rebuild_tensor: got %d arguments, want 4", len(args))
	}
	view, ok := args[0].(*storageView)
	if !ok {
		return nil, fmt.Errorf("_rebuild_tensor: first argument is %s, not a storage", describe(args[0]))
	}
	offset, ok := args[1].(int)
	if !ok || offset < 0 {
		return nil, fmt.Errorf("_rebuild_tensor: invalid storage offset %s", describe(args[1]))
	}
	shape, err := intTuple(args[2])
	if err != nil {
		return nil, fmt.Errorf("_rebuild_tensor: size: %w", err)
	}
	stride, err := intTuple(args[3])
	if err != nil {
		return nil, fmt.Errorf("_rebuild_tensor: stride: %w", err)
	}
	if len(stride) != len(shape) {
		return nil, fmt.Errorf("_rebuild_tensor: size %v and stride %v differ in length", shape, stride)
	}
	t := &tensorRef{view: view, offset: int64(offset), shape: make([]int, len(shape)), stride: make([]int64, len(stride))}
	for i := range shape {
		if shape[i] < 0 || stride[i] < 0 {
			return nil, fmt.Errorf("_rebuild_tensor: negative size or stride: size %v, stride %v", shape, stride)
		}
		t.shape[i] = shape[i]
		t.stride[i] = int64(stride[i])
	}
	return t, nil
}

// rebuildParameter is torch._utils._rebuild_parameter(data, requires_grad,
// backward_hooks[, state]): a Parameter is its data for our purposes.
func rebuildParameter(args ...any) (any, error) {
	if len(args) < 1 {
		return nil, fmt.Errorf("_rebuild_parameter: no arguments")
	}
	if _, ok := args[0].(*tensorRef); !ok {
		return nil, fmt.Errorf("_rebuild_parameter: data is %s, not a tensor", describe(args[0]))
	}
	return args[0], nil
}

// rebuildFromTypeV2 is torch._tensor._rebuild_from_type_v2(func, type,
// args, state), used for tensor subclasses: it calls func(*args).
func rebuildFromTypeV2(args ...any) (any, error) {
	if len(args) != 4 {
		return nil, fmt.Errorf("_rebuild_from_type_v2: got %d arguments, want 4", len(args))
	}
	fn, ok := args[0].(types.Callable)
	if !ok {
		return nil, fmt.Errorf("_rebuild_from_type_v2: %s is not callable", describe(args[0]))
	}
	inner, ok := args[2].(*types.Tuple)
	if !ok {
		return nil, fmt.Errorf("_rebuild_from_type_v2: arguments are %s, not a tuple", describe(args[2]))
	}
	return fn.Call(*inner...)
}

func intTuple(v any) ([]int, error) {
	t, ok := v.(*types.Tuple)
	if !ok {
		return nil, fmt.Errorf("%s is not a tuple", describe(v))
	}
	out := make([]int, t.Len())
	for i := range out {
		n, ok := t.Get(i).(int)
		if !ok {
			return nil, fmt.Errorf("element %d is %s, not an int", i, describe(t.Get(i)))
		}
		out[i] = n
	}
	return out, nil
}

// describe names the Python type of an unpickled value for error messages.
func describe(v any) string {
	switch x := v.(type) {
	case nil:
		return "None"
	case int, *big.Int:
		return fmt.Sprintf("int %v", x)
	case string:
		return fmt.Sprintf("str %q", x)
	case bool:
		return "bool"
	case float64:
		return "float"
	case *types.Tuple:
		return fmt.Sprintf("tuple of %d", x.Len())
	case *types.List:
		return "list"
	case *types.Dict, *types.OrderedDict:
		return "dict"
	case *tensorRef:
		return "tensor"
	case *storageView:
		return "storage"
	case *opaqueObject:
		return "object of " + x.String()
	case *opaqueClass:
		return x.String()
	}
	return fmt.Sprintf("%T", v)
}

// unpickle runs the unpickler, turning panics of the pickle library on
// malformed input into errors.
func unpickle(u *pickle.Unpickler) (v any, err error) {
	defer func() {
		if r := recover(); r != nil {
			v, err = nil, fmt.Errorf("malformed pickle: %v", r)
		}
	}()
	return u.Load()
}
