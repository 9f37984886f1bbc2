//go:build !amd64 || purego

package cpu

// hostFeatures is empty: only the portable code path exists here.
var hostFeatures = features{}
