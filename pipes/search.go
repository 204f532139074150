package pipes

import (
	"context"
	"fmt"

	"github.com/bokbok-go/bokbok/pipes/internal/fts"
)

// Limits of searches.
const (
	DefaultSearchResults  = 20      // packets a search returns when it does not say
	MaxSearchQuery        = 1024    // bytes of a query
	DefaultSearchPostings = 200_000 // see HubConfig.SearchPostings
)

// SearchResult is a packet that matched a search, and how well.
type SearchResult struct {
	Packet
	Score float64 // BM25; higher is better
}

// SearchPage is what a search returns.
type SearchPage struct {
	Results []SearchResult // best first

	// Truncated says that, for a query word found in very many packets,
	// only the newest of them (see HubConfig.SearchPostings) were ranked.
	Truncated bool
}

// Search returns the packets of the pipeline that best match the words of
// query (letters and digits, case folded; packets match any of them,
// ranked by BM25), at most max (0 means DefaultSearchResults; the hub may
// return fewer). The words of a packet are its text, or, for a JSON
// object, the text of its string values.
//
// A plain persistent pipeline is searched on the hub, which must be
// connected. An encrypted pipeline is searched in the node's own copy
// of the packets it delivered (the hub holds ciphertext only): it works
// offline, and finds what this node's listeners have been given. A
// transient pipeline has nothing to search (ErrKindMismatch).
func (p *Pipeline) Search(ctx context.Context, query string, max int) (SearchPage, error) {
	if len(query) > MaxSearchQuery {
		return SearchPage{}, fmt.Errorf("%w: a query of %d bytes; at most %d", ErrBadRequest, len(query), MaxSearchQuery)
	}
	if max <= 0 {
		max = DefaultSearchResults
	}
	if !p.persistent {
		return SearchPage{}, fmt.Errorf("%w: %q is transient: it has nothing to search", ErrKindMismatch, p.name)
	}
	if p.encrypted {
		return p.searchLocal(query, max)
	}
	s, err := p.openedSession()
	if err != nil {
		return SearchPage{}, err
	}
	var reply searchReply
	if err := s.conn.Invoke(ctx, methodSearch, searchRequest{Pipeline: p.name, Query: query, Max: max}, &reply); err != nil {
		return SearchPage{}, hubError(err)
	}
	page := SearchPage{Truncated: reply.Truncated, Results: make([]SearchResult, len(reply.Packets))}
	for i, sp := range reply.Packets {
		page.Results[i].Packet = p.packet(sp)
		if i < len(reply.Scores) {
			page.Results[i].Score = reply.Scores[i]
		}
	}
	return page, nil
}

// serveSearch answers pipes.search for an authenticated user.
func (h *Hub) serveSearch(ctx context.Context, user string, req searchRequest) (searchReply, error) {
	p, err := h.pipeline(ctx, user, req.Pipeline, AccessRead)
	if err != nil {
		return searchReply{}, remoteErr(err)
	}
	switch {
	case !p.info.Persistent:
		return searchReply{}, remoteErr(fmt.Errorf("%w: %q is transient: it has nothing to search", ErrKindMismatch, req.Pipeline))
	case p.info.Encrypted:
		return searchReply{}, remoteErr(fmt.Errorf("%w: %q is encrypted: the hub cannot search it", ErrKindMismatch, req.Pipeline))
	case h.index == nil:
		return searchReply{}, remoteErr(fmt.Errorf("%w: this hub keeps no search index", ErrStorage))
	case len(req.Query) > MaxSearchQuery:
		return searchReply{}, remoteErr(fmt.Errorf("%w: a query of %d bytes; at most %d", ErrBadRequest, len(req.Query), MaxSearchQuery))
	}
	max := req.Max
	if max <= 0 {
		max = DefaultSearchResults
	}
	max = min(max, h.cfg.MaxBatch)
	in, err := h.log.Info(ctx, req.Pipeline)
	if err != nil {
		return searchReply{}, remoteErr(err)
	}
	hits, truncated, err := h.index.search(ctx, in, req.Query, max, h.cfg.SearchPostings)
	if err != nil {
		return searchReply{}, remoteErr(err)
	}
	reply := searchReply{Truncated: truncated}
	size := 0
	for _, hit := range hits {
		res, err := h.log.Read(ctx, req.Pipeline, hit.ID-1, 1, 0)
		if err != nil {
			return searchReply{}, remoteErr(err)
		}
		if len(res.Records) == 0 || res.Records[0].Seq != hit.ID {
			continue // removed by retention meanwhile
		}
		r := res.Records[0]
		if size += len(r.Data) + 80; len(reply.Packets) > 0 && size > h.cfg.MaxReadBytes {
			break
		}
		reply.Packets = append(reply.Packets, packetOf(r))
		reply.Scores = append(reply.Scores, hit.Score)
	}
	return reply, nil
}

// searchText is the default text of a packet for the index.
func searchText(_ string, data []byte) string { return fts.Text(data) }
