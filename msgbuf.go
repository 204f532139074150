package bokbok

import (
	"math/bits"
	"sync"
	"sync/atomic"
)

// Message buffers. A received message larger than minPooledMsg is
// assembled in a buffer borrowed from a pool of size classes, and the
// buffer goes back to the pool once nothing can refer to it any more:
//
//   - a request's or notification's, once its handler has returned and
//     its reply is encoded, unless the handler took Request.Raw (the
//     documented lifetime of everything decoded without a copy, a Bulk
//     say, is the handler's run);
//   - an answer's, once Call or Invoke has decoded it, unless the decoding
//     kept a reference into it (a Bulk, a generated decoder) or somebody
//     took Response.Raw. A Response returned by Request is the caller's
//     and never goes back.
//
// A buffer that is not given back (a refused request, a failed
// connection) is simply collected. Large messages then cost no
// allocation in steady state, which is what keeps the garbage collector
// away from the connection's small calls while large ones stream.
//
// Size classes are msgClassSteps per doubling from minPooledMsg to
// maxPooledMsg, so a buffer is at most 1/8 larger than its message;
// messages outside the range get a buffer of their exact size.
const (
	minPooledMsg  = 64 << 10
	maxPooledMsg  = 64 << 20
	msgClassSteps = 8
	minClassExp   = 17 // bits.Len of the smallest pooled size class's upper bound: 2^16 < n <= 2^17
	maxClassExp   = 26 // 2^26 = maxPooledMsg
	msgClasses    = (maxClassExp - minClassExp + 1) * msgClassSteps
)

// msgPools holds one pool per size class; each holds *[]byte of exactly
// the class's capacity.
var msgPools [msgClasses]sync.Pool

// msgBufReused counts the buffers handed out again rather than allocated.
var msgBufReused atomic.Int64

// msgClass returns the size class of a buffer for n bytes and its
// capacity, or -1 and n if n is outside the pooled range.
func msgClass(n int) (class, size int) {
	if n <= minPooledMsg || n > maxPooledMsg {
		return -1, n
	}
	e := bits.Len(uint(n - 1)) // 2^(e-1) < n <= 2^e
	step := (1 << (e - 1)) / msgClassSteps
	k := (n + step - 1) / step // msgClassSteps < k <= 2*msgClassSteps
	return (e-minClassExp)*msgClassSteps + k - msgClassSteps - 1, k * step
}

// getMsgBuf returns an empty buffer with room for n bytes: borrowed from
// its size class's pool if n is in the pooled range.
func getMsgBuf(n int) []byte {
	class, size := msgClass(n)
	if class >= 0 {
		if p, _ := msgPools[class].Get().(*[]byte); p != nil {
			msgBufReused.Add(1)
			return (*p)[:0]
		}
	}
	return make([]byte, 0, size)
}

// putMsgBuf gives b back to its size class's pool, if its capacity is
// exactly a class's. The caller must hold the only reference to b.
func putMsgBuf(b []byte) {
	if class, size := msgClass(cap(b)); class >= 0 && size == cap(b) {
		p := new([]byte) // allocated here only: taking &b would move every b to the heap
		*p = b[:0]
		msgPools[class].Put(p)
	}
}

// msgBufSize returns the capacity getMsgBuf(n) gives.
func msgBufSize(n int) int {
	_, size := msgClass(n)
	return size
}
