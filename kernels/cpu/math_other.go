//go:build !amd64 || purego

package cpu

// The vector elementwise loops do not exist here; no kernel sets avx512,
// so these are never called.

func siluVec(d, s []float32)                            { panic("cpu: no vector math") }
func sigmoidVec(d, s []float32)                         { panic("cpu: no vector math") }
func geluVec(d, s []float32)                            { panic("cpu: no vector math") }
func gegluVec(d, h, gate []float32)                     { panic("cpu: no vector math") }
func expShiftVec(d, s []float32, shift float32) float32 { panic("cpu: no vector math") }

func sumVec(x []float32) float64                                      { panic("cpu: no vector math") }
func sumSqDevVec(x []float32, mean float64) float64                   { panic("cpu: no vector math") }
func affineVec(d, s []float32, mean, scale, shift float32, silu bool) { panic("cpu: no vector math") }
func softmaxVec(d, s []float32)                                       { panic("cpu: no vector math") }
func scaleVec(d, s []float32, v float32)                              { panic("cpu: no vector math") }
