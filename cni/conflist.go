package cni

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
)

// The conflist edits work on the text: they find the byte spans of the
// "plugins" array and its elements with a json.Decoder, and splice. Every
// byte outside our own entry (the other plugins, their order, spacing and
// key order, the file's other keys) is kept exactly.

type span struct{ start, end int }

// pluginsArray is where "plugins" sits in a conflist's text: the offsets of
// '[' and ']' and of each element.
type pluginsArray struct {
	open, close int
	elems       []span
}

// findPlugins locates the "plugins" array of a conflist.
func findPlugins(b []byte) (pluginsArray, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return pluginsArray{}, errors.New("not a JSON object")
	}
	var arr pluginsArray
	found := false
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return pluginsArray{}, err
		}
		key, _ := tok.(string)
		if key != "plugins" {
			var skip json.RawMessage
			if err := dec.Decode(&skip); err != nil {
				return pluginsArray{}, err
			}
			continue
		}
		if found {
			return pluginsArray{}, errors.New(`"plugins" appears twice`)
		}
		found = true
		if tok, err := dec.Token(); err != nil || tok != json.Delim('[') {
			return pluginsArray{}, errors.New(`"plugins" is not an array`)
		}
		arr.open = int(dec.InputOffset()) - 1
		for dec.More() {
			var raw json.RawMessage
			if err := dec.Decode(&raw); err != nil {
				return pluginsArray{}, err
			}
			end := int(dec.InputOffset())
			sp := span{end - len(raw), end}
			if !bytes.Equal(b[sp.start:sp.end], raw) {
				return pluginsArray{}, errors.New("cannot locate a plugin in the text")
			}
			arr.elems = append(arr.elems, sp)
		}
		if _, err := dec.Token(); err != nil {
			return pluginsArray{}, err
		}
		arr.close = int(dec.InputOffset()) - 1
	}
	if _, err := dec.Token(); err != nil {
		return pluginsArray{}, fmt.Errorf("the object does not end: %w", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return pluginsArray{}, errors.New("text after the object")
	}
	if !found {
		return pluginsArray{}, errors.New(`no "plugins" array: not a conflist`)
	}
	return arr, nil
}

// isOurs reports whether a plugin object is our entry.
func isOurs(elem []byte) bool {
	var p struct {
		Type string `json:"type"`
	}
	return json.Unmarshal(elem, &p) == nil && p.Type == PluginType
}

// IsConflist reports whether a config file's text is a conflist (has
// "plugins") rather than a single network's .conf.
func IsConflist(b []byte) bool {
	var probe struct {
		Plugins json.RawMessage `json:"plugins"`
	}
	return json.Unmarshal(b, &probe) == nil && probe.Plugins != nil
}

// InsertEntry puts entry (a JSON object) into the conflist: in place of an
// entry of ours when there is one, else at the end of "plugins", indented
// like the plugin before it. Every other byte is kept.
func InsertEntry(conflist, entry []byte) ([]byte, error) {
	arr, err := findPlugins(conflist)
	if err != nil {
		return nil, fmt.Errorf("read the conflist: %w", err)
	}
	for _, e := range arr.elems {
		if isOurs(conflist[e.start:e.end]) {
			indent := lineIndent(conflist, e.start)
			text, err := indentEntry(entry, indent, !onOneLine(conflist, arr))
			if err != nil {
				return nil, err
			}
			return splice(conflist, e.start, e.end, text), nil
		}
	}
	if len(arr.elems) == 0 {
		text, err := indentEntry(entry, "", false)
		if err != nil {
			return nil, err
		}
		return splice(conflist, arr.open+1, arr.close, text), nil
	}
	last := arr.elems[len(arr.elems)-1]
	if onOneLine(conflist, arr) {
		text, err := indentEntry(entry, "", false)
		if err != nil {
			return nil, err
		}
		return splice(conflist, last.end, last.end, append([]byte(", "), text...)), nil
	}
	indent := lineIndent(conflist, last.start)
	text, err := indentEntry(entry, indent, true)
	if err != nil {
		return nil, err
	}
	return splice(conflist, last.end, last.end, append([]byte(",\n"+indent), text...)), nil
}

// RemoveEntry removes every entry of ours from the conflist, with the comma
// and spacing that separated it; removed counts them.
func RemoveEntry(conflist []byte) (out []byte, removed int, err error) {
	out = conflist
	for {
		arr, err := findPlugins(out)
		if err != nil {
			return nil, 0, fmt.Errorf("read the conflist: %w", err)
		}
		i := -1
		for j, e := range arr.elems {
			if isOurs(out[e.start:e.end]) {
				i = j
				break
			}
		}
		if i < 0 {
			return out, removed, nil
		}
		removed++
		e := arr.elems[i]
		switch {
		case len(arr.elems) == 1:
			out = splice(out, arr.open+1, arr.close, nil)
		case i > 0:
			// From the end of the plugin before: its comma goes with ours.
			out = splice(out, arr.elems[i-1].end, e.end, nil)
		default:
			out = splice(out, e.start, arr.elems[1].start, nil)
		}
	}
}

// ConfToConflist turns a single network's .conf into a conflist holding it
// verbatim as the one plugin, with the network's cniVersion and name.
func ConfToConflist(conf []byte) ([]byte, error) {
	var head struct {
		CNIVersion string `json:"cniVersion"`
		Name       string `json:"name"`
		Type       string `json:"type"`
	}
	if err := json.Unmarshal(conf, &head); err != nil {
		return nil, fmt.Errorf("read the .conf: %w", err)
	}
	if head.Type == "" {
		return nil, errors.New(`read the .conf: no "type"`)
	}
	v, _ := json.Marshal(head.CNIVersion)
	n, _ := json.Marshal(head.Name)
	var b bytes.Buffer
	fmt.Fprintf(&b, "{\n  \"cniVersion\": %s,\n  \"name\": %s,\n  \"plugins\": [\n", v, n)
	b.Write(bytes.TrimSpace(conf))
	b.WriteString("\n  ]\n}\n")
	return b.Bytes(), nil
}

func splice(b []byte, start, end int, text []byte) []byte {
	out := make([]byte, 0, len(b)-(end-start)+len(text))
	out = append(out, b[:start]...)
	out = append(out, text...)
	return append(out, b[end:]...)
}

// onOneLine: the array holds no newline (a compact file).
func onOneLine(b []byte, arr pluginsArray) bool {
	return !bytes.Contains(b[arr.open:arr.close], []byte("\n"))
}

// lineIndent is the blank space before offset on its line.
func lineIndent(b []byte, off int) string {
	i := off
	for i > 0 && (b[i-1] == ' ' || b[i-1] == '\t') {
		i--
	}
	if i > 0 && b[i-1] != '\n' {
		return ""
	}
	return string(b[i:off])
}

// indentEntry is entry as JSON text: multi-line, indented to sit at
// indent, or compact.
func indentEntry(entry []byte, indent string, multiline bool) ([]byte, error) {
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(entry, &obj); err != nil {
		return nil, fmt.Errorf("our entry is not a JSON object: %w", err)
	}
	var b bytes.Buffer
	if !multiline {
		if err := json.Compact(&b, entry); err != nil {
			return nil, err
		}
		return b.Bytes(), nil
	}
	unit := "  "
	if strings.Contains(indent, "\t") {
		unit = "\t"
	}
	var compact bytes.Buffer
	if err := json.Compact(&compact, entry); err != nil {
		return nil, err
	}
	if err := json.Indent(&b, compact.Bytes(), indent, unit); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}
