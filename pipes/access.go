package pipes

import (
	"context"
	"fmt"
	"slices"
)

// MaxMembers bounds the members of a private pipeline.
const MaxMembers = 256

// members checks and normalizes the members a private pipeline is given
// by owner: valid user names, sorted, each once, the owner among them.
// None makes the pipeline open to every user.
func members(owner string, names []string) ([]string, error) {
	if len(names) == 0 {
		return nil, nil
	}
	if len(names) > MaxMembers {
		return nil, fmt.Errorf("%w: %d members; a pipeline has at most %d", ErrBadRequest, len(names), MaxMembers)
	}
	out := make([]string, 0, len(names)+1)
	for _, m := range append(names, owner) {
		if err := checkName(m); err != nil {
			return nil, fmt.Errorf("%w: member %q", ErrBadRequest, m)
		}
		out = append(out, m)
	}
	slices.Sort(out)
	out = slices.Compact(out)
	if len(out) > MaxMembers {
		return nil, fmt.Errorf("%w: %d members; a pipeline has at most %d", ErrBadRequest, len(out), MaxMembers)
	}
	return out, nil
}

// allowed says whether user may access p: a private pipeline's members
// only, then as Authorize decides.
func (h *Hub) allowed(user string, p *hubPipeline, a Access) error {
	if ms := p.memberList(); len(ms) > 0 {
		if _, found := slices.BinarySearch(ms, user); !found {
			return fmt.Errorf("%w: %s %q: %q is not a member of this private pipeline", ErrForbidden, a, p.info.Name, user)
		}
	}
	return h.authorize(user, p.info.Name, a)
}

// serveMembers answers pipes.members: the owner of a pipeline replaces
// its members (it stays one of them).
func (h *Hub) serveMembers(ctx context.Context, user string, req membersRequest) (openReply, error) {
	p, err := h.lookup(ctx, req.Pipeline)
	if err != nil {
		return openReply{}, remoteErr(err)
	}
	if p.info.Owner != user {
		return openReply{}, remoteErr(fmt.Errorf("%w: only %q, its owner, may change the members of %q", ErrForbidden, p.info.Owner, req.Pipeline))
	}
	if len(req.Members) == 0 {
		return openReply{}, remoteErr(fmt.Errorf("%w: a private pipeline keeps at least its owner", ErrBadRequest))
	}
	ms, err := members(user, req.Members)
	if err != nil {
		return openReply{}, remoteErr(err)
	}
	in, err := h.log.SetMembers(ctx, req.Pipeline, ms)
	if err != nil {
		return openReply{}, remoteErr(err)
	}
	p.setMembers(in.Members)
	p.wake() // reads in progress check their access again
	h.cfg.Logger.Info("pipes: members changed", "pipeline", req.Pipeline, "members", in.Members, "user", user)
	return h.openReplyOf(ctx, p)
}
