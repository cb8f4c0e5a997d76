//go:build tools

// Package tools pins the helm CLI that tools.sh compiles (the chart's lint, template and install
// tests). Its own module, so that helm resolves its own dependency versions.
package tools

import _ "helm.sh/helm/v4/cmd/helm"
