// Package explain says where a new connection goes through a set of
// netfilter rules, and why: the verdict (redirect, tproxy, direct, drop
// or unknown), the port it lands on and the trace of the rules that
// decided it.
//
// Contract:
//   - Explain is pure: no I/O, no exec, no netlink, no clock. The rules
//     come from a plan (FromRuleSet) or from `*-save` text parsed with
//     plan.ParseSave (FromSaved); every rule is read with
//     plan.ParseSpec, the one rule parser of this module.
//   - It models the first packet of a new connection the way netfilter
//     treats it: outbound through raw, mangle, nat and filter OUTPUT, then
//     POSTROUTING, and, for a local destination (127.0.0.0/8, ::1, the
//     pod's own addresses), back in through raw and mangle PREROUTING on
//     lo (nat is not consulted again: the connection's NAT was set up on
//     the way out) and INPUT; inbound through raw, mangle and nat
//     PREROUTING, then INPUT. Conntrack state is NEW, marks start at 0,
//     MARK and CONNMARK carry to later tables, jumps, goto and RETURN
//     follow the chains, falling off a builtin chain applies its policy.
//   - A rule it cannot evaluate (a match or target outside the vocabulary
//     ParseSpec knows, a fact of the packet the caller did not give, such
//     as the owner of an outbound connection or its source port) makes the
//     verdict unknown, with the reason, but only when the packet reaches
//     that rule. It never guesses.
package explain
