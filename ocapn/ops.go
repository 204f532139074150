package ocapn

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"math"

	"github.com/bokbok-go/bokbok/ocapn/syrup"
)

// startSession is a peer's op:start-session, verified.
type startSession struct {
	pub      ed25519.PublicKey
	location Peer
}

// startSessionMessage encodes this side's
// <op:start-session version pubkey location location-sig>, the location
// signed as <my-location location>.
func startSessionMessage(k sessionKey, loc Peer) ([]byte, error) {
	msg, err := locationMessage(loc)
	if err != nil {
		return nil, err
	}
	sig := ed25519.Sign(k.priv, msg)
	return syrup.Marshal(syrup.Record{Label: sym("op:start-session"), Fields: []any{
		CapTPVersion, publicKeySyrup(k.pub), loc.syrup(), signatureSyrup(sig),
	}})
}

// parseStartSession checks an op:start-session: the version, the forms
// of key and signature, and the signature over the location exactly as
// received.
func parseStartSession(r syrup.Record) (startSession, error) {
	if len(r.Fields) != 4 {
		return startSession{}, fmt.Errorf("op:start-session with %d fields, want 4", len(r.Fields))
	}
	if v, ok := r.Fields[0].(string); !ok || v != CapTPVersion {
		return startSession{}, fmt.Errorf("unsupported CapTP version %v (this side speaks %s)", r.Fields[0], CapTPVersion)
	}
	pub, err := publicKeyFromSyrup(r.Fields[1])
	if err != nil {
		return startSession{}, fmt.Errorf("op:start-session: %w", err)
	}
	loc, err := peerFromSyrup(r.Fields[2])
	if err != nil {
		return startSession{}, fmt.Errorf("op:start-session: %w", err)
	}
	sig, err := signatureFromSyrup(r.Fields[3])
	if err != nil {
		return startSession{}, fmt.Errorf("op:start-session: %w", err)
	}
	signed, err := syrup.Marshal(syrup.Record{Label: sym("my-location"), Fields: []any{r.Fields[2]}})
	if err != nil || !ed25519.Verify(pub, signed, sig) {
		return startSession{}, errors.New("op:start-session: the location signature does not verify")
	}
	return startSession{pub: pub, location: loc}, nil
}

// position reads a table position: a non-negative integer.
func position(v any) (int, bool) {
	n, ok := v.(int64)
	if !ok || n < 0 || n > math.MaxInt32 {
		return 0, false
	}
	return int(n), true
}

// descriptor reads <label position>, for one of labels.
func descriptor(v any, labels ...string) (string, int, bool) {
	r, ok := v.(syrup.Record)
	if !ok || len(r.Fields) != 1 {
		return "", 0, false
	}
	label, _ := r.Label.(syrup.Symbol)
	for _, l := range labels {
		if string(label) == l {
			pos, ok := position(r.Fields[0])
			return l, pos, ok
		}
	}
	return "", 0, false
}

// target looks up what a message's to-desc names: one of our exports or
// one of the peer's answers.
func (s *session) target(v any) (any, error) {
	kind, pos, ok := descriptor(v, "desc:export", "desc:answer")
	if !ok {
		return nil, errors.New("a message's target is neither desc:export nor desc:answer")
	}
	if kind == "desc:export" {
		if e := s.exports[pos]; e != nil {
			return e.v, nil
		}
		return nil, fmt.Errorf("a message to export %d, which this side has not exported", pos)
	}
	if p := s.answers[pos]; p != nil {
		return p, nil
	}
	return nil, fmt.Errorf("a message to answer %d, which is not open", pos)
}

// onDeliver handles op:deliver-only <to args> and
// op:deliver <to args answer-pos resolve-me-desc>. An error aborts the
// session; arguments that do not convert break the message instead.
func (s *session) onDeliver(r syrup.Record, answer bool) error {
	want := 2
	if answer {
		want = 4
	}
	if len(r.Fields) != want {
		return fmt.Errorf("%v with %d fields, want %d", r.Label, len(r.Fields), want)
	}
	to, err := s.target(r.Fields[0])
	if err != nil {
		return err
	}
	args, ok := r.Fields[1].([]any)
	if !ok {
		return fmt.Errorf("%v: args are not a list", r.Label)
	}
	var (
		answerP  *Promise
		answerR  *Resolver
		resolver *Ref
	)
	if answer {
		if pos, ok := position(r.Fields[2]); ok {
			if s.answers[pos] != nil {
				return fmt.Errorf("answer position %d is already open", pos)
			}
			if len(s.answers) >= s.n.cfg.MaxAnswers {
				return fmt.Errorf("the peer has %d answers open, the limit", len(s.answers))
			}
			answerP, answerR = s.n.NewPromise()
			s.answers[pos] = answerP
		} else if r.Fields[2] != false {
			return errors.New("op:deliver: answer-pos is neither a position nor false")
		}
		if r.Fields[3] != false {
			_, pos, ok := descriptor(r.Fields[3], "desc:import-object", "desc:import-promise")
			if !ok {
				return errors.New("op:deliver: resolve-me-desc is neither an import nor false")
			}
			if resolver, err = s.importRef(pos, false); err != nil {
				return err
			}
		}
	}
	settle := func(v any, err error) {
		if answerR != nil {
			if err != nil {
				answerR.Break(err)
			} else {
				answerR.Fulfill(v)
			}
		}
		if resolver != nil {
			s.notify(resolver, v, err)
		}
	}
	if err := s.fromWire(args); err != nil {
		var bad *badArgsError
		if errors.As(err, &bad) {
			settle(nil, err)
			return nil
		}
		return err
	}
	if !answer {
		settle = nil
	}
	if p, ok := to.(*Promise); ok && !p.resolved {
		if s.waiting >= s.n.cfg.MaxWaiting {
			return fmt.Errorf("the peer has %d messages waiting on promises, the limit", s.waiting)
		}
		s.waiting++
		p.whenSettled(func(any, error) { s.waiting-- })
	}
	deliverTo(to, args, settle)
	return nil
}

// notify tells the peer's resolver the settled result: fulfill or
// break. A result that is a promise is waited for.
func (s *session) notify(resolver *Ref, v any, err error) {
	if p, ok := v.(*Promise); ok && err == nil {
		p.whenSettled(func(v any, err error) { s.notify(resolver, v, err) })
		return
	}
	if err != nil {
		resolver.deliverOnly(sym("break"), errorValue(err))
		return
	}
	resolver.deliverOnly(sym("fulfill"), v)
}

// errorValue is what the peer is sent for err: what it broke with, if it
// did, else the message.
func errorValue(err error) any {
	var be *BrokenError
	if errors.As(err, &be) {
		return be.Reason
	}
	return err.Error()
}

// onListen handles op:listen <to-desc listen-desc [wants-partial]>.
func (s *session) onListen(r syrup.Record) error {
	if len(r.Fields) != 2 && len(r.Fields) != 3 {
		return fmt.Errorf("op:listen with %d fields, want 2 or 3", len(r.Fields))
	}
	t, err := s.target(r.Fields[0])
	if err != nil {
		return err
	}
	_, pos, ok := descriptor(r.Fields[1], "desc:import-object", "desc:import-promise")
	if !ok {
		return errors.New("op:listen: listen-desc is not an import")
	}
	listener, err := s.importRef(pos, false)
	if err != nil {
		return err
	}
	switch x := t.(type) {
	case *Promise:
		x.whenSettled(func(v any, err error) { s.notify(listener, v, err) })
	case *Ref:
		x.Deliver().whenSettled(func(v any, err error) { s.notify(listener, v, err) })
	default:
		s.notify(listener, t, nil) // not a promise: it is its own resolution
	}
	return nil
}

// onGCExport handles op:gc-export <positions wire-deltas>: the peer has
// dropped that many of the references we sent it.
func (s *session) onGCExport(r syrup.Record) error {
	if len(r.Fields) != 2 {
		return fmt.Errorf("op:gc-export with %d fields, want 2", len(r.Fields))
	}
	positions, ok1 := asList(r.Fields[0])
	deltas, ok2 := asList(r.Fields[1])
	if !ok1 || !ok2 || len(positions) != len(deltas) {
		return errors.New("op:gc-export: want two lists of equal length")
	}
	for i := range positions {
		pos, ok1 := position(positions[i])
		delta, ok2 := position(deltas[i])
		if !ok1 || !ok2 {
			return errors.New("op:gc-export: positions and deltas are non-negative integers")
		}
		e := s.exports[pos]
		if pos == 0 || e == nil {
			continue // the bootstrap object stays; an unknown position was collected already
		}
		if e.count -= delta; e.count <= 0 {
			delete(s.exports, pos)
			if comparable(e.v) {
				delete(s.exportOf, e.v)
			}
		}
	}
	return nil
}

// onGCAnswer handles op:gc-answer <positions>.
func (s *session) onGCAnswer(r syrup.Record) error {
	if len(r.Fields) != 1 {
		return fmt.Errorf("op:gc-answer with %d fields, want 1", len(r.Fields))
	}
	positions, ok := asList(r.Fields[0])
	if !ok {
		if _, single := position(r.Fields[0]); single {
			positions = []any{r.Fields[0]}
		} else {
			return errors.New("op:gc-answer: want a list of positions")
		}
	}
	for _, p := range positions {
		pos, ok := position(p)
		if !ok {
			return errors.New("op:gc-answer: positions are non-negative integers")
		}
		delete(s.answers, pos)
	}
	return nil
}

func asList(v any) ([]any, bool) {
	l, ok := v.([]any)
	return l, ok
}
