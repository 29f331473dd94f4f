package main

import (
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mesh-init/istio-iptables/capture"
)

// TestReadmeListsEveryFlag keeps the README's flag table true: every flag,
// its short form and its variable must be in it.
func TestReadmeListsEveryFlag(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	require.NoError(t, err)
	text := string(readme)
	o := options{cfg: capture.DefaultConfig()}
	_, defs := newFlags(&o)
	require.NotEmpty(t, defs)
	for _, d := range defs {
		row := "| --" + d.long + " | " + d.env + " |"
		if d.short != "" {
			row = "| -" + d.short + " " + row
		}
		assert.True(t, strings.Contains(text, row), "README.md has no flag table row starting %q", row)
	}
	for _, f := range []string{"| -h | --help |", "| | --version |"} {
		assert.Contains(t, text, f)
	}
}
