//go:build !linux

package podfs

import (
	"fmt"
	"path/filepath"
)

// ReadFile refuses: only Linux can confine a read to a root.
func ReadFile(root, name string, limit int64) ([]byte, error) {
	return nil, fmt.Errorf("read %s: %w", filepath.Join(root, name), ErrUnsupported)
}
