package main

import (
	"fmt"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// oneLine makes a message safe to print as one line of stderr: control
// characters (newline, carriage return, escape), line and paragraph
// separators and invalid UTF-8 become Go escapes, so that a value inside
// a message (a flag, a variable, a path) cannot start a line of its own
// and forge a message or a log record. The slog records are safe by
// themselves: the text handler quotes any value that needs it.
func oneLine(s string) string {
	unsafe := func(r rune) bool { return unicode.IsControl(r) || unicode.In(r, unicode.Zl, unicode.Zp) }
	if utf8.ValidString(s) && !strings.ContainsFunc(s, unsafe) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case unsafe(r):
			q := strconv.QuoteRune(r)
			b.WriteString(q[1 : len(q)-1])
		default:
			b.WriteString(s[i : i+size])
		}
		i += size
	}
	return b.String()
}
