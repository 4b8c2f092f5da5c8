//go:build tools

// Package tools names the kwok command this module builds, so that `go mod tidy` keeps its
// dependency graph in go.mod and go.sum.
package tools

import _ "sigs.k8s.io/kwok/cmd/kwok"
