// Package face detects faces (S3FD) and parses them into regions (BiSeNet)
// around the networks of musetalk/model.
package face
