package main

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
)

// results collects every run's figures.
type results struct {
	systems []string                        // in table order
	values  map[string]map[string][]float64 // system → column → one value per run
	failed  map[string]map[string]bool      // system → column → some run failed
	errs    []string
}

func newResults(systems []system) *results {
	r := &results{values: map[string]map[string][]float64{}, failed: map[string]map[string]bool{}}
	for _, s := range systems {
		r.systems = append(r.systems, s.name())
		r.values[s.name()] = map[string][]float64{}
		r.failed[s.name()] = map[string]bool{}
	}
	return r
}

func (r *results) add(sys string, m metrics) {
	for col, v := range m {
		r.values[sys][col] = append(r.values[sys][col], v)
	}
}

func (r *results) fail(sys string, sc scenario, run int, err error) {
	for _, col := range columns {
		if strings.HasPrefix(col, "("+sc.id+")") {
			r.failed[sys][col] = true
		}
	}
	r.errs = append(r.errs, fmt.Sprintf("run %d: %s (%s): %v", run, sys, sc.id, err))
}

// median returns the median of a figure's runs, and whether there is one.
func (r *results) median(sys, col string) (float64, bool) {
	vs := slices.Clone(r.values[sys][col])
	if len(vs) == 0 || r.failed[sys][col] {
		return 0, false
	}
	slices.Sort(vs)
	if len(vs)%2 == 1 {
		return vs[len(vs)/2], true
	}
	return (vs[len(vs)/2-1] + vs[len(vs)/2]) / 2, true
}

func format(col string, v float64) string {
	switch col {
	case colCalls:
		return fmt.Sprintf("%.0f", v)
	default:
		return fmt.Sprintf("%.1f", v)
	}
}

// printTable prints systems × columns, each cell the median of the runs;
// "ERR" where a run failed, "-" where nothing was measured.
func (r *results) printTable(w io.Writer) {
	r.printCells(w, func(sys, col string) (string, bool) {
		v, ok := r.median(sys, col)
		return format(col, v), ok
	})
}

// printSpread prints, for each figure, how far apart its runs were: the
// largest over the smallest, minus one, in percent.
func (r *results) printSpread(w io.Writer) {
	r.printCells(w, func(sys, col string) (string, bool) {
		vs := r.values[sys][col]
		if len(vs) == 0 || r.failed[sys][col] {
			return "", false
		}
		lo, hi := slices.Min(vs), slices.Max(vs)
		if lo <= 0 {
			return "?", true
		}
		return fmt.Sprintf("%.0f%%", (hi/lo-1)*100), true
	})
}

func (r *results) printCells(w io.Writer, cell func(sys, col string) (string, bool)) {
	var cols []string
	for _, col := range columns {
		for _, sys := range r.systems {
			if len(r.values[sys][col]) > 0 || r.failed[sys][col] {
				cols = append(cols, col)
				break
			}
		}
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "system\t%s\t\n", strings.Join(cols, "\t"))
	for _, sys := range r.systems {
		cells := []string{sys}
		for _, col := range cols {
			switch v, ok := cell(sys, col); {
			case ok:
				cells = append(cells, v)
			case r.failed[sys][col]:
				cells = append(cells, "ERR")
			default:
				cells = append(cells, "-")
			}
		}
		fmt.Fprintf(tw, "%s\t\n", strings.Join(cells, "\t"))
	}
	tw.Flush()
}

// A target is a ratio of two systems' figures that bokbok aims for.
type target struct {
	label    string
	num, den string // systems
	col      string
	atMost   bool // the ratio must be <= want, else >= want
	want     float64
	info     bool // for information: shown against want, never a miss
}

var targets = []target{
	{"(b) insecure", "bokbok", "netrpc", colCalls, false, 2.0, false},
	{"(b) insecure", "bokbok", "grpc", colCalls, false, 3.5, false},
	{"(b) insecure", "bokbok", "raw", colCalls, false, 0.7, false},
	{"(b) generated", "bokbok-msgp", "raw", colCalls, false, 0.8, false},
	{"(b) secure", "bokbok-secure", "bokbok", colCalls, false, 0.85, false},
	{"(a) p50", "bokbok", "raw", colP50, true, 1.10, false},
	{"(c) 1 MiB zero-copy", "bokbok-bulk", "netrpc", colMBps, false, 1.5, false},
	{"(c) 1 MiB insecure", "bokbok", "netrpc", colMBps, false, 1.0, false},
	{"(c) 1 MiB secure", "bokbok-secure", "raw-secretbox", colMBps, false, 0.8, false},
	{"(d) memory", "bokbok", "raw", colMem, true, 1.2, false},
	// (e) is for information: four 1 MiB callers keep both cores of the
	// recorded machine busy, so there every system's small calls wait
	// for a CPU. (f), with one large caller, is the target.
	{"(e) small-call p99", "bokbok", "netrpc", colHOLp99, true, 0.25, true},
	{"(f) small-call p99", "bokbok", "netrpc", colHugeP99, true, 0.25, false},
	{"(f) small-call p99", "bokbok-rcvbuf", "netrpc", colHugeP99, true, 0.25, false},
	{"(c) 1 MiB, 256 KiB socket buffer", "bokbok-rcvbuf", "netrpc", colMBps, false, 1.0, false},
	// The method-routing API against the plain Call and Handler: within
	// 10% with two pass-through interceptors and middlewares, within 5%
	// with none.
	{"(a) mux", "bokbok-mux", "bokbok", colP50, true, 1.10, false},
	{"(b) mux", "bokbok-mux", "bokbok", colCalls, false, 0.90, false},
	{"(a) mux bare", "bokbok-mux-bare", "bokbok", colP50, true, 1.05, false},
	{"(b) mux bare", "bokbok-mux-bare", "bokbok", colCalls, false, 0.95, false},
	{"(a) mux secure", "bokbok-mux-secure", "bokbok-secure", colP50, true, 1.10, false},
	{"(b) mux secure", "bokbok-mux-secure", "bokbok-secure", colCalls, false, 0.90, false},
}

// printRatios prints each target's ratio of medians with PASS or MISS
// (info for a target given for information), or n/a when either figure
// is missing. It returns how many missed.
func (r *results) printRatios(w io.Writer) int {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	missed := 0
	for _, t := range targets {
		op := ">="
		if t.atMost {
			op = "<="
		}
		ratio := fmt.Sprintf("%s / %s %s", t.num, t.den, t.col[4:])
		n, okN := r.median(t.num, t.col)
		d, okD := r.median(t.den, t.col)
		if !okN || !okD || d == 0 {
			fmt.Fprintf(tw, "%s\t%s\t= n/a\ttarget %s %.2f\t-\n", t.label, ratio, op, t.want)
			continue
		}
		v := n / d
		verdict := "PASS"
		switch {
		case t.info:
			verdict = "info"
		case (t.atMost && v > t.want) || (!t.atMost && v < t.want):
			verdict = "MISS"
			missed++
		}
		fmt.Fprintf(tw, "%s\t%s\t= %.2f\ttarget %s %.2f\t%s\n", t.label, ratio, v, op, t.want, verdict)
	}
	tw.Flush()
	return missed
}
