package bokbok

import "sync"

// Large buffers (a frame payload, a sealed or opened record) are borrowed
// from bufPool while in use and given back before the connection waits for
// the network again, so an idle connection holds none of them.

const poolBufSize = maxSealedRecord // fits a frame payload and a whole record

var bufPool = sync.Pool{New: func() any {
	b := make([]byte, poolBufSize)
	return &b
}}

func getBuf() *[]byte  { return bufPool.Get().(*[]byte) }
func putBuf(b *[]byte) { bufPool.Put(b) }
