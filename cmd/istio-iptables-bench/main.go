//go:build linux

// Command istio-iptables-bench says, in one run, whether istio-iptables
// meets issue 19's speed targets, and prints the figures as markdown pipe
// tables that paste into docs/performance.md as they are.
//
// Every apply is compared with the floor: one bare iptables-nft-restore
// --noflush of the same rules (per family). Tool and floor runs alternate
// in the same loop (tool, floor, tool, floor, ...), each in a fresh network
// namespace the bench creates and deletes, each process forked from an OS
// thread switched into that namespace (as kubelet starts an initContainer,
// already inside the pod's namespace), so load drifts hit both and no `ip
// netns exec` is counted. Figures are medians over -runs pairs; ratios are
// ratios of medians. The tool's CPU time (user+sys of the child) gives
// wall/CPU: a run that sleeps on acks has a wall far above its CPU time.
//
// The data path counts new outbound TCP connections per second through
// REDIRECT with 10 to 10,000 excluded CIDRs on both backends: all of it
// inside a namespace, from client threads switched into it to a listener
// on 127.0.0.1:15001 there.
//
// It needs root and the iptables binaries. It never touches the namespace
// it runs in: every namespace it makes is deleted, on failure and on
// SIGINT/SIGTERM too. Targets are reported, never asserted: the exit code
// is 0 whether they are met or not, 1 when the bench itself fails.
//
// Usage: istio-iptables-bench -bin bin/istio-iptables [-runs 30] [-conn-time 2s] [-sections apply,scale,datapath]
package main

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

var (
	bin        = flag.String("bin", "bin/istio-iptables", "istio-iptables binary to measure")
	runs       = flag.Int("runs", 30, "tool/floor pairs per row (medians are printed)")
	connTime   = flag.Duration("conn-time", 2*time.Second, "data path: time spent connecting per case")
	connRounds = flag.Int("conn-rounds", 20, "data path: rounds the -conn-time is split into, the cases alternating within each round")
	clients    = flag.Int("clients", 2*runtime.NumCPU(), "data path: client threads connecting at once")
	sections   = flag.String("sections", "apply,scale,datapath", "comma list of the tables to measure")
)

func main() {
	flag.Parse()
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "istio-iptables-bench needs root: it creates network namespaces")
		os.Exit(2)
	}
	if *runs < 1 || *connRounds < 1 || *clients < 1 || *connTime <= 0 {
		fmt.Fprintln(os.Stderr, "istio-iptables-bench: -runs, -conn-rounds, -clients and -conn-time must be positive")
		os.Exit(2)
	}
	abs, err := filepath.Abs(*bin)
	if err != nil {
		fail(fmt.Errorf("resolve -bin %s: %w", *bin, err))
	}
	*bin = abs
	lock := filepath.Join(os.TempDir(), fmt.Sprintf("ii-bench-%d.lock", os.Getpid()))
	os.Setenv("XTABLES_LOCKFILE", lock)
	defer os.Remove(lock)

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		s := <-sig
		cleanupAll()
		os.Remove(lock)
		fmt.Fprintln(os.Stderr, "istio-iptables-bench: stopped by", s)
		os.Exit(130)
	}()

	want := map[string]bool{}
	for _, s := range strings.Split(*sections, ",") {
		want[strings.TrimSpace(s)] = true
	}
	start := time.Now()
	header()
	var t tally
	if want["apply"] {
		applySection(&t)
	}
	if want["scale"] {
		scaleSection()
	}
	if want["datapath"] {
		if err := dataPathSection(&t); err != nil {
			fail(err)
		}
	}
	cleanupAll()
	fmt.Fprintf(os.Stderr, "istio-iptables-bench: took %s\n", time.Since(start).Round(time.Second))
	fmt.Println()
	fmt.Println(t)
}

// fail removes every namespace left and exits 1: the bench itself failed
// (targets missed are no failure).
func fail(err error) {
	cleanupAll()
	fmt.Fprintln(os.Stderr, "istio-iptables-bench:", err)
	os.Exit(1)
}

// header prints what the figures depend on: date, kernel, iptables
// version, CPUs, runs.
func header() {
	var uts unix.Utsname
	kernel := "unknown"
	if err := unix.Uname(&uts); err == nil {
		kernel = unix.ByteSliceToString(uts.Release[:])
	}
	ipt := "unknown"
	if out, err := exec.Command("iptables-nft-restore", "--version").Output(); err == nil {
		ipt = strings.TrimSpace(string(out))
	}
	fmt.Printf("## make bench, %s\n\n", time.Now().UTC().Format("2006-01-02 15:04 UTC"))
	fmt.Printf("Kernel %s, %s, %d CPUs, -runs %d: medians of %d tool/floor pairs, alternating, each run in a fresh namespace. "+
		"Floor: a bare iptables-nft-restore --noflush of the same rules, started the same way. Times in ms.\n\n",
		kernel, ipt, runtime.NumCPU(), *runs, *runs)
}

// progress tells stderr what is being measured (stdout is the table).
func progress(format string, a ...any) {
	fmt.Fprintf(os.Stderr, "istio-iptables-bench: "+format+"\n", a...)
}
