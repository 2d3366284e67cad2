//go:build !unix

package main

import "os"

// terminalColumns is 80 on a terminal where the width is not queried.
func terminalColumns(f *os.File) int {
	if isTerminal(f) {
		return 80
	}
	return 0
}
