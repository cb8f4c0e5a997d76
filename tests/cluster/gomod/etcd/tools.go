//go:build tools

// Package tools pins the etcd server that build.sh compiles. It lives in its own module so
// that etcd resolves its own dependency versions, not the newer ones Kubernetes pulls in.
package tools

import _ "go.etcd.io/etcd/server/v3"
