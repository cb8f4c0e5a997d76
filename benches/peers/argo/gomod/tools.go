//go:build tools

// Package tools pins Argo Rollouts' controller command, which build.sh compiles.
package tools

import (
	_ "github.com/argoproj/argo-rollouts/cmd/rollouts-controller"
)
