//go:build tools

// Package tools pins the Kubernetes commands that build.sh compiles: the control plane, kubectl
// and the kubelet of the real node.
// k8s.io/kubernetes cannot be `go install`ed (its go.mod replaces the staging modules with
// local paths), so this wrapper module maps every staging module to its published version.
package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubectl"
	_ "k8s.io/kubernetes/cmd/kubelet"
)
