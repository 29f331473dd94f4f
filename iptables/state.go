package iptables

import (
	"slices"

	"github.com/mesh-init/istio-iptables/plan"
)

// State is everything a run needs to know about a namespace, read once at
// its start through the kernel seam (Probe, without a process) and, only
// where the probe shows something to read, the flavours' *-save output.
// It is plain data: decide turns a plan and a State into a Transaction
// without touching anything.
type State struct {
	// Binaries maps each iptables binary found to its path.
	Binaries map[string]string
	// Iptables is what each flavour holds in each family.
	Iptables map[Flavour]map[plan.Family]FlavourState
	// Native is the native backend's table, if any.
	Native NativeState
	// Markers are the record tables of earlier applies (MarkerPrefix,
	// carrying our tag), and Generation the nf_tables ruleset generation
	// at the time of the probe.
	Markers    []string
	Generation uint32
	// Routing is the policy routing and lo addresses this tool owns.
	Routing Routing
	// Loopback is the state of lo.
	Loopback Loopback
}

// FlavourState is what one iptables flavour holds in one family.
type FlavourState struct {
	// Tables are the tables the kernel lists, without a process.
	Tables []string
	// OwnedChains are the ISTIO_* chains the kernel lists (nft flavour,
	// over netlink; legacy: unknown until saved).
	OwnedChains []plan.TableChain
	// Counts are the rule counts per chain (nft flavour, over netlink),
	// and AcceptOnly the tables whose base chains all accept by policy.
	Counts     map[plan.TableChain]int
	AcceptOnly []plan.Table
	// Saved is the parsed *-save output; Read tells whether it ran.
	Saved plan.Saved
	Read  bool
}

// HasRules reports whether the flavour holds any rule in this family.
func (fs FlavourState) HasRules() bool {
	if fs.Read {
		return fs.Saved.HasRules()
	}
	for _, n := range fs.Counts {
		if n > 0 {
			return true
		}
	}
	return false
}

// mayHoldOwned reports whether the flavour may hold rules of this tool:
// an ISTIO_* chain is listed, or tables exist that only *-save can show.
func (fs FlavourState) mayHoldOwned(f Flavour) bool {
	if f == FlavourNft {
		return len(fs.OwnedChains) > 0
	}
	return len(fs.Tables) > 0
}

// NativeState is the native backend's inet table.
type NativeState struct {
	// Present: a table inet NftTableName exists. Ours: it carries this
	// tool's owner tag; Hash is the plan hash the tag records.
	Present, Ours bool
	Hash          string
	// Chains are its chains with their rule counts, when ours.
	Chains []string
	Counts map[string]int
	// Foreign are inet tables with this tool's names that carry no tag:
	// never touched.
	Foreign []string
}

// Routing is the TPROXY policy routing and the lo addresses this tool owns:
// rules and routes carry RouteProtocol; the addresses are ownedAddrs.
type Routing struct {
	Routes []plan.Route
	// Tables are the route tables holding our `local default dev lo` route,
	// per family.
	Tables []RouteTable
	Addrs  []plan.Addr
}

// RouteTable is one family's route table holding our local default route.
type RouteTable struct {
	Family plan.Family
	Table  int
}

// Loopback is what lo can carry: REDIRECT sends outbound connections to
// 127.0.0.1 (::1), which needs lo up with those addresses.
type Loopback struct {
	Up, IPv4, IPv6 bool
}

// flavourState returns the state of a flavour and family (zero if unread).
func (s State) flavourState(f Flavour, fam plan.Family) FlavourState {
	return s.Iptables[f][fam]
}

func (s State) has(bin string) bool {
	_, ok := s.Binaries[bin]
	return ok
}

// installed reports whether a flavour's restore binary exists for every
// family of fams.
func (s State) installed(f Flavour, fams []plan.Family) bool {
	for _, fam := range fams {
		if !s.has(f.binary(fam, "restore")) {
			return false
		}
	}
	return true
}

func (r Routing) hasRoute(rt plan.Route) bool { return slices.Contains(r.Routes, rt) }

func (r Routing) hasTable(f plan.Family, t int) bool {
	return slices.Contains(r.Tables, RouteTable{Family: f, Table: t})
}

func (r Routing) hasAddr(a plan.Addr) bool { return slices.Contains(r.Addrs, a) }
