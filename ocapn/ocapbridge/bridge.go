package ocapbridge

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/big"

	"github.com/bokbok-go/bokbok/ocap"
	"github.com/bokbok-go/bokbok/ocapn"
	"github.com/bokbok-go/bokbok/ocapn/syrup"
)

// Bridge joins an OCapN node and an ocap vat: exported actors' answers are
// taken in the vat's turns, imported references' proxies are actors of the
// vat. Its methods may be called from any goroutine.
type Bridge struct {
	node *ocapn.Node
	vat  *ocap.Vat
}

// New returns a bridge between node and vat; both stay the caller's to
// close.
func New(node *ocapn.Node, vat *ocap.Vat) *Bridge { return &Bridge{node: node, vat: vat} }

// Export returns an OCapN object that forwards each message it receives
// to actor (see the package documentation for how messages and values
// are mapped) and resolves with the actor's answer.
func (b *Bridge) Export(actor ocap.Ref) ocapn.Object { return exported{b: b, ref: actor} }

// Import returns a reference through which ocap actors send to target: a
// *ocapn.Ref (a peer's object), a *ocapn.Promise, or an ocapn.Object of
// the bridge's node. The reference names a proxy actor in the bridge's
// vat that sends each message on over OCapN.
func (b *Bridge) Import(target any) ocap.Ref {
	if e, ok := target.(exported); ok && e.b == b {
		return e.ref
	}
	return b.vat.Spawn(imported{b: b, target: target})
}

// exported is an ocap actor offered to OCapN peers.
type exported struct {
	b   *Bridge
	ref ocap.Ref
}

// Deliver runs on the OCapN node's event loop and does not wait: the
// answer is a promise settled in the vat's turn.
func (e exported) Deliver(args []any) (any, error) {
	method := ""
	if len(args) > 0 {
		if s, ok := args[0].(syrup.Symbol); ok {
			method, args = string(s), args[1:]
		}
	}
	vals := make([]any, len(args))
	for i, a := range args {
		v, err := e.b.toOcap(a, 0)
		if err != nil {
			return nil, fmt.Errorf("ocapbridge: argument %d: %w", i+1, err)
		}
		vals[i] = v
	}
	answer := e.ref.Send(method, vals...)
	p, r := e.b.node.NewPromise()
	e.b.vat.On(answer, func(res ocap.Result) {
		v, err := res.Value()
		if err == nil {
			v, err = e.b.toOCapN(v, 0)
		}
		if err != nil {
			r.Break(fmt.Errorf("ocapbridge: the answer: %w", err))
			return
		}
		r.Fulfill(v)
	}, r.Break)
	return p, nil
}

// imported is an ocap actor standing for an OCapN reference.
type imported struct {
	b      *Bridge
	target any
}

// Receive sends the message on over OCapN and answers with a promise for
// the peer's answer.
func (i imported) Receive(_ context.Context, m *ocap.Message) (any, error) {
	vals, err := m.Values()
	if err != nil {
		return nil, err
	}
	args := make([]any, 0, len(vals)+1)
	if m.Method != "" {
		args = append(args, syrup.Symbol(m.Method))
	}
	for n, v := range vals {
		sv, err := i.b.toOCapN(v, 0)
		if err != nil {
			return nil, fmt.Errorf("ocapbridge: argument %d: %w", n+1, err)
		}
		args = append(args, sv)
	}
	p, r := ocap.NewPromise()
	i.b.node.Send(i.target, args...).Then(func(v any, err error) {
		if err == nil {
			v, err = i.b.toOcap(v, 0)
		}
		if err != nil {
			r.Break(err)
			return
		}
		r.Fulfil(v)
	})
	return p, nil
}

var errTooDeep = fmt.Errorf("nested more than %d deep", syrup.MaxEncodeDepth)

// toOcap maps a Syrup value to ocap's MessagePack model.
func (b *Bridge) toOcap(v any, depth int) (any, error) {
	if depth > syrup.MaxEncodeDepth {
		return nil, errTooDeep
	}
	switch x := v.(type) {
	case nil, bool, int64, float64, string, []byte:
		return x, nil
	case float32:
		return float64(x), nil
	case syrup.Symbol:
		return string(x), nil
	case *big.Int:
		return nil, errors.New("an integer beyond 64 bits has no ocap form")
	case []any:
		return b.listToOcap(x, depth)
	case syrup.Set:
		return b.listToOcap(x, depth)
	case syrup.Dict:
		out := make(map[string]any, len(x))
		for _, e := range x {
			var k string
			switch key := e.Key.(type) {
			case string:
				k = key
			case syrup.Symbol:
				k = string(key)
			default:
				return nil, fmt.Errorf("a dictionary key of type %T has no ocap form (keys are text)", e.Key)
			}
			if _, dup := out[k]; dup {
				return nil, fmt.Errorf("dictionary key %q given as a string and as a symbol", k)
			}
			val, err := b.toOcap(e.Value, depth+1)
			if err != nil {
				return nil, err
			}
			out[k] = val
		}
		return out, nil
	case syrup.Record:
		return nil, fmt.Errorf("a record (%v) has no ocap form", x.Label)
	case *ocapn.Ref, *ocapn.Promise, ocapn.Object:
		return b.Import(x), nil
	}
	return nil, fmt.Errorf("a value of type %T has no ocap form", v)
}

func (b *Bridge) listToOcap(items []any, depth int) ([]any, error) {
	out := make([]any, len(items))
	for i, item := range items {
		v, err := b.toOcap(item, depth+1)
		if err != nil {
			return nil, err
		}
		out[i] = v
	}
	return out, nil
}

// toOCapN maps a value ocap decoded to Syrup's model.
func (b *Bridge) toOCapN(v any, depth int) (any, error) {
	if depth > syrup.MaxEncodeDepth {
		return nil, errTooDeep
	}
	switch x := v.(type) {
	case nil, bool, string, []byte, float64, int64:
		return x, nil
	case float32:
		return float64(x), nil
	case int:
		return int64(x), nil
	case int8:
		return int64(x), nil
	case int16:
		return int64(x), nil
	case int32:
		return int64(x), nil
	case uint:
		return unsigned(uint64(x)), nil
	case uint8:
		return int64(x), nil
	case uint16:
		return int64(x), nil
	case uint32:
		return int64(x), nil
	case uint64:
		return unsigned(x), nil
	case ocap.Ref:
		return b.Export(x), nil
	case []any:
		out := make([]any, len(x))
		for i, item := range x {
			sv, err := b.toOCapN(item, depth+1)
			if err != nil {
				return nil, err
			}
			out[i] = sv
		}
		return out, nil
	case map[string]any:
		out := make(syrup.Dict, 0, len(x))
		for k, val := range x {
			sv, err := b.toOCapN(val, depth+1)
			if err != nil {
				return nil, err
			}
			out = append(out, syrup.Entry{Key: k, Value: sv})
		}
		return out, nil
	case map[any]any:
		out := make(syrup.Dict, 0, len(x))
		for k, val := range x {
			sk, err := b.toOCapN(k, depth+1)
			if err != nil {
				return nil, err
			}
			sv, err := b.toOCapN(val, depth+1)
			if err != nil {
				return nil, err
			}
			out = append(out, syrup.Entry{Key: sk, Value: sv})
		}
		return out, nil
	}
	return nil, fmt.Errorf("a value of type %T has no OCapN form", v)
}

// unsigned is n as an int64, or a *big.Int above MaxInt64.
func unsigned(n uint64) any {
	if n <= math.MaxInt64 {
		return int64(n)
	}
	return new(big.Int).SetUint64(n)
}
