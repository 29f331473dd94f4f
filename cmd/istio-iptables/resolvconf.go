package main

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/netip"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/spf13/pflag"

	"github.com/mesh-init/istio-iptables/podfs"
)

// note is a log record the command writes once its logger exists. Values
// from flags, variables and pod files go in args, never in msg: slog's
// text handler quotes them, so no value can forge a record.
type note struct {
	level slog.Level
	msg   string
	args  []any
}

// procDir returns "/proc/PID/" (or "/proc/PID/task/TID/") when netns is
// /proc/PID/ns/net (or /proc/PID/task/TID/ns/net), else "". PID may be
// self.
func procDir(netns string) string {
	rest, ok := strings.CutPrefix(netns, "/proc/")
	if !ok {
		return ""
	}
	rest, ok = strings.CutSuffix(rest, "/ns/net")
	if !ok {
		return ""
	}
	parts := strings.Split(rest, "/")
	switch {
	case len(parts) == 1 && parts[0] != "":
	case len(parts) == 3 && parts[0] != "" && parts[1] == "task" && parts[2] != "" && strings.Trim(parts[2], "0123456789") == "":
	default:
		return ""
	}
	if parts[0] != "self" && strings.Trim(parts[0], "0123456789") != "" {
		return ""
	}
	return "/proc/" + rest + "/"
}

// fileInRoot is a file read through podfs: Name resolved inside Root.
type fileInRoot struct{ root, name string }

func (f fileInRoot) String() string { return filepath.Join(f.root, f.name) }

// resolvConfSources are the resolv.conf a process in the namespace at
// netns ("" the current one) reads, in order, each tried only when the
// one before does not exist: for /proc/PID/ns/net, that process's own
// /etc/resolv.conf inside its root /proc/PID/root (the pod's file in a
// CNI call); for a named namespace, what `ip netns exec NAME` shows:
// resolv.conf inside /etc/netns/NAME, else /etc/resolv.conf.
func resolvConfSources(netns string) []fileInRoot {
	if dir := procDir(netns); dir != "" {
		return []fileInRoot{{dir + "root", "etc/resolv.conf"}}
	}
	var out []fileInRoot
	if name := filepath.Base(netns); netns != "" && name != "." && name != ".." && name != "/" {
		out = append(out, fileInRoot{filepath.Join("/etc/netns", name), "resolv.conf"})
	}
	return append(out, fileInRoot{"/", "etc/resolv.conf"})
}

// readResolvConf returns the nameservers of the namespace's resolv.conf
// and what the log should say. A file that does not exist, that podfs
// refuses (a symlink out of the root, a FIFO, a device, a directory,
// more than 64 KiB) or that is not text gives no server and a warning
// naming the path and the reason. Nothing from the file is logged but
// the addresses accepted.
func readResolvConf(netns string) ([]string, []note) {
	sources := resolvConfSources(netns)
	for i, src := range sources {
		b, err := podfs.ReadFile(src.root, src.name, podfs.MaxResolvConf)
		if errors.Is(err, fs.ErrNotExist) && i < len(sources)-1 {
			continue
		}
		if err == nil {
			var servers []string
			var skipped []int
			if servers, skipped, err = parseResolvConf(b); err == nil {
				notes := []note{{slog.LevelInfo, "DNS servers from resolv.conf", []any{"path", src.String(), "servers", strings.Join(servers, ",")}}}
				if len(skipped) > 0 {
					notes = append(notes, note{slog.LevelWarn, "resolv.conf names DNS servers that cannot be captured (a name, a zone, not an address); left out",
						[]any{"path", src.String(), "lines", joinInts(skipped)}})
				}
				return servers, notes
			}
			err = fmt.Errorf("parse %s: %w", src, err)
		}
		return nil, []note{{slog.LevelWarn, "resolv.conf not used: no DNS server is known from it", []any{"path", src.String(), "reason", err.Error()}}}
	}
	return nil, nil // not reached: the last source always returns
}

// errNotText: resolv.conf must be text.
var errNotText = errors.New("not a text file")

// parseResolvConf returns the addresses of the nameserver lines, in
// order, without repeats, and the numbers of the nameserver lines whose
// value cannot be captured (a link-local address with a zone, a name,
// garbage). Comment lines start with # or ;. Strict: a NUL byte, invalid
// UTF-8 or a control character other than tab (and CR before a newline)
// refuses the whole file, and the error quotes nothing from it.
func parseResolvConf(b []byte) (servers []string, skipped []int, err error) {
	switch {
	case bytes.IndexByte(b, 0) >= 0:
		return nil, nil, fmt.Errorf("%w: it holds a NUL byte", errNotText)
	case !utf8.Valid(b):
		return nil, nil, fmt.Errorf("%w: it is not UTF-8", errNotText)
	}
	for i, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSuffix(line, "\r")
		if strings.ContainsFunc(line, func(r rune) bool { return (r < 0x20 && r != '\t') || r == 0x7f }) {
			return nil, nil, fmt.Errorf("%w: line %d holds a control character", errNotText, i+1)
		}
		line = strings.TrimSpace(line)
		if line == "" || line[0] == '#' || line[0] == ';' {
			continue
		}
		f := strings.Fields(line)
		if f[0] != "nameserver" || len(f) < 2 {
			continue
		}
		a, err := netip.ParseAddr(f[1])
		if err != nil || a.Zone() != "" || a.IsUnspecified() {
			skipped = append(skipped, i+1)
			continue
		}
		if s := a.Unmap().String(); !slices.Contains(servers, s) {
			servers = append(servers, s)
		}
	}
	return servers, skipped, nil
}

func joinInts(n []int) string {
	s := make([]string, len(n))
	for i, v := range n {
		s[i] = strconv.Itoa(v)
	}
	return strings.Join(s, ",")
}

// fillDNSServers reads the namespace's resolv.conf into --dns-servers
// when DNS capture is asked for, not for every server, and neither the
// flag nor DNS_SERVERS is given. It returns what the log should say.
func fillDNSServers(o *options, fs *pflag.FlagSet, fromEnv map[string]string) []note {
	on, err := strconv.ParseBool(strings.TrimSpace(o.cfg.RedirectDNS))
	all, _ := strconv.ParseBool(strings.TrimSpace(o.cfg.CaptureAllDNS))
	if _, ok := fromEnv["--dns-servers"]; ok || fs.Changed("dns-servers") || err != nil || !on || all || o.cleanupOnly {
		return nil // given, not needed, or a bad value Validate reports
	}
	o.cfg.DNSServersFromResolvConf = true
	servers, notes := readResolvConf(o.netns)
	o.cfg.DNSServers = strings.Join(servers, ",")
	return notes
}
