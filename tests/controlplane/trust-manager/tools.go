//go:build tools

// Package tools keeps trust-manager's command in this module's build list,
// so that `go mod tidy` records every module it needs in go.sum.
package tools

import _ "github.com/cert-manager/trust-manager/cmd/trust-manager"
