package ocap

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"runtime/debug"
	"strings"
	"unicode"
)

// Actor is an actor that handles its messages itself: Receive gets the
// method name and decodes the arguments with Message.Args. It runs in its
// vat's goroutine, one message at a time. What it returns fulfils the
// sender's promise (a *Promise chains: the sender's promise settles as it
// does); an error breaks it.
type Actor interface {
	Receive(ctx context.Context, m *Message) (any, error)
}

// Message is a message as an Actor receives it.
type Message struct {
	Method string
	args   payload
}

// Args decodes the message's arguments, in order, into the given pointers.
// The number of arguments must match.
func (m *Message) Args(out ...any) error {
	dec, done, err := m.args.newDecoder()
	if err != nil {
		return badArgs(m.Method, "the arguments are not msgpack: %v", err)
	}
	defer done()
	n, err := dec.DecodeArrayLen()
	if err != nil {
		return badArgs(m.Method, "the arguments are not an array: %v", err)
	}
	if n != len(out) {
		return badArgs(m.Method, "takes %d arguments, got %d", len(out), max(n, 0))
	}
	for i, o := range out {
		if err := dec.Decode(o); err != nil {
			return badArgs(m.Method, "argument %d: %v", i+1, err)
		}
	}
	return nil
}

// Values decodes the message's arguments, however many there are, into
// interface values, as Result.Value does: maps, slices, strings, numbers,
// and Ref for references.
func (m *Message) Values() ([]any, error) {
	var vals []any
	if err := m.args.decode(&vals); err != nil {
		return nil, badArgs(m.Method, "the arguments are not an array: %v", err)
	}
	return vals, nil
}

func badArgs(method, format string, args ...any) error {
	return remoteErrorf(CodeBadArgs, "method %q "+format, append([]any{method}, args...)...)
}

// Methods is an actor made of functions, one per method name, in the
// spirit of Goblins' methods. Each function may take a context.Context
// first (the turn's context, for On and Spawn), then any msgpack-decodable
// arguments, and return nothing, a value, an error, or a value and an
// error. A message with an unknown method, the wrong number of arguments or
// arguments of the wrong types breaks its promise with a *bokbok.RemoteError
// (CodeNoMethod or CodeBadArgs).
//
// Any other value with exported methods of those forms is an actor too:
// each method answers to its Go name and to its kebab-case form
// (MakeCar answers "MakeCar" and "make-car").
type Methods map[string]any

// behavior is what an actor does with a message.
type behavior interface {
	invoke(ctx context.Context, m *message) (any, error)
}

// actorCell is a spawned actor: a behaviour and the vat it runs in.
type actorCell struct {
	vat  *Vat
	b    behavior
	kind string // for Ref.String
}

func (c *actorCell) deliver(m *message, w *flow) { c.vat.enqueue(turn{cell: c, m: m}, w) }

// receive runs one message in the vat's goroutine and settles its answer.
func (c *actorCell) receive(ctx context.Context, m *message) {
	m.leftQueue()
	res, err := c.invokeSafely(ctx, m)
	if m.answer == nil {
		return
	}
	var w flow
	defer w.run()
	if err != nil {
		m.answer.settle(payload{}, err, &w)
		return
	}
	if p, ok := res.(*Promise); ok && p != nil {
		m.answer.follow(p.st, &w)
		return
	}
	pl, err := encodePayload(res)
	if err != nil {
		err = remoteErrorf(CodeError, "method %q: encoding the result: %v", m.method, err)
	}
	m.answer.settle(pl, err, &w)
}

func (c *actorCell) invokeSafely(ctx context.Context, m *message) (res any, err error) {
	defer func() {
		if p := recover(); p != nil {
			res, err = nil, remoteErrorf(CodePanic, "method %q panicked: %v\n%s", m.method, p, debug.Stack())
		}
	}()
	return c.b.invoke(ctx, m)
}

// newBehavior makes a behaviour from what the program spawns.
func newBehavior(actor any) (behavior, string, error) {
	switch a := actor.(type) {
	case nil:
		return nil, "", errors.New("ocap: spawn of a nil actor")
	case Actor:
		return actorBehavior{a}, fmt.Sprintf("%T", a), nil
	case Methods:
		t := methodTable{}
		for name, fn := range a {
			f, err := newMethodFunc(reflect.ValueOf(fn))
			if err != nil {
				return nil, "", fmt.Errorf("ocap: method %q: %w", name, err)
			}
			t[name] = f
		}
		return t, "Methods", nil
	}
	v := reflect.ValueOf(actor)
	t := methodTable{}
	for i := 0; i < v.NumMethod(); i++ {
		f, err := newMethodFunc(v.Method(i))
		if err != nil {
			continue // not a form a message can invoke
		}
		name := v.Type().Method(i).Name
		t[name] = f
		t[MethodName(name)] = f
	}
	if len(t) == 0 {
		return nil, "", fmt.Errorf("ocap: %T has no exported method a message can invoke", actor)
	}
	return t, fmt.Sprintf("%T", actor), nil
}

type actorBehavior struct{ a Actor }

func (b actorBehavior) invoke(ctx context.Context, m *message) (any, error) {
	return b.a.Receive(ctx, &Message{Method: m.method, args: m.args})
}

type methodTable map[string]methodFunc

func (t methodTable) invoke(ctx context.Context, m *message) (any, error) {
	f, ok := t[m.method]
	if !ok {
		return nil, remoteErrorf(CodeNoMethod, "no method %q", m.method)
	}
	return f.call(ctx, m)
}

var (
	ctxType = reflect.TypeFor[context.Context]()
	errType = reflect.TypeFor[error]()
)

// methodFunc is one invocable function and the shape of its signature.
type methodFunc struct {
	fn       reflect.Value
	takesCtx bool
	params   []reflect.Type
	value    bool // returns a value
	err      bool // returns an error last
}

func newMethodFunc(fn reflect.Value) (methodFunc, error) {
	if fn.Kind() != reflect.Func || fn.IsNil() {
		return methodFunc{}, errors.New("not a function")
	}
	t := fn.Type()
	if t.IsVariadic() {
		return methodFunc{}, errors.New("variadic functions are not supported")
	}
	f := methodFunc{fn: fn}
	for i := 0; i < t.NumIn(); i++ {
		in := t.In(i)
		if i == 0 && in == ctxType {
			f.takesCtx = true
			continue
		}
		f.params = append(f.params, in)
	}
	switch t.NumOut() {
	case 0:
	case 1:
		if t.Out(0) == errType {
			f.err = true
		} else {
			f.value = true
		}
	case 2:
		if t.Out(1) != errType {
			return methodFunc{}, errors.New("a second result must be an error")
		}
		f.value, f.err = true, true
	default:
		return methodFunc{}, errors.New("more than two results")
	}
	return f, nil
}

func (f methodFunc) call(ctx context.Context, m *message) (any, error) {
	in := make([]reflect.Value, 0, len(f.params)+1)
	if f.takesCtx {
		in = append(in, reflect.ValueOf(ctx))
	}
	if err := f.decodeArgs(m, &in); err != nil {
		return nil, err
	}
	out := f.fn.Call(in)
	var res any
	var err error
	if f.value {
		res = out[0].Interface()
	}
	if f.err {
		if e := out[len(out)-1]; !e.IsNil() {
			err = e.Interface().(error)
		}
	}
	return res, err
}

func (f methodFunc) decodeArgs(m *message, in *[]reflect.Value) error {
	dec, done, err := m.args.newDecoder()
	if err != nil {
		return badArgs(m.method, "the arguments are not msgpack: %v", err)
	}
	defer done()
	n, err := dec.DecodeArrayLen()
	if err != nil {
		return badArgs(m.method, "the arguments are not an array: %v", err)
	}
	if n != len(f.params) {
		return badArgs(m.method, "takes %d arguments, got %d", len(f.params), max(n, 0))
	}
	for i, t := range f.params {
		v := reflect.New(t)
		if err := dec.Decode(v.Interface()); err != nil {
			return badArgs(m.method, "argument %d (%s): %v", i+1, t, err)
		}
		*in = append(*in, v.Elem())
	}
	return nil
}

// MethodName returns the name a peer uses to call an actor's exported Go
// method: its kebab-case form. MakeCar is reached as make-car, HTTPGet as
// http-get, Get2Things as get2-things.
func MethodName(goName string) string {
	name := goName
	rs := []rune(name)
	var b strings.Builder
	for i, r := range rs {
		if unicode.IsUpper(r) {
			prevLower := i > 0 && (unicode.IsLower(rs[i-1]) || unicode.IsDigit(rs[i-1]))
			nextLower := i > 0 && i+1 < len(rs) && unicode.IsUpper(rs[i-1]) && unicode.IsLower(rs[i+1])
			if prevLower || nextLower {
				b.WriteByte('-')
			}
			r = unicode.ToLower(r)
		}
		b.WriteRune(r)
	}
	return b.String()
}
