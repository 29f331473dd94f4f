// Package dryrun prints a Plan without touching anything: for each family a
// "# ipv4" or "# ipv6" header and exactly the iptables-restore text a real
// run writes into a clean namespace, then the policy routing and addresses
// as `ip` commands. It starts no process and opens no socket; the text
// comes from the same renderer the real apply feeds to *-restore.
package dryrun
