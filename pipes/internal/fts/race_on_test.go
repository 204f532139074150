//go:build race

package fts

// raceEnabled: the race detector slows the 100,000-message build tenfold.
const raceEnabled = true
