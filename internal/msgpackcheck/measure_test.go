package msgpackcheck

import "runtime"

// measureDecode returns the bytes decoding b into an interface value
// allocates, whether or not decoding succeeds.
func measureDecode(b []byte) int64 {
	var m0, m1 runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&m0)
	var v any
	_ = Decode(b, &v)
	runtime.ReadMemStats(&m1)
	runtime.KeepAlive(v)
	return int64(m1.TotalAlloc - m0.TotalAlloc)
}
