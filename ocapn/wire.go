package ocapn

import (
	"fmt"
	"reflect"

	"github.com/bokbok-go/bokbok/ocapn/syrup"
)

// Values on the wire hold descriptors where they hold references:
//
//	<desc:import-object N>   the sender's object N    -> a *Ref here
//	<desc:import-promise N>  the sender's promise N   -> a *Ref here
//	<desc:export N>          the receiver's object N  -> that Object or *Promise
//	<desc:answer N>          the receiver's answer N  -> that *Promise
//	<void>                   undefined                -> nil
//	<desc:sig-envelope <desc:handoff-give ...> sig>
//	                         a third party's object   -> a *Promise here
//
// fromWire turns a peer's descriptors into references; toWire does the
// reverse for what this side sends.

// badArgsError is a message whose arguments cannot be taken: the message
// breaks, the session goes on.
type badArgsError struct{ msg string }

func (e *badArgsError) Error() string { return "ocapn: bad arguments: " + e.msg }

// fromWire replaces, in place, the descriptors in args (a decoded Syrup
// list, which this side owns) with what they name. It walks the value
// with a stack of its own, never recursing, so nesting as deep as the
// decoder allows costs no goroutine stack.
func (s *session) fromWire(args []any) error {
	stack := []*any{}
	for i := range args {
		stack = append(stack, &args[i])
	}
	for len(stack) > 0 {
		slot := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		switch x := (*slot).(type) {
		case []any:
			for i := range x {
				stack = append(stack, &x[i])
			}
		case syrup.Dict:
			for i := range x {
				stack = append(stack, &x[i].Key, &x[i].Value)
			}
		case syrup.Set:
			for i := range x {
				stack = append(stack, &x[i])
			}
		case syrup.Record:
			label, _ := x.Label.(syrup.Symbol)
			switch label {
			case "desc:import-object", "desc:import-promise", "desc:export", "desc:answer":
				v, err := s.fromDescriptor(x)
				if err != nil {
					return err
				}
				*slot = v
			case "void":
				if len(x.Fields) == 0 {
					*slot = nil // OCapN's undefined
					continue
				}
				stack = append(stack, &x.Label)
			case "desc:sig-envelope":
				if inner, ok := x.Fields[0].(syrup.Record); len(x.Fields) == 2 && ok && inner.Label == sym("desc:handoff-give") {
					p, err := s.receiveHandoff(x)
					if err != nil {
						return err
					}
					*slot = p
				}
				// Other envelopes (a handoff-receive for withdraw-gift)
				// stay as they came: what they sign must not change.
			case "desc:handoff-give", "desc:handoff-receive":
				// Unsigned: left as data.
			default:
				stack = append(stack, &x.Label)
				for i := range x.Fields {
					stack = append(stack, &x.Fields[i])
				}
			}
		}
	}
	return nil
}

// fromDescriptor returns what one descriptor names.
func (s *session) fromDescriptor(r syrup.Record) (any, error) {
	kind, pos, ok := descriptor(r, "desc:import-object", "desc:import-promise", "desc:export", "desc:answer")
	if !ok {
		return nil, &badArgsError{fmt.Sprintf("a malformed %v", r.Label)}
	}
	switch kind {
	case "desc:import-object", "desc:import-promise":
		return s.importRef(pos, kind == "desc:import-promise") // beyond MaxImports: the session aborts
	case "desc:export":
		if e := s.exports[pos]; e != nil {
			return e.v, nil
		}
		return nil, &badArgsError{fmt.Sprintf("desc:export %d is not exported", pos)}
	default:
		if p := s.answers[pos]; p != nil {
			return p, nil
		}
		return nil, &badArgsError{fmt.Sprintf("desc:answer %d is not open", pos)}
	}
}

// toWire returns v with its references as descriptors for this session;
// v is the application's (an object's result, Deliver's arguments) and is
// not changed. It recurses, at most syrup.MaxEncodeDepth deep: values a
// peer sent are at most the decoder's MaxDepth deep.
func (s *session) toWire(v any, depth int) (any, error) {
	if depth > syrup.MaxEncodeDepth {
		return nil, fmt.Errorf("ocapn: value nested more than %d deep", syrup.MaxEncodeDepth)
	}
	switch x := v.(type) {
	case nil:
		return syrup.Record{Label: sym("void"), Fields: []any{}}, nil
	case *Ref:
		if x.s != s {
			return s.give(x) // a third-party handoff
		}
		return syrup.Record{Label: sym("desc:export"), Fields: []any{int64(x.pos)}}, nil
	case *Promise:
		pos, err := s.exportValue(x)
		if err != nil {
			return nil, err
		}
		return syrup.Record{Label: sym("desc:import-promise"), Fields: []any{int64(pos)}}, nil
	case Object:
		pos, err := s.exportValue(x)
		if err != nil {
			return nil, err
		}
		return syrup.Record{Label: sym("desc:import-object"), Fields: []any{int64(pos)}}, nil
	case []any:
		out := make([]any, len(x))
		for i, item := range x {
			var err error
			if out[i], err = s.toWire(item, depth+1); err != nil {
				return nil, err
			}
		}
		return out, nil
	case syrup.Dict:
		out := make(syrup.Dict, len(x))
		for i, e := range x {
			k, err := s.toWire(e.Key, depth+1)
			if err != nil {
				return nil, err
			}
			val, err := s.toWire(e.Value, depth+1)
			if err != nil {
				return nil, err
			}
			out[i] = syrup.Entry{Key: k, Value: val}
		}
		return out, nil
	case syrup.Set:
		out := make(syrup.Set, len(x))
		for i, m := range x {
			var err error
			if out[i], err = s.toWire(m, depth+1); err != nil {
				return nil, err
			}
		}
		return out, nil
	case syrup.Record:
		label, err := s.toWire(x.Label, depth+1)
		if err != nil {
			return nil, err
		}
		fields := make([]any, len(x.Fields))
		for i, f := range x.Fields {
			if fields[i], err = s.toWire(f, depth+1); err != nil {
				return nil, err
			}
		}
		return syrup.Record{Label: label, Fields: fields}, nil
	}
	return v, nil
}

// comparable reports whether v can be a map key.
func comparable(v any) bool { return reflect.TypeOf(v).Comparable() }
