// The package's code needs the cuda build tag; this file keeps the package
// visible to untagged builds and tests (build_test.go checks the tagged
// build).

package cudrv
