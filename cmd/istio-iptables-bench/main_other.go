//go:build !linux

package main

// runNative needs the native backend, which exists only on Linux.
func (b *bench) runNative(redirect, tproxy, classic []string) {}
