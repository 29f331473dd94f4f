package cni

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mesh-init/istio-iptables/capture"
)

func nodeSettings(t *testing.T) Settings {
	t.Helper()
	_, s, err := ParseConf([]byte(`{"type":"istio-iptables-cni","capture":{"istio-service-cidr":"*","istio-inbound-ports":"*","inbound-capture-port":"15006","istio-local-exclude-ports":"15090,15021,15020"},"excludeNamespaces":["kube-system"],"kubernetes":{"kubeconfig":"/k"}}`))
	require.NoError(t, err)
	return s
}

func TestDecide(t *testing.T) {
	s := nodeSettings(t)
	node := s.Capture
	with := func(f func(c *capture.Config)) capture.Config { c := node; f(&c); return c }
	proxy := []string{"app", "istio-proxy"}
	for _, tc := range []struct {
		name    string
		pod     Pod
		capture bool
		reason  string
		config  capture.Config
		err     string
	}{
		{name: "excluded namespace", pod: Pod{Namespace: "kube-system", Name: "dns", Known: true, Containers: proxy}, reason: `namespace "kube-system" is excluded`},
		{name: "excluded namespace, not looked up", pod: Pod{Namespace: "kube-system", Name: "dns"}, reason: "excluded"},
		{name: "no lookup: captured with the node defaults", pod: Pod{Namespace: "default", Name: "a"}, capture: true, reason: "no Kubernetes lookup", config: node},
		{name: "proxy container", pod: Pod{Namespace: "default", Name: "a", Known: true, Containers: proxy}, capture: true, reason: "has the istio-proxy container", config: node},
		{name: "proxy as a native sidecar", pod: Pod{Namespace: "default", Name: "a", Known: true, Containers: []string{"app"}, InitContainers: []string{"istio-proxy"}}, capture: true, reason: "istio-proxy container", config: node},
		{name: "no proxy", pod: Pod{Namespace: "default", Name: "a", Known: true, Containers: []string{"app"}}, reason: "has no istio-proxy container and no injection annotation"},
		{name: "status annotation", pod: Pod{Namespace: "default", Name: "a", Known: true, Containers: []string{"app"}, Annotations: map[string]string{AnnotationStatus: "{}"}}, capture: true, reason: AnnotationStatus, config: node},
		{name: "inject true", pod: Pod{Namespace: "default", Name: "a", Known: true, Annotations: map[string]string{AnnotationInject: "true"}}, capture: true, reason: `inject: "true"`, config: node},
		{name: "inject false wins over the container", pod: Pod{Namespace: "default", Name: "a", Known: true, Containers: proxy, Annotations: map[string]string{AnnotationInject: "false"}}, reason: `inject: "false"`},
		{name: "interception NONE", pod: Pod{Namespace: "default", Name: "a", Known: true, Containers: proxy, Annotations: map[string]string{AnnotationInterceptionMode: "NONE"}}, reason: "NONE"},
		{
			name: "every traffic annotation over the node defaults",
			pod: Pod{Namespace: "default", Name: "a", Known: true, Containers: proxy, Annotations: map[string]string{
				AnnotationInterceptionMode:                         "tproxy",
				"traffic.sidecar.istio.io/includeOutboundIPRanges": "10.0.0.0/8",
				"traffic.sidecar.istio.io/excludeOutboundIPRanges": "10.96.0.1/32",
				"traffic.sidecar.istio.io/includeInboundPorts":     "80,8080",
				"traffic.sidecar.istio.io/excludeInboundPorts":     "9000,",
				"traffic.sidecar.istio.io/includeOutboundPorts":    "5432",
				"traffic.sidecar.istio.io/excludeOutboundPorts":    "25",
				"traffic.sidecar.istio.io/kubevirtInterfaces":      "net1",
				"traffic.sidecar.istio.io/excludeInterfaces":       "net2",
			}},
			capture: true, reason: "annotations sidecar.istio.io/interceptionMode",
			config: with(func(c *capture.Config) {
				c.InboundInterceptionMode = "TPROXY"
				c.OutboundIPRangesInclude = "10.0.0.0/8"
				c.OutboundIPRangesExclude = "10.96.0.1/32"
				c.InboundPortsInclude = "80,8080"
				c.InboundPortsExclude = "9000," + ProxyOwnPorts
				c.OutboundPortsInclude = "5432"
				c.OutboundPortsExclude = "25"
				c.KubeVirtInterfaces = "net1"
				c.ExcludeInterfaces = "net2"
			}),
		},
		{
			name:    "empty excludeInboundPorts keeps the proxy's own ports",
			pod:     Pod{Namespace: "default", Name: "a", Known: true, Containers: proxy, Annotations: map[string]string{"traffic.sidecar.istio.io/excludeInboundPorts": ""}},
			capture: true, reason: "annotations", config: with(func(c *capture.Config) { c.InboundPortsExclude = ProxyOwnPorts }),
		},
		{
			name: "a bad annotation is an error naming it",
			pod:  Pod{Namespace: "default", Name: "a", Known: true, Containers: proxy, Annotations: map[string]string{"traffic.sidecar.istio.io/includeInboundPorts": "80,99999", AnnotationInterceptionMode: "FAST"}},
			err:  `pod default/a: annotation traffic.sidecar.istio.io/includeInboundPorts: port "99999" out of range`,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d, err := s.Decide(tc.pod)
			if tc.err != "" {
				require.Error(t, err)
				assert.Contains(t, err.Error(), tc.err)
				assert.Contains(t, err.Error(), `annotation sidecar.istio.io/interceptionMode: mode "FAST"`)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.capture, d.Capture)
			assert.Contains(t, d.Reason, tc.reason)
			if tc.capture {
				assert.Equal(t, tc.config, d.Config)
			}
		})
	}
}

func TestDecideProxyContainerName(t *testing.T) {
	s := nodeSettings(t)
	s.ProxyContainer = "envoy"
	d, err := s.Decide(Pod{Namespace: "default", Name: "a", Known: true, Containers: []string{"istio-proxy"}})
	require.NoError(t, err)
	assert.False(t, d.Capture, "only the configured name counts")
	d, err = s.Decide(Pod{Namespace: "default", Name: "a", Known: true, Containers: []string{"envoy"}})
	require.NoError(t, err)
	assert.True(t, d.Capture)
}
