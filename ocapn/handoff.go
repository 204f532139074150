package ocapn

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"

	"github.com/bokbok-go/bokbok/ocapn/syrup"
)

// Third-party handoffs (the CapTP draft's "Third Party Handoffs"). A
// reference to an object of peer E, held through session G-E, sent by
// this node G to peer R over session G-R, travels as a signed
// certificate instead of a proxy:
//
//   - Gifter (this node sends a Ref of another session): deposits the
//     object with E's bootstrap object (deposit-gift, a random gift id)
//     and sends R <desc:sig-envelope <desc:handoff-give ...> sig>, signed
//     with G's key of session G-E.
//   - Receiver (a handoff-give arrives): the value becomes a local
//     Promise; the node opens (or reuses) a session to E, signs a
//     <desc:handoff-receive ...> with its key of session G-R, and sends it
//     to E's bootstrap object (withdraw-gift). The promise resolves to the
//     Ref to the gift, held through session E-R.
//   - Exporter (withdraw-gift arrives): verifies both signatures and that
//     the handoff count is new on the session, and answers with the gift,
//     at once or once the gifter deposits it.
//
// Gifts and waiting withdrawals belong to the gifter's session: they end
// with it (a withdrawal waiting for a gift of an ended session breaks).

// handoffGive is a parsed <desc:handoff-give receiver-key
// exporter-location session gifter-side gift-id>.
type handoffGive struct {
	receiverKey ed25519.PublicKey
	exporter    Peer
	session     []byte
	gifterSide  []byte
	giftID      []byte
}

// withdrawal is a withdraw-gift that arrived before its gift: it is held
// by the gifter's session (ge, under the gift id) and counted by the
// receiver's (er).
type withdrawal struct {
	ge, er *session
	giftID string
	r      *Resolver
}

// handoffCounts remembers the handoff counts used on a session: every
// count below low, and those in above. Counts used in order keep above
// empty; Config.MaxGifts bounds it.
type handoffCounts struct {
	low   int64
	above map[int64]struct{}
}

// use records count, reporting false if it was used before or too many
// counts are out of order.
func (h *handoffCounts) use(count int64, limit int) bool {
	if count < h.low {
		return false
	}
	if _, used := h.above[count]; used {
		return false
	}
	if count == h.low {
		h.low++
		for {
			if _, ok := h.above[h.low]; !ok {
				return true
			}
			delete(h.above, h.low)
			h.low++
		}
	}
	if len(h.above) >= limit {
		return false
	}
	if h.above == nil {
		h.above = make(map[int64]struct{})
	}
	h.above[count] = struct{}{}
	return true
}

// sigEnvelope returns <desc:sig-envelope signed sig>, signed with priv
// over signed's encoding.
func sigEnvelope(signed syrup.Record, priv ed25519.PrivateKey) (syrup.Record, error) {
	enc, err := syrup.Marshal(signed)
	if err != nil {
		return syrup.Record{}, err
	}
	return syrup.Record{Label: sym("desc:sig-envelope"), Fields: []any{
		signed, signatureSyrup(ed25519.Sign(priv, enc)),
	}}, nil
}

// openEnvelope reads <desc:sig-envelope <label ...> sig>, returning the
// signed record, its encoding (what the signature covers) and the
// signature.
func openEnvelope(v any, label string) (syrup.Record, []byte, []byte, error) {
	env, ok := v.(syrup.Record)
	if !ok || env.Label != sym("desc:sig-envelope") || len(env.Fields) != 2 {
		return syrup.Record{}, nil, nil, fmt.Errorf("not a desc:sig-envelope")
	}
	signed, ok := env.Fields[0].(syrup.Record)
	if !ok || signed.Label != sym(label) {
		return syrup.Record{}, nil, nil, fmt.Errorf("a desc:sig-envelope that does not hold a %s", label)
	}
	sig, err := signatureFromSyrup(env.Fields[1])
	if err != nil {
		return syrup.Record{}, nil, nil, err
	}
	enc, err := syrup.Marshal(signed)
	if err != nil {
		return syrup.Record{}, nil, nil, err
	}
	return signed, enc, sig, nil
}

// parseHandoffGive reads the fields of a desc:handoff-give.
func parseHandoffGive(r syrup.Record) (handoffGive, error) {
	if len(r.Fields) != 5 {
		return handoffGive{}, fmt.Errorf("desc:handoff-give with %d fields, want 5", len(r.Fields))
	}
	key, err := publicKeyFromSyrup(r.Fields[0])
	if err != nil {
		return handoffGive{}, fmt.Errorf("desc:handoff-give: receiver-key: %w", err)
	}
	loc, err := peerFromSyrup(r.Fields[1])
	if err != nil {
		return handoffGive{}, fmt.Errorf("desc:handoff-give: exporter-location: %w", err)
	}
	session, ok1 := bytesOf(r.Fields[2])
	side, ok2 := bytesOf(r.Fields[3])
	gift, ok3 := bytesOf(r.Fields[4])
	if !ok1 || !ok2 || !ok3 {
		return handoffGive{}, errors.New("desc:handoff-give: session, gifter-side and gift-id are byte strings")
	}
	return handoffGive{receiverKey: key, exporter: loc, session: session, gifterSide: side, giftID: gift}, nil
}

// give is the gifter's part: it deposits r's object (an export of r's
// session's peer) with that peer and returns the signed handoff-give to
// send on s in its place. On the loop.
func (s *session) give(r *Ref) (syrup.Record, error) {
	ge := r.s
	if ge.n != s.n {
		return syrup.Record{}, errors.New("ocapn: a reference held by another Node cannot be sent")
	}
	if ge.ended || !ge.ready || !s.ready {
		return syrup.Record{}, fmt.Errorf("%w: the reference's session is not open", ErrSessionEnded)
	}
	giftID := make([]byte, 32)
	if _, err := rand.Read(giftID); err != nil {
		return syrup.Record{}, err
	}
	env, err := sigEnvelope(syrup.Record{Label: sym("desc:handoff-give"), Fields: []any{
		publicKeySyrup(s.peerPub), ge.peer.syrup(), ge.id, publicID(ge.key.pub), giftID,
	}}, ge.key.priv)
	if err != nil {
		return syrup.Record{}, err
	}
	ge.send(syrup.Record{Label: sym("op:deliver-only"), Fields: []any{
		syrup.Record{Label: sym("desc:export"), Fields: []any{int64(0)}},
		[]any{sym("deposit-gift"), giftID, syrup.Record{Label: sym("desc:export"), Fields: []any{int64(r.pos)}}},
	}})
	return env, nil
}

// receiveHandoff is the receiver's part: env is a signed handoff-give the
// peer sent on s. It returns a promise for the gift, which the node
// withdraws from the exporter. On the loop.
func (s *session) receiveHandoff(env syrup.Record) (*Promise, error) {
	signed, _, _, err := openEnvelope(env, "desc:handoff-give")
	if err != nil {
		return nil, &badArgsError{err.Error()}
	}
	g, err := parseHandoffGive(signed)
	if err != nil {
		return nil, &badArgsError{err.Error()}
	}
	if !bytes.Equal(g.receiverKey, s.key.pub) {
		return nil, &badArgsError{"a desc:handoff-give for another receiver"}
	}
	if s.n.isSelf(g.exporter) {
		return nil, &badArgsError{"a desc:handoff-give naming this node as the exporter"}
	}
	if s.handoffs >= s.n.cfg.MaxGifts {
		return nil, &badArgsError{fmt.Sprintf("the peer has %d handoffs in progress, the limit", s.handoffs)}
	}
	s.handoffs++
	p, res := s.n.NewPromise()
	s.n.withSession(g.exporter, func(er *session, err error) {
		done := func(v any, err error) {
			s.handoffs--
			if err != nil {
				res.Break(err)
			} else {
				res.Fulfill(v)
			}
		}
		if err != nil {
			done(nil, err)
			return
		}
		count := er.nextHandoff
		er.nextHandoff++
		receive, err := sigEnvelope(syrup.Record{Label: sym("desc:handoff-receive"), Fields: []any{
			er.id, publicID(er.key.pub), count, env,
		}}, s.key.priv)
		if err != nil {
			done(nil, err)
			return
		}
		er.bootstrapRef().Deliver(sym("withdraw-gift"), receive).whenSettled(done)
	})
	return p, nil
}

// depositGift is deposit-gift on the bootstrap object of s, the gifter's
// session. On the loop.
func (s *session) depositGift(args []any) error {
	if len(args) != 3 {
		return errors.New("ocapn: deposit-gift takes a gift id and a reference")
	}
	id, ok := bytesOf(args[1])
	if !ok {
		return errors.New("ocapn: deposit-gift: the gift id is a byte string")
	}
	key := string(id)
	if w := s.awaiting[key]; w != nil {
		delete(s.awaiting, key)
		delete(w.er.withdrawals, w)
		w.r.Fulfill(args[2])
		return nil
	}
	if _, dup := s.gifts[key]; dup {
		return errors.New("ocapn: deposit-gift: that gift id is deposited already")
	}
	if len(s.gifts) >= s.n.cfg.MaxGifts {
		return fmt.Errorf("ocapn: deposit-gift: %d gifts are deposited, the limit", len(s.gifts))
	}
	if s.gifts == nil {
		s.gifts = make(map[string]any)
	}
	s.gifts[key] = args[2]
	return nil
}

// withdrawGift is withdraw-gift on the bootstrap object of s, the
// receiver's session: it checks the signed handoff-receive and answers
// with the gift, or a promise for it. On the loop.
func (s *session) withdrawGift(args []any) (any, error) {
	if len(args) != 2 {
		return nil, errors.New("ocapn: withdraw-gift takes a signed desc:handoff-receive")
	}
	recv, recvEnc, recvSig, err := openEnvelope(args[1], "desc:handoff-receive")
	if err != nil {
		return nil, fmt.Errorf("ocapn: withdraw-gift: %w", err)
	}
	if len(recv.Fields) != 4 {
		return nil, fmt.Errorf("ocapn: desc:handoff-receive with %d fields, want 4", len(recv.Fields))
	}
	session, ok1 := bytesOf(recv.Fields[0])
	side, ok2 := bytesOf(recv.Fields[1])
	count, ok3 := recv.Fields[2].(int64)
	if !ok1 || !ok2 || !ok3 || count < 0 {
		return nil, errors.New("ocapn: desc:handoff-receive: malformed fields")
	}
	if !bytes.Equal(session, s.id) || !bytes.Equal(side, publicID(s.peerPub)) {
		return nil, errors.New("ocapn: desc:handoff-receive: for another session or side")
	}
	give, giveEnc, giveSig, err := openEnvelope(recv.Fields[3], "desc:handoff-give")
	if err != nil {
		return nil, fmt.Errorf("ocapn: desc:handoff-receive: %w", err)
	}
	g, err := parseHandoffGive(give)
	if err != nil {
		return nil, fmt.Errorf("ocapn: %w", err)
	}
	ge := s.n.byID[string(g.session)]
	if ge == nil {
		return nil, errors.New("ocapn: desc:handoff-give: no open session has that id")
	}
	if !bytes.Equal(g.gifterSide, publicID(ge.peerPub)) || !ed25519.Verify(ge.peerPub, giveEnc, giveSig) {
		return nil, errors.New("ocapn: desc:handoff-give: not signed by the gifter")
	}
	if !ed25519.Verify(g.receiverKey, recvEnc, recvSig) {
		return nil, errors.New("ocapn: desc:handoff-receive: not signed by the receiver")
	}
	if !s.counts.use(count, s.n.cfg.MaxGifts) {
		return nil, fmt.Errorf("ocapn: desc:handoff-receive: handoff count %d was used on this session", count)
	}
	key := string(g.giftID)
	if v, ok := ge.gifts[key]; ok {
		delete(ge.gifts, key)
		return v, nil
	}
	if ge.awaiting[key] != nil {
		return nil, errors.New("ocapn: withdraw-gift: that gift is being withdrawn already")
	}
	if len(s.withdrawals) >= s.n.cfg.MaxGifts {
		return nil, fmt.Errorf("ocapn: withdraw-gift: %d withdrawals wait for their gifts, the limit", len(s.withdrawals))
	}
	p, r := s.n.NewPromise()
	w := &withdrawal{ge: ge, er: s, giftID: key, r: r}
	if ge.awaiting == nil {
		ge.awaiting = make(map[string]*withdrawal)
	}
	if s.withdrawals == nil {
		s.withdrawals = make(map[*withdrawal]struct{})
	}
	ge.awaiting[key] = w
	s.withdrawals[w] = struct{}{}
	return p, nil
}

// endHandoffs drops the gifts s holds and the withdrawals that wait on
// it or were made on it. On the loop, as s ends.
func (s *session) endHandoffs(err error) {
	for _, w := range s.awaiting {
		delete(w.er.withdrawals, w)
		w.r.Break(fmt.Errorf("%w: the gifter's session ended: %v", ErrSessionEnded, err))
	}
	for w := range s.withdrawals {
		if w.ge.awaiting[w.giftID] == w {
			delete(w.ge.awaiting, w.giftID)
		}
	}
	s.gifts, s.awaiting, s.withdrawals = nil, nil, nil
}

// isSelf reports whether p names this node on one of its netlayers.
func (n *Node) isSelf(p Peer) bool {
	for _, nl := range n.served {
		if nl.Location().Same(p) {
			return true
		}
	}
	return false
}
