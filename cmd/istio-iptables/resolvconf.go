package main

import (
	"net/netip"
	"path/filepath"
	"regexp"
	"strings"
)

// procNetns matches /proc/PID/ns/net (and /proc/self/..., task paths).
var procNetns = regexp.MustCompile(`^(/proc/[^/]+(?:/task/[0-9]+)?/)ns/net$`)

// resolvConfPath is the resolv.conf a process in the namespace at netns
// reads ("" the current one): for /proc/PID/ns/net, that process's own
// /etc/resolv.conf (through /proc/PID/root, the pod's file in a CNI call);
// for a named namespace, what `ip netns exec NAME` shows:
// /etc/netns/NAME/resolv.conf when it exists, else /etc/resolv.conf.
func resolvConfPath(netns string, exists func(string) bool) string {
	if m := procNetns.FindStringSubmatch(netns); m != nil {
		return m[1] + "root/etc/resolv.conf"
	}
	if netns != "" {
		if p := filepath.Join("/etc/netns", filepath.Base(netns), "resolv.conf"); exists(p) {
			return p
		}
	}
	return "/etc/resolv.conf"
}

// parseResolvConf returns the addresses of the nameserver lines, in
// order, and the nameserver values that cannot be captured (a link-local
// address with a zone, a name, garbage). Comment lines start with # or ;.
func parseResolvConf(text string) (servers, skipped []string) {
	for _, line := range strings.Split(text, "\n") {
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
			skipped = append(skipped, f[1])
			continue
		}
		servers = append(servers, a.Unmap().String())
	}
	return servers, skipped
}
