package cni

import (
	"log/slog"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mesh-init/istio-iptables/capture"
	"github.com/mesh-init/istio-iptables/iptables"
)

func TestParseConf(t *testing.T) {
	defaults := capture.DefaultConfig()
	for _, tc := range []struct {
		name string
		conf string
		want func(s *Settings)
		errs []string
	}{
		{name: "empty entry: the command's defaults", conf: `{"cniVersion":"1.0.0","type":"istio-iptables-cni"}`},
		{
			name: "every kind of value",
			conf: `{"cniVersion":"1.1.0","type":"istio-iptables-cni",
				"capture":{"envoy-port":15001,"istio-inbound-ports":"*","istio-local-exclude-ports":[15090,"15021",15020],
					"istio-service-cidr":"*","redirect-dns":true,"dns-servers":["10.96.0.10"],"iptables-mode":"legacy"},
				"excludeNamespaces":["kube-system","istio-system"],
				"kubernetes":{"kubeconfig":"/etc/cni/net.d/k","proxyContainer":"envoy","timeout":"2s"},
				"lockWait":"3s","timeout":"9s","logLevel":"debug"}`,
			want: func(s *Settings) {
				s.Capture.ProxyPort = "15001"
				s.Capture.InboundPortsInclude = "*"
				s.Capture.InboundPortsExclude = "15090,15021,15020"
				s.Capture.OutboundIPRangesInclude = "*"
				s.Capture.RedirectDNS = "true"
				s.Capture.DNSServers = "10.96.0.10"
				s.Backend = iptables.BackendLegacy
				s.ExcludeNamespaces = []string{"kube-system", "istio-system"}
				s.Kubeconfig, s.ProxyContainer, s.APITimeout = "/etc/cni/net.d/k", "envoy", 2*time.Second
				s.LockWait, s.Timeout, s.LogLevel = 3*time.Second, 9*time.Second, slog.LevelDebug
			},
		},
		{
			name: "native-nftables wins over iptables-mode",
			conf: `{"type":"istio-iptables-cni","capture":{"native-nftables":"true","iptables-mode":"nft"}}`,
			want: func(s *Settings) { s.Backend = iptables.BackendNative },
		},
		{
			name: "every problem at once, each naming its key",
			conf: `{"type":"istio-iptables-cni","capture":{"envoy-port":"70000","istio-inbound-ports":"x","ipv6":"maybe","bogus":"1","iptables-mode":"native","native-nftables":"yes"},
				"kubernetes":{"timeout":"forever"},"lockWait":"-1s","logLevel":"loud","excludeNamespaces":[""]}`,
			errs: []string{
				`capture.envoy-port: port "70000" out of range 1-65535`,
				`capture.istio-inbound-ports: port "x" is not a number`,
				`capture.ipv6: "maybe" is not auto, true or false`,
				"capture.bogus: unknown key",
				`capture.iptables-mode: "native" is not auto, nft or legacy`,
				`capture.native-nftables: "yes" is not true or false`,
				`kubernetes.timeout: "forever" is not a duration`,
				`lockWait: "-1s" is not a duration`,
				`logLevel: "loud" is not debug, info, warn or error`,
				"excludeNamespaces: an empty name",
			},
		},
		{name: "timeout below lockWait", conf: `{"type":"istio-iptables-cni","lockWait":"30s","timeout":"5s"}`, errs: []string{"timeout: 5s is shorter than lockWait 30s"}},
		{name: "a nested list", conf: `{"type":"istio-iptables-cni","capture":{"envoy-port":[[1]]}}`, errs: []string{"parse the network configuration"}},
		{name: "not JSON", conf: `{`, errs: []string{"parse the network configuration"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, got, err := ParseConf([]byte(tc.conf))
			if len(tc.errs) > 0 {
				require.Error(t, err)
				for _, e := range tc.errs {
					assert.Contains(t, err.Error(), e)
				}
				return
			}
			require.NoError(t, err)
			want := Settings{Capture: defaults, Backend: iptables.BackendAuto, ProxyContainer: DefaultProxyContainer,
				APITimeout: DefaultAPITimeout, LockWait: DefaultLockWait, Timeout: DefaultTimeout, LogLevel: slog.LevelInfo}
			if tc.want != nil {
				tc.want(&want)
			}
			assert.Equal(t, want, got)
		})
	}
}

// TestOptionsCoverConfig: every string field of capture.Config that a
// flag sets has a key, and no two keys set the same field.
func TestOptionsCoverConfig(t *testing.T) {
	seen := map[*string]string{}
	var c capture.Config
	for _, o := range Options {
		if o.field == nil {
			continue
		}
		p := o.field(&c)
		_, dup := seen[p]
		require.False(t, dup, "%s and %s set the same field", o.Key, seen[p])
		seen[p] = o.Key
	}
	// The command's validation flags are the pod's istio-validation
	// container's, not the plugin's.
	notKeys := []*string{&c.RunValidation, &c.SkipRuleApply, &c.ProbePort, &c.ProbeTimeout}
	for _, p := range notKeys {
		_, ok := seen[p]
		assert.False(t, ok)
	}
	assert.Len(t, seen, 25, "keys of capture.Config fields")
}
