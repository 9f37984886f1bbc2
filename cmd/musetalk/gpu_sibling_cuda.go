//go:build cuda

package main

import "github.com/urfave/cli/v2"

// The CUDA build is the sibling itself: its cuda device is its own (see
// device_cuda.go), so it has no sibling to hand off to.

func handOffToGPU([]string, func(string) string) *siblingProbe { return nil }

func siblingDevices(*cli.Context) []device { return nil }

const siblingKey = "cuda-sibling"

type siblingProbe struct{}
