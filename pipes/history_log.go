package pipes

import (
	"context"
	"sort"
)

// logHistory answers a history request from any Log through Read: it
// finds the range's ends by Seq and, times being sorted, by bisection on
// time (a read of one record per step), then reads the page, looking at
// no more than maxScan records. The embedded log answers from its own
// cursor instead.
func logHistory(ctx context.Context, l Log, req historyRequest, max, maxBytes, maxScan int) (historyReply, error) {
	in, err := l.Info(ctx, req.Pipeline)
	if err != nil {
		return historyReply{}, err
	}
	reply := historyReply{Last: in.Last}
	lo, hi := max64u(req.From, in.First), in.Last
	if req.To != 0 {
		hi = min(req.To, in.Last)
	}
	// first returns the first record at or after seq, if any up to hi.
	first := func(seq uint64) (*Record, error) {
		res, err := l.Read(ctx, req.Pipeline, seq-1, 1, 0)
		if err != nil || len(res.Records) == 0 || res.Records[0].Seq > hi {
			return nil, err
		}
		return &res.Records[0], nil
	}
	var ferr error
	timeAt := func(seq uint64) int64 {
		r, err := first(seq)
		if err != nil {
			ferr = err
		}
		if r == nil {
			return 1<<63 - 1
		}
		return r.Time.UnixNano()
	}
	if req.Since != 0 && lo <= hi {
		lo += uint64(sort.Search(int(hi-lo+1), func(i int) bool { return timeAt(lo+uint64(i)) >= req.Since }))
	}
	if req.Until != 0 && lo <= hi {
		n := sort.Search(int(hi-lo+1), func(i int) bool { return timeAt(lo+uint64(i)) > req.Until })
		hi = lo + uint64(n) - 1
		if n == 0 {
			return reply, ferr
		}
	}
	if ferr != nil || lo > hi {
		return reply, ferr
	}
	max = min(max, maxScan)
	if !req.Newest {
		res, err := l.Read(ctx, req.Pipeline, lo-1, max, maxBytes)
		if err != nil {
			return reply, err
		}
		for _, r := range res.Records {
			if r.Seq > hi {
				return reply, nil
			}
			reply.Packets = append(reply.Packets, packetOf(r))
		}
		if n := len(reply.Packets); n > 0 && reply.Packets[n-1].Seq < hi {
			reply.Next = reply.Packets[n-1].Seq + 1
		}
		return reply, nil
	}
	// Newest: read forward from max records before hi, keeping the newest
	// that fit in maxBytes.
	start := lo
	if hi-lo+1 > uint64(max) {
		start = hi - uint64(max) + 1
	}
	var page []storedPacket
	size := 0
	for after, scanned := start-1, 0; after < hi && scanned < maxScan; {
		res, err := l.Read(ctx, req.Pipeline, after, max, maxBytes)
		if err != nil {
			return reply, err
		}
		if len(res.Records) == 0 {
			break
		}
		for _, r := range res.Records {
			if r.Seq > hi {
				after = hi
				break
			}
			page = append(page, packetOf(r))
			size += len(r.Data) + 70
			for len(page) > 1 && (len(page) > max || size > maxBytes) {
				size -= len(page[0].Data) + 70
				page = page[1:]
			}
			after = r.Seq
		}
		scanned += len(res.Records)
	}
	reply.Packets = page
	if len(page) > 0 && page[0].Seq > lo {
		reply.Next = page[0].Seq - 1
	}
	return reply, nil
}

func packetOf(r Record) storedPacket {
	return storedPacket{Seq: r.Seq, Time: r.Time.UnixNano(), Sender: r.Sender.User, Node: r.Sender.Node[:], N: r.N, Data: r.Data}
}
