package kernels

// DeviceMemoryReporter is an optional extension of [Memory] for backends
// whose tensors live in device memory of their own (the CUDA backend). It
// reports what the backend's allocator holds, not the device's total use
// (the driver's context and other processes are not counted); it is
// cheap enough to call from a metrics callback.
type DeviceMemoryReporter interface {
	// DeviceMemory returns the bytes held for live tensors (inUse) and
	// for freed tensors kept in the allocator's pool for reuse (pooled).
	DeviceMemory() (inUse, pooled int64)
}
