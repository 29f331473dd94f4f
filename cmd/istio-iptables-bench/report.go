package main

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"time"
)

// sample is one timed run: its wall time from start to exit and, for a
// process, the user+sys CPU time the kernel charged to it (zero when not
// measured).
type sample struct {
	wall, cpu time.Duration
}

// medians are the medians of a series of samples, wall and CPU apart.
type medians struct {
	wall, cpu time.Duration
}

func medianOf(ss []sample) medians {
	var walls, cpus []time.Duration
	for _, s := range ss {
		walls = append(walls, s.wall)
		cpus = append(cpus, s.cpu)
	}
	return medians{median(walls), median(cpus)}
}

func median(ds []time.Duration) time.Duration { return middle(ds) }

func medianFloat(xs []float64) float64 { return middle(xs) }

// middle is the median of xs (0 for none), the mean of the middle two
// for an even count.
func middle[T time.Duration | float64](xs []T) T {
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// thousands spells n with thousands separators: 10,000.
func thousands(n int) string {
	s := fmt.Sprint(n)
	if n < 0 {
		return "-" + thousands(-n)
	}
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}

// ratio is a/b, 0 when b is 0 (nothing measured).
func ratio(a, b time.Duration) float64 {
	if b == 0 {
		return 0
	}
	return float64(a) / float64(b)
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2f", float64(d.Microseconds())/1000) }

// criterion is one speed target: the figure, the limit it must not pass
// (at most, or at least when min is set), and its short name for the
// result cell.
type criterion struct {
	name   string
	figure float64
	limit  float64
	min    bool
}

func (c criterion) met() bool {
	if c.min {
		return c.figure >= c.limit
	}
	return c.figure <= c.limit
}

// tally counts the targets met and missed over the whole run.
type tally struct{ met, missed int }

// judge counts each criterion and returns the result cell of a row: "PASS"
// when every criterion holds, else "FAIL" with the ones that missed, and
// "" for a row with no target.
func (t *tally) judge(cs ...criterion) string {
	if len(cs) == 0 {
		return ""
	}
	var missed []string
	for _, c := range cs {
		if c.met() {
			t.met++
		} else {
			t.missed++
			missed = append(missed, c.name)
		}
	}
	if len(missed) == 0 {
		return "PASS"
	}
	return "FAIL (" + strings.Join(missed, ", ") + ")"
}

func (t tally) String() string {
	return fmt.Sprintf("bench: %d targets met, %d missed", t.met, t.missed)
}

// markdown writes a pipe table, column i left-aligned when align[i] is
// 'l' and right-aligned otherwise (figures), every column padded to its
// widest cell so that the text reads as a table too. A "|" in a cell is
// escaped.
func markdown(w io.Writer, align string, header []string, rows [][]string) {
	left := func(i int) bool { return i < len(align) && align[i] == 'l' }
	width := make([]int, len(header))
	esc := func(s string) string { return strings.ReplaceAll(s, "|", `\|`) }
	for i, h := range header {
		width[i] = max(len(esc(h)), 4)
	}
	for _, r := range rows {
		for i, c := range r {
			width[i] = max(width[i], len(esc(c)))
		}
	}
	line := func(cells []string) {
		var b strings.Builder
		b.WriteString("|")
		for i := range header {
			c := ""
			if i < len(cells) {
				c = esc(cells[i])
			}
			if left(i) {
				fmt.Fprintf(&b, " %-*s |", width[i], c)
			} else {
				fmt.Fprintf(&b, " %*s |", width[i], c)
			}
		}
		fmt.Fprintln(w, b.String())
	}
	line(header)
	var b strings.Builder
	b.WriteString("|")
	for i := range header {
		if left(i) {
			b.WriteString(" " + strings.Repeat("-", width[i]) + " |")
		} else {
			b.WriteString(" " + strings.Repeat("-", width[i]-1) + ": |")
		}
	}
	fmt.Fprintln(w, b.String())
	for _, r := range rows {
		line(r)
	}
}

// maxArg is the longest single argument or environment string execve
// takes (MAX_ARG_STRLEN, 32 pages).
const maxArg = 32 * 4096

// excludedCIDRs is n distinct /24s, comma-joined, all inside 1.0.0.0/8
// (so none holds the data path's destinations in 192.0.2.0/24), spelled
// short so that 10,000 of them fit in one argument.
func excludedCIDRs(n int) (string, error) {
	if n > 256*100 {
		return "", fmt.Errorf("excluded CIDRs: %d is more than the 25,600 /24s this spelling has", n)
	}
	items := make([]string, 0, n)
	for i := range n {
		items = append(items, fmt.Sprintf("1.%d.%d.0/24", i/100, i%100))
	}
	s := strings.Join(items, ",")
	if len(s) >= maxArg {
		return "", fmt.Errorf("excluded CIDRs: %d of them take %d bytes, more than the %d one argument may", n, len(s), maxArg-1)
	}
	return s, nil
}
