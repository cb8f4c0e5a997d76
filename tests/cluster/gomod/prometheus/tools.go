//go:build tools

// Package tools pins the Prometheus server that tools.sh compiles for the step-gate tests and
// `make demo-checks`. Its own module, so that Prometheus resolves its own dependency versions.
package tools

import _ "github.com/prometheus/prometheus/cmd/prometheus"
