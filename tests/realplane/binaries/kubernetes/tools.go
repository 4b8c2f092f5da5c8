//go:build tools

// Package tools names the commands of k8s.io/kubernetes this module builds, so that `go mod
// tidy` keeps their whole dependency graph in go.mod and go.sum.
//
// k8s.io/kubernetes cannot be built with a plain `go install`: its go.mod replaces every
// k8s.io staging module with ./staging, which the module archive does not contain. This module
// requires it and replaces each staging module with its published v0.34.x release instead.
package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
