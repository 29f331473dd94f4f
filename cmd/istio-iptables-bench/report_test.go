package main

import (
	"bytes"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestMedian(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   []time.Duration
		want time.Duration
	}{
		{"empty", nil, 0},
		{"odd, unsorted", []time.Duration{5, 1, 3}, 3},
		{"even: mean of the middle two", []time.Duration{4, 1, 2, 10}, 3},
		{"one", []time.Duration{7}, 7},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := append([]time.Duration(nil), tc.in...)
			assert.Equal(t, tc.want, median(tc.in))
			assert.Equal(t, in, tc.in, "the input is not reordered")
		})
	}
}

func TestMedianOf(t *testing.T) {
	got := medianOf([]sample{{wall: 9, cpu: 1}, {wall: 1, cpu: 9}, {wall: 5, cpu: 4}})
	assert.Equal(t, medians{wall: 5, cpu: 4}, got, "wall and CPU are medians apart")
}

func TestMedianFloat(t *testing.T) {
	assert.Equal(t, 0.0, medianFloat(nil))
	assert.Equal(t, 2.0, medianFloat([]float64{3, 1, 2}))
	assert.Equal(t, 2.5, medianFloat([]float64{4, 1, 2, 3}))
}

func TestRatio(t *testing.T) {
	assert.Equal(t, 0.0, ratio(5, 0), "nothing measured is no ratio")
	assert.Equal(t, 1.5, ratio(3*time.Millisecond, 2*time.Millisecond))
}

func TestJudge(t *testing.T) {
	for _, tc := range []struct {
		name         string
		cs           []criterion
		want         string
		met, missing int
	}{
		{"no target", nil, "", 0, 0},
		{"at most, met at the limit", []criterion{{name: "ratio", figure: 1.5, limit: 1.5}}, "PASS", 1, 0},
		{"at most, missed", []criterion{{name: "ratio", figure: 1.51, limit: 1.5}}, "FAIL (ratio)", 0, 1},
		{"at least, met", []criterion{{name: "drop", figure: 0.95, limit: 0.9, min: true}}, "PASS", 1, 0},
		{"at least, missed", []criterion{{name: "drop", figure: 0.85, limit: 0.9, min: true}}, "FAIL (drop)", 0, 1},
		{"two, one missed", []criterion{{name: "ratio", figure: 0.9, limit: 1}, {name: "wall/CPU", figure: 2, limit: 1.3}},
			"FAIL (wall/CPU)", 1, 1},
		{"two, both missed", []criterion{{name: "ratio", figure: 2, limit: 1}, {name: "wall/CPU", figure: 2, limit: 1.3}},
			"FAIL (ratio, wall/CPU)", 0, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var ty tally
			assert.Equal(t, tc.want, ty.judge(tc.cs...))
			assert.Equal(t, tally{met: tc.met, missed: tc.missing}, ty)
		})
	}
}

func TestTallyString(t *testing.T) {
	assert.Equal(t, "bench: 3 targets met, 2 missed", tally{met: 3, missed: 2}.String())
}

func TestMarkdown(t *testing.T) {
	var b bytes.Buffer
	markdown(&b, "lrl", []string{"case", "wall", "result"}, [][]string{{"a|b", "1.25", "PASS"}, {"longer case", "10.00", "FAIL (ratio)"}})
	want := "" +
		"| case        |  wall | result       |\n" +
		"| ----------- | ----: | ------------ |\n" +
		"| a\\|b        |  1.25 | PASS         |\n" +
		"| longer case | 10.00 | FAIL (ratio) |\n"
	assert.Equal(t, want, b.String())
}

func TestThousands(t *testing.T) {
	for in, want := range map[int]string{0: "0", 10: "10", 999: "999", 1000: "1,000", 10000: "10,000", 1234567: "1,234,567", -5000: "-5,000"} {
		assert.Equal(t, want, thousands(in), "%d", in)
	}
}

func TestExcludedCIDRs(t *testing.T) {
	dst := netip.MustParsePrefix("192.0.2.0/24")
	for _, n := range []int{1, 10, 1000, 5000, 10000} {
		t.Run(thousands(n), func(t *testing.T) {
			s, err := excludedCIDRs(n)
			require.NoError(t, err)
			assert.Less(t, len(s), maxArg, "fits in one argument")
			items := strings.Split(s, ",")
			require.Len(t, items, n)
			seen := map[netip.Prefix]bool{}
			for _, it := range items {
				p, err := netip.ParsePrefix(it)
				require.NoError(t, err, it)
				assert.Equal(t, 24, p.Bits(), it)
				assert.Equal(t, p.Masked(), p, "%s is a network address", it)
				assert.False(t, p.Overlaps(dst), "%s holds the data path's destinations", it)
				assert.False(t, seen[p], "%s twice", it)
				seen[p] = true
			}
		})
	}
	_, err := excludedCIDRs(30000)
	assert.ErrorContains(t, err, "30000")
}
