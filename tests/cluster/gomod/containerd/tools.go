//go:build tools

// Package tools pins the container runtime of the local control plane's real node, which
// node.sh compiles: containerd (with its CRI plugin), its runc shim and ctr. It lives in a
// module of its own so that containerd resolves its own dependency versions, not the ones
// Kubernetes pulls in.
package tools

import (
	_ "github.com/containerd/containerd/v2/cmd/containerd"
	_ "github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2"
	_ "github.com/containerd/containerd/v2/cmd/ctr"
)
