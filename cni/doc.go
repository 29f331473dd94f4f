// Package cni is the policy of the chained CNI plugin istio-iptables-cni
// (issue 17), kept apart from the plugin's command so that it can be tested
// without a kernel:
//
//   - ParseConf reads our entry of a conflist: every capture option of the
//     command under "capture" (the JSON key is the command's long flag), the
//     namespaces left alone, the Kubernetes lookup, the timeouts. Every bad
//     value is reported at once, naming its key.
//   - Settings.Decide says whether a pod is captured and with which
//     capture.Config: node defaults, then Istio's per-pod annotations.
//   - Lookup reads a pod from the API server with client-go (short timeout).
//   - InsertEntry / RemoveEntry edit a conflist's text, keeping every other
//     byte; Install and Uninstall do it atomically in a CNI config directory
//     and copy or remove the binary.
//
// Nothing here touches a network namespace: the command applies the plan
// through package iptables.
package cni
