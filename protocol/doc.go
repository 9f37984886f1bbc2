// Package protocol holds the wire types and paths that the control plane and
// its workers share. It carries no behaviour beyond shape checks, and imports
// neither side: control and worker agree only through this package.
//
// The worker contract of the deployed fleet (the seed) is fixed here: the
// heartbeat path and its body {"status","provider","gpu_class","worker_type"}
// must keep working for workers that send nothing else.
package protocol
