package bokbok

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/vmihailenco/msgpack/v5"
)

type typedGetRequest struct {
	Key string `msgpack:"key"`
}

type typedGetReply struct {
	Value string `msgpack:"value"`
	Found bool   `msgpack:"found"`
}

type typedOwner struct {
	ID   int    `msgpack:"id"`
	Name string `msgpack:"name,omitempty"`
}

type typedItem struct {
	Name  string `msgpack:"name"`
	Count int    `msgpack:"count"`
}

type typedEmbedded struct {
	InnerID int `msgpack:"inner_id"`
}

type typedOrder struct {
	typedEmbedded                      // inlined: its fields are the order's
	ID            int                  `msgpack:"id"`
	Owner         typedOwner           `msgpack:"owner"`
	Backup        *typedOwner          `msgpack:"backup"`
	Items         []typedItem          `msgpack:"items"`
	Grid          [2][]typedItem       `msgpack:"grid"`
	Labels        map[string]typedItem `msgpack:"labels"`
	Tags          []string             `msgpack:"tags"`
	Blob          []byte               `msgpack:"blob"`
	Any           any                  `msgpack:"any"`
	When          time.Time            `msgpack:"when"`
	JSONOnly      string               `json:"json_only"` // msgpack ignores json tags: its key is JSONOnly
	Skipped       string               `msgpack:"-"`
	Aliased       int                  `msgpack:"aliased,alias:old_name"`
	unexported    int
}

// typedKV is a Mux serving "kv.get" and "order.put" with typed handlers.
func typedKV() *Mux {
	mux := NewMux()
	Handle(mux, "kv.get", func(ctx context.Context, req typedGetRequest) (typedGetReply, error) {
		if req.Key == "missing" {
			return typedGetReply{}, nil
		}
		return typedGetReply{Value: "v(" + req.Key + ")", Found: true}, nil
	})
	Handle(mux, "order.put", func(ctx context.Context, req typedOrder) (int, error) {
		return req.ID + req.InnerID + req.Aliased, nil
	})
	return mux
}

func TestTypedHandleAndInvoke(t *testing.T) {
	client := muxPair(t, typedKV())
	ctx := testCtx(t)

	reply, err := Invoke[typedGetReply](ctx, client, "kv.get", typedGetRequest{Key: "k"})
	require.NoError(t, err)
	assert.Equal(t, typedGetReply{Value: "v(k)", Found: true}, reply)

	// Any message with the right fields does, a map as well as a struct.
	reply, err = Invoke[typedGetReply](ctx, client, "kv.get", map[string]any{"key": "m"})
	require.NoError(t, err)
	assert.Equal(t, typedGetReply{Value: "v(m)", Found: true}, reply)

	// Fields may be left out.
	reply, err = Invoke[typedGetReply](ctx, client, "kv.get", map[string]any{})
	require.NoError(t, err)
	assert.Equal(t, typedGetReply{Value: "v()", Found: true}, reply)

	n, err := Invoke[int](ctx, client, "order.put", map[string]any{
		"id": 1, "inner_id": 10, "old_name": 100, "JSONOnly": "j",
		"owner": map[string]any{"id": 7, "name": "o"}, "backup": nil,
		"items":  []any{map[string]any{"name": "a", "count": 1}},
		"grid":   []any{[]any{}, []any{map[string]any{"name": "g"}}},
		"labels": map[string]any{"x": map[string]any{"name": "l"}},
		"tags":   []string{"t"}, "blob": []byte{1}, "any": map[string]any{"whatever": 1},
		"when": time.Unix(1, 0),
	})
	require.NoError(t, err)
	assert.Equal(t, 111, n)

	// The plain Invoke of a typed method works as well.
	var raw map[string]any
	require.NoError(t, client.Invoke(ctx, "kv.get", typedGetRequest{Key: "r"}, &raw))
	assert.Equal(t, map[string]any{"value": "v(r)", "found": true}, raw)
}

// TestTypedBadRequest sends requests that do not decode into the typed
// handler's request type: each is refused with ErrBadRequest, naming the
// method and the field, and the handler never runs.
func TestTypedBadRequest(t *testing.T) {
	client := muxPair(t, typedKV())
	ctx := testCtx(t)
	for _, tc := range []struct {
		name   string
		method string
		msg    any
		want   string
	}{
		{"wrong field type", "kv.get", map[string]any{"key": 5},
			`kv.get: request field "key": cannot decode a msgpack integer into string`},
		{"unknown field", "kv.get", map[string]any{"kye": "k"},
			`kv.get: request has unknown field "kye"`},
		{"unknown field after good ones", "kv.get", map[string]any{"key": "k", "zzz": 1},
			`kv.get: request has unknown field "zzz"`},
		{"not a map", "kv.get", 5,
			`kv.get: request: cannot decode a msgpack integer into bokbok.typedGetRequest`},
		{"nested struct field", "order.put", map[string]any{"owner": map[string]any{"id": "x"}},
			`order.put: request field "owner.id": cannot decode a msgpack string into int`},
		{"nested unknown field", "order.put", map[string]any{"owner": map[string]any{"id": 1, "kye": 1}},
			`order.put: request has unknown field "owner.kye"`},
		{"pointer to struct", "order.put", map[string]any{"backup": map[string]any{"id": []any{}}},
			`order.put: request field "backup.id": cannot decode a msgpack array into int`},
		{"slice element field", "order.put", map[string]any{"items": []any{
			map[string]any{"name": "a"}, map[string]any{"name": "b"}, map[string]any{"name": 3}}},
			`order.put: request field "items[2].name": cannot decode a msgpack integer into string`},
		{"slice element unknown field", "order.put", map[string]any{"items": []any{
			map[string]any{"name": "a"}, map[string]any{"nmae": "b"}}},
			`order.put: request has unknown field "items[1].nmae"`},
		{"slice element not a map", "order.put", map[string]any{"items": []any{map[string]any{}, true}},
			`order.put: request field "items[1]": cannot decode a msgpack boolean into bokbok.typedItem`},
		{"array of slices", "order.put", map[string]any{"grid": []any{[]any{}, []any{map[string]any{"count": 1.5}}}},
			`order.put: request field "grid[1][0].count": cannot decode a msgpack float into int`},
		{"array too long", "order.put", map[string]any{"grid": []any{[]any{}, []any{}, []any{}}},
			`order.put: request field "grid": [2][]bokbok.typedItem len is 2, but msgpack has 3 elements`},
		{"map value field", "order.put", map[string]any{"labels": map[string]any{"env": map[string]any{"name": true}}},
			`order.put: request field "labels.env.name": cannot decode a msgpack boolean into string`},
		{"string slice element", "order.put", map[string]any{"tags": []any{"a", 1}},
			`order.put: request field "tags[1]": cannot decode a msgpack integer into string`},
		{"slice field not an array", "order.put", map[string]any{"items": 7},
			`order.put: request field "items": cannot decode a msgpack integer into []bokbok.typedItem`},
		{"bytes", "order.put", map[string]any{"blob": map[string]any{}},
			`order.put: request field "blob": cannot decode a msgpack map into []uint8`},
		{"inlined embedded field", "order.put", map[string]any{"inner_id": "x"},
			`order.put: request field "inner_id": cannot decode a msgpack string into int`},
		{"alias", "order.put", map[string]any{"old_name": "x"},
			`order.put: request field "old_name": cannot decode a msgpack string into int`},
		{"json tag is not a name", "order.put", map[string]any{"json_only": "x"},
			`order.put: request has unknown field "json_only"`},
		{"msgpack:\"-\" is not a field", "order.put", map[string]any{"Skipped": "x"},
			`order.put: request has unknown field "Skipped"`},
		{"unexported is not a field", "order.put", map[string]any{"unexported": 1},
			`order.put: request has unknown field "unexported"`},
		{"Go name of a tagged field is not a name", "order.put", map[string]any{"ID": 1},
			`order.put: request has unknown field "ID"`},
		// msgpack panics decoding the whole message (Request.Decode would),
		// but decodes the field alone through time.Time's UnmarshalText.
		{"a decoder that panics, then its own error", "order.put", map[string]any{"when": "noon"},
			`order.put: request field "when": parsing time "noon" as "2006-01-02T15:04:05.999999999Z07:00": cannot parse "noon" as "2006"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Invoke[any](ctx, client, tc.method, tc.msg)
			require.Error(t, err)
			assert.ErrorIs(t, err, ErrBadRequest)
			var re *RemoteError
			require.ErrorAs(t, err, &re)
			assert.Equal(t, CodeBadRequest, re.Code)
			assert.Equal(t, tc.want, re.Message)
		})
	}
}

func TestTypedHandlerSeesRequestFromContext(t *testing.T) {
	mux := NewMux()
	Handle(mux, "who", func(ctx context.Context, req typedGetRequest) (string, error) {
		r := RequestFromContext(ctx)
		if r == nil {
			return "", errors.New("no request in the context")
		}
		r.SetReplyMetadata(Metadata{"seen": r.Metadata()["tenant"]})
		return r.Method() + "/" + req.Key, nil
	})
	client := muxPair(t, mux)
	ctx := WithMetadata(testCtx(t), Metadata{"tenant": "t1"})
	resp, err := client.RequestMethod(ctx, "who", typedGetRequest{Key: "k"})
	require.NoError(t, err)
	var got string
	require.NoError(t, resp.Decode(&got))
	assert.Equal(t, "who/k", got)
	assert.Equal(t, Metadata{"seen": "t1"}, resp.Metadata())
}

func TestTypedHandlerErrors(t *testing.T) {
	mux := NewMux()
	Handle(mux, "fail", func(ctx context.Context, req int) (typedGetReply, error) {
		return typedGetReply{Value: "partial"}, Errorf("app.fail", "failed on %d", req)
	})
	Handle(mux, "ptr", func(ctx context.Context, req *typedGetRequest) (*typedGetReply, error) {
		if req == nil {
			return nil, nil
		}
		return &typedGetReply{Value: req.Key}, nil
	})
	client := muxPair(t, mux)
	ctx := testCtx(t)

	reply, err := Invoke[typedGetReply](ctx, client, "fail", 3)
	var re *RemoteError
	require.ErrorAs(t, err, &re)
	assert.Equal(t, RemoteError{Code: "app.fail", Message: "failed on 3"}, *re)
	assert.Zero(t, reply)

	p, err := Invoke[*typedGetReply](ctx, client, "ptr", typedGetRequest{Key: "p"})
	require.NoError(t, err)
	assert.Equal(t, &typedGetReply{Value: "p"}, p)
	p, err = Invoke[*typedGetReply](ctx, client, "ptr", nil)
	require.NoError(t, err)
	assert.Nil(t, p)

	_, err = Invoke[int](ctx, client, "nope", 1)
	assert.ErrorIs(t, err, ErrNoMethod)
}

func TestTypedNotifications(t *testing.T) {
	var (
		mu  sync.Mutex
		got []string
	)
	note := func(s string) {
		mu.Lock()
		got = append(got, s)
		mu.Unlock()
	}
	done := make(chan struct{})
	mux := NewMux()
	// Handle serves notifications too; the reply is discarded.
	Handle(mux, "log.line", func(ctx context.Context, req typedItem) (string, error) {
		note(fmt.Sprintf("line %s %d", req.Name, req.Count))
		return "discarded", nil
	})
	HandleNotification(mux, "log.count", func(ctx context.Context, req int) error {
		if RequestFromContext(ctx).IsNotification() {
			note(fmt.Sprintf("count %d", req))
		}
		return nil
	})
	HandleNotification(mux, "log.end", func(ctx context.Context, req struct{}) error {
		close(done)
		return nil
	})
	client := muxPair(t, mux)
	ctx := testCtx(t)

	var want []string
	for i := range 20 {
		if i%2 == 0 {
			require.NoError(t, client.NotifyMethod(ctx, "log.line", typedItem{Name: "n", Count: i}))
			want = append(want, fmt.Sprintf("line n %d", i))
		} else {
			require.NoError(t, client.NotifyMethod(ctx, "log.count", i))
			want = append(want, fmt.Sprintf("count %d", i))
		}
		if i%5 == 0 { // does not decode: not delivered, and the next ones are
			require.NoError(t, client.NotifyMethod(ctx, "log.line", map[string]any{"nope": 1}))
			require.NoError(t, client.NotifyMethod(ctx, "log.count", "not a number"))
		}
	}
	require.NoError(t, client.NotifyMethod(ctx, "log.end", map[string]any{}))
	select {
	case <-done:
	case <-ctx.Done():
		t.Fatal("the last notification never arrived")
	}
	mu.Lock()
	assert.Equal(t, want, got)
	mu.Unlock()

	// A request to a notification method is answered with nil.
	resp, err := client.RequestMethod(ctx, "log.count", 1)
	require.NoError(t, err)
	assert.Equal(t, []byte{0xc0}, resp.Raw())
	err = client.Invoke(ctx, "log.count", "x", nil)
	assert.ErrorIs(t, err, ErrBadRequest)
	assert.ErrorContains(t, err, `log.count: request: cannot decode a msgpack string into int`)
}

// typedKVGet is declared once and used by both sides.
var typedKVGet = Method[typedGetRequest, typedGetReply]("kv.get")

func TestTypedMethodBothSides(t *testing.T) {
	mux := NewMux()
	typedKVGet.Handle(mux, func(ctx context.Context, req typedGetRequest) (typedGetReply, error) {
		return typedGetReply{Value: strings.ToUpper(req.Key), Found: true}, nil
	})
	assert.Equal(t, []string{"kv.get"}, mux.Methods())
	client := muxPair(t, mux)
	ctx := testCtx(t)

	reply, err := typedKVGet.Call(ctx, client, typedGetRequest{Key: "abc"})
	require.NoError(t, err)
	assert.Equal(t, typedGetReply{Value: "ABC", Found: true}, reply)

	// Both ends of a connection can serve: the server calls back.
	serverSide, clientSide := pipePair(t, &Config{Handler: mux}, &Config{Handler: mux})
	reply, err = typedKVGet.Call(ctx, clientSide, typedGetRequest{Key: "back"})
	require.NoError(t, err)
	assert.Equal(t, "BACK", reply.Value)
	reply, err = typedKVGet.Call(ctx, serverSide, typedGetRequest{Key: "forth"})
	require.NoError(t, err)
	assert.Equal(t, "FORTH", reply.Value)

	other := Method[int, int]("other")
	_, err = other.Call(ctx, client, 1)
	assert.ErrorIs(t, err, ErrNoMethod)
}

// typedFakeInvoker is an Invoker that is not a *Conn.
type typedFakeInvoker struct {
	method string
	msg    any
}

func (f *typedFakeInvoker) Invoke(ctx context.Context, method string, msg, out any) error {
	f.method, f.msg = method, msg
	b, err := msgpack.Marshal(typedGetReply{Value: "fake"})
	if err != nil {
		return err
	}
	return msgpack.Unmarshal(b, out)
}

func TestTypedInvokeTakesAnyInvoker(t *testing.T) {
	var inv Invoker = &typedFakeInvoker{}
	reply, err := typedKVGet.Call(context.Background(), inv, typedGetRequest{Key: "k"})
	require.NoError(t, err)
	assert.Equal(t, typedGetReply{Value: "fake"}, reply)
	assert.Equal(t, "kv.get", inv.(*typedFakeInvoker).method)
	assert.Equal(t, typedGetRequest{Key: "k"}, inv.(*typedFakeInvoker).msg)
}

// typedRequest is a Request for msg, as a handler would be given it.
func typedRequest(t testing.TB, msg any) *Request {
	t.Helper()
	raw, err := msgpack.Marshal(msg)
	require.NoError(t, err)
	return &Request{raw: raw}
}

func TestDecodeStrict(t *testing.T) {
	t.Run("success", func(t *testing.T) {
		var out typedOrder
		require.NoError(t, typedRequest(t, map[string]any{"id": 3, "owner": map[string]any{"id": 4}}).DecodeStrict(&out))
		assert.Equal(t, 3, out.ID)
		assert.Equal(t, 4, out.Owner.ID)
	})
	t.Run("DecodeError", func(t *testing.T) {
		var out typedOrder
		err := typedRequest(t, map[string]any{"owner": map[string]any{"id": "x"}}).DecodeStrict(&out)
		var de *DecodeError
		require.ErrorAs(t, err, &de)
		assert.Equal(t, "owner.id", de.Field)
		assert.Equal(t, "cannot decode a msgpack string into int", de.Err.Error())
		assert.Equal(t, `bokbok: decoding message: field "owner.id": cannot decode a msgpack string into int`, err.Error())
		assert.ErrorContains(t, errors.Unwrap(de.Err), "msgpack: invalid code=a1 decoding int64")
	})
	t.Run("unknown field", func(t *testing.T) {
		var out typedOrder
		err := typedRequest(t, map[string]any{"items": []any{map[string]any{"nmae": 1}}}).DecodeStrict(&out)
		var de *DecodeError
		require.ErrorAs(t, err, &de)
		assert.Equal(t, "items[0].nmae", de.Field)
		assert.Equal(t, "unknown field", de.Err.Error())
		assert.Equal(t, `bokbok: decoding message: unknown field "items[0].nmae"`, err.Error())
		assert.ErrorContains(t, errors.Unwrap(de.Err), `msgpack: unknown field "nmae"`)
	})
	t.Run("whole message", func(t *testing.T) {
		var out typedOrder
		err := typedRequest(t, "a string").DecodeStrict(&out)
		var de *DecodeError
		require.ErrorAs(t, err, &de)
		assert.Empty(t, de.Field)
		assert.Equal(t, `bokbok: decoding message: cannot decode a msgpack string into bokbok.typedOrder`, err.Error())
	})
	t.Run("not a pointer", func(t *testing.T) {
		err := typedRequest(t, 1).DecodeStrict(typedOrder{})
		var de *DecodeError
		require.ErrorAs(t, err, &de)
		assert.Empty(t, de.Field)
	})
	t.Run("top-level slice", func(t *testing.T) {
		var out []typedItem
		err := typedRequest(t, []any{map[string]any{}, map[string]any{"count": "1"}}).DecodeStrict(&out)
		var de *DecodeError
		require.ErrorAs(t, err, &de)
		assert.Equal(t, "[1].count", de.Field)
	})
	t.Run("non-string key", func(t *testing.T) {
		var out typedOrder
		err := typedRequest(t, map[int]any{1: 2}).DecodeStrict(&out)
		var de *DecodeError
		require.ErrorAs(t, err, &de)
		assert.Empty(t, de.Field)
	})
	t.Run("binary and nil keys", func(t *testing.T) {
		// {bin "id": "x"}: msgpack reads a binary key as a name.
		raw := []byte{0x81, 0xc4, 0x02, 'i', 'd', 0xa1, 'x'}
		var out typedOwner
		err := (&Request{raw: raw}).DecodeStrict(&out)
		var de *DecodeError
		require.ErrorAs(t, err, &de)
		assert.Equal(t, "id", de.Field)
		// {nil: 1}: a nil key is "", which names no field.
		raw = []byte{0x81, 0xc0, 0x01}
		err = (&Request{raw: raw}).DecodeStrict(&out)
		require.ErrorAs(t, err, &de)
		assert.True(t, de.isUnknownField())
		assert.Empty(t, de.Field)
	})
	t.Run("too large", func(t *testing.T) {
		c, _ := pipePair(t, &Config{MaxMessageSize: 1000, MaxReceiveBytes: 2000}, nil)
		raw, err := msgpack.Marshal(map[string]any{"tags": make([]string, 900)})
		require.NoError(t, err)
		var out typedOrder
		err = (&Request{conn: c, raw: raw}).DecodeStrict(&out)
		assert.ErrorIs(t, err, ErrMessageTooLarge)
		var de *DecodeError
		assert.False(t, errors.As(err, &de))
	})
	t.Run("Decode stays lenient", func(t *testing.T) {
		// The pooled decoders are shared: a strict decoding leaves them
		// lenient for Decode.
		for range 100 {
			req := typedRequest(t, map[string]any{"key": "k", "extra": 1})
			var out typedGetRequest
			require.Error(t, req.DecodeStrict(&out))
			require.NoError(t, req.Decode(&out))
			assert.Equal(t, "k", out.Key)
		}
	})
}

// typedDeep nests as deep as the peer likes.
type typedDeep struct {
	Next *typedDeep `msgpack:"n"`
	V    int        `msgpack:"v"`
}

// TestDecodeStrictDeepNestingIsBounded: the search for the failing field
// stops after strictMaxDepth levels, however deep the message nests.
func TestDecodeStrictDeepNestingIsBounded(t *testing.T) {
	var msg any = map[string]any{"v": "bad"}
	for range 200 {
		msg = map[string]any{"n": msg}
	}
	var out typedDeep
	err := typedRequest(t, msg).DecodeStrict(&out)
	var de *DecodeError
	require.ErrorAs(t, err, &de)
	assert.Equal(t, strings.Repeat("n.", strictMaxDepth-1)+"n", de.Field)

	// Within the bound the whole path is found.
	msg = map[string]any{"v": "bad"}
	for range 5 {
		msg = map[string]any{"n": msg}
	}
	err = typedRequest(t, msg).DecodeStrict(&out)
	require.ErrorAs(t, err, &de)
	assert.Equal(t, "n.n.n.n.n.v", de.Field)
}

func TestStrictFieldNames(t *testing.T) {
	type Inner struct {
		A int `msgpack:"a"`
		B int
	}
	type Clash struct {
		A int `msgpack:"a"`
	}
	type named struct {
		Inner  `msgpack:"in"` // inlined; "in" decodes it whole
		*Clash                // not inlined: its "a" clashes
		Plain  int            `msgpack:",omitempty"`
		Alias  int            `msgpack:"alias:other"`
		Skip   int            `msgpack:"-"`
		Dash   int            `msgpack:"-,"`
		Keep   int            `msgpack:"keep,noinline"`
	}
	for _, tc := range []struct {
		key  string
		want string // the type, or "" for no field
	}{
		{"a", "int"}, {"B", "int"}, {"in", "bokbok.Inner"}, {"Clash", "*bokbok.Clash"},
		{"Plain", "int"}, {"Alias", "int"}, {"other", "int"}, {"Skip", ""}, {"-", ""},
		{"keep", "int"}, {"Inner", ""},
	} {
		typ, ok := strictFieldType(reflect.TypeFor[named](), tc.key)
		// msgpack agrees: {key: nil} decodes if and only if key names a
		// field.
		entry, err := msgpack.Marshal(map[string]any{tc.key: nil})
		require.NoError(t, err)
		var out named
		err = (&Request{raw: entry}).DecodeStrict(&out)
		if tc.want == "" {
			assert.False(t, ok, tc.key)
			assert.Error(t, err, tc.key)
			continue
		}
		assert.NoError(t, err, tc.key)
		if assert.True(t, ok, tc.key) {
			assert.Equal(t, tc.want, typ.String(), tc.key)
		}
	}
}

// typedAndPlain returns two connections serving "kv.get" the same way,
// one with a typed handler, one with a plain handler that decodes with
// Request.Decode.
func typedAndPlain(t testing.TB, pair func(h Handler) *Conn) (typed, plain *Conn) {
	serve := func(req typedGetRequest) typedGetReply { return typedGetReply{Value: req.Key, Found: true} }
	tm := NewMux()
	typedKVGet.Handle(tm, func(ctx context.Context, req typedGetRequest) (typedGetReply, error) {
		return serve(req), nil
	})
	pm := NewMux()
	pm.HandleFunc("kv.get", func(ctx context.Context, r *Request) (any, error) {
		var req typedGetRequest
		if err := r.Decode(&req); err != nil {
			return nil, err
		}
		return serve(req), nil
	})
	return pair(tm), pair(pm)
}

// typedPlainCall is the plain call typedKVGet.Call stands for.
func typedPlainCall(ctx context.Context, c *Conn, req typedGetRequest) (typedGetReply, error) {
	var out typedGetReply
	err := c.Invoke(ctx, "kv.get", req, &out)
	return out, err
}

// TestTypedAllocatesNoMoreThanPlain: a typed handler and a typed call
// cost no allocation beyond the plain handler and call they replace.
func TestTypedAllocatesNoMoreThanPlain(t *testing.T) {
	if raceEnabled() {
		t.Skip("the race detector makes allocation counts vary")
	}
	typed, plain := typedAndPlain(t, func(h Handler) *Conn { return muxPair(t, h.(*Mux)) })
	ctx := context.Background()
	req := typedGetRequest{Key: "k"}
	low := func(f func()) float64 {
		best := allocsPerRun(200, f)
		for range 2 { // a GC or a goroutine starting can add one to a round
			best = min(best, allocsPerRun(200, f))
		}
		return best
	}
	p := low(func() {
		if _, err := typedPlainCall(ctx, plain, req); err != nil {
			t.Fatal(err)
		}
	})
	ty := low(func() {
		if _, err := typedKVGet.Call(ctx, typed, req); err != nil {
			t.Fatal(err)
		}
	})
	t.Logf("allocations per call: %.2f plain, %.2f typed", p, ty)
	assert.LessOrEqual(t, ty, p+0.5) // one more per call would be +1
}

// BenchmarkTypedCall and BenchmarkPlainCall compare a typed call and
// handler (Method.Call, Handle) with the plain ones they stand for
// (Conn.Invoke, Request.Decode), over loopback TCP.
func BenchmarkTypedCall(b *testing.B) { benchmarkTypedOrPlain(b, true) }

// BenchmarkPlainCall: see BenchmarkTypedCall.
func BenchmarkPlainCall(b *testing.B) { benchmarkTypedOrPlain(b, false) }

func benchmarkTypedOrPlain(b *testing.B, typed bool) {
	tc, pc := typedAndPlain(b, func(h Handler) *Conn {
		c, _ := tcpPair(b, nil, &Server{Config: Config{Handler: h}})
		return c
	})
	ctx := context.Background()
	req := typedGetRequest{Key: "some key"}
	b.ReportAllocs()
	for b.Loop() {
		var err error
		if typed {
			_, err = typedKVGet.Call(ctx, tc, req)
		} else {
			_, err = typedPlainCall(ctx, pc, req)
		}
		if err != nil {
			b.Fatal(err)
		}
	}
}
