//go:build linux

package main

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
)

func TestDataPathFigures(t *testing.T) {
	base := &dpCase{ok: 1000, cpu: 20 * time.Millisecond, rates: []float64{100, 200, 300}}
	for _, tc := range []struct {
		name             string
		c                *dpCase
		rate, rel, cheap float64
	}{
		{"same", &dpCase{ok: 1000, cpu: 20 * time.Millisecond, rates: []float64{100, 200, 300}}, 200, 1, 1},
		{"half as fast, twice the CPU", &dpCase{ok: 500, cpu: 20 * time.Millisecond, rates: []float64{50, 100, 150}}, 100, 0.5, 0.5},
		{"rounds paired, not medians divided", &dpCase{ok: 1000, cpu: 10 * time.Millisecond, rates: []float64{300, 100, 600}}, 300, 2, 2},
		{"nothing connected", &dpCase{rates: []float64{0, 0, 0}}, 0, 0, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			assert.InDelta(t, tc.rate, tc.c.rate(), 1e-9)
			assert.InDelta(t, tc.rel, tc.c.relative(base), 1e-9)
			assert.InDelta(t, tc.cheap, tc.c.cheaper(base), 1e-9)
		})
	}
	assert.Equal(t, "-5.0%", percent(0.95))
	assert.Equal(t, "+12.5%", percent(1.125))
	assert.Equal(t, "17.5", (&dpCase{ok: 2, cpu: 35 * time.Microsecond}).cpuPerConn())
	assert.Equal(t, "–", (&dpCase{}).cpuPerConn())
}
