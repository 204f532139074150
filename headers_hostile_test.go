package bokbok

import (
	"bytes"
	"context"
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestHostileMetadataFlood: a peer sends thousands of small requests, each
// with the most metadata entries a header may carry, to a server whose
// handlers hold them. A parsed header costs far more memory than its
// bytes (a Go map of 64 entries), so each request is charged that
// estimate too: the server keeps about MaxReceiveBytes of them and
// refuses the rest with bokbok.busy, instead of holding tens of MiB of
// maps for a few hundred KiB of input.
func TestHostileMetadataFlood(t *testing.T) {
	const budget = 2 << 20
	release := make(chan struct{})
	var ran atomic.Int32
	srv := &Server{Config: Config{MaxMessageSize: 1 << 20, MaxReceiveBytes: budget, KeepaliveInterval: -1,
		Handler: HandlerFunc(func(ctx context.Context, req *Request) (any, error) {
			switch len(req.Metadata()) {
			case 0: // the well-behaved client
				return decodingEcho(ctx, req)
			case maxMetadataEntries:
			default:
				return nil, fmt.Errorf("got %d metadata entries", len(req.Metadata()))
			}
			ran.Add(1)
			select {
			case <-release:
			case <-ctx.Done():
			}
			return nil, nil
		})}}
	addr := hostileServer(t, srv)
	base := liveHeap()
	rp := hostileDial(t, addr)

	// A header of 64 entries with 2-byte keys and empty values: 261 bytes.
	hdr := []byte{0x81, headerMetadata, 0xde, 0x00, maxMetadataEntries}
	for i := range maxMetadataEntries {
		hdr = append(hdr, 0xa2, 'k', byte('0'+i), 0xa0)
	}
	body := append(append(hdr, 0x00), 0xc0) // timeout 0, message nil
	const n = 3000
	var batch bytes.Buffer
	for i := range n {
		id := uint32(2*i + 1)
		batch.Write(bytes.Join(robFrames(kindRequest, flagHeader, id, robBody(uint32(len(body)), body), maxFramePayload), nil))
	}
	rp.write(batch.Bytes())

	busy := 0
	for busy < n-int(budget/(costHeaderMap+maxMetadataEntries*costHeaderEntry)) {
		f := rp.next(t)
		if f.kind != kindError {
			continue
		}
		rerr, err := parseErrorBody(f.payload[bodyLenSize:])
		require.NoError(t, err)
		require.Equal(t, CodeBusy, rerr.Code)
		busy++
	}
	requireHeapUnder(t, base, 8<<20, "requests with the most metadata, held by their handlers")
	require.LessOrEqual(t, int(ran.Load()), DefaultMaxConcurrentHandlers)
	close(release)
	wellBehaved(t, addr)
}
