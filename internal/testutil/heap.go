package testutil

import "runtime"

// LiveHeap returns the bytes of live heap objects after two garbage
// collections (the second finishes what cleanups of the first let go).
func LiveHeap() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}
