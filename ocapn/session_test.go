package ocapn

import (
	"crypto/ed25519"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/bokbok-go/bokbok/ocapn/syrup"
)

// The behaviours the OCapN test suite checks, module by module, from a
// raw-socket peer.

func TestStartSession(t *testing.T) {
	_, nl := testNode(t, Config{})
	t.Run("a valid hello is answered with one", func(t *testing.T) {
		p := dialRaw(t, nl)
		p.hello()
	})
	t.Run("the node's location is signed", func(t *testing.T) {
		p := dialRaw(t, nl)
		b, err := startSessionMessage(p.key, p.loc)
		require.NoError(t, err)
		p.c.Write(b)
		r := p.expect("op:start-session")
		st, err := parseStartSession(r)
		require.NoError(t, err)
		assert.True(t, st.location.Same(nl.Location()))
	})
	bad := map[string]func(p *rawPeer) syrup.Record{
		"another version": func(p *rawPeer) syrup.Record {
			r := p.startRecord()
			r.Fields[0] = "invalid-version-number"
			return r
		},
		"a signature of something else": func(p *rawPeer) syrup.Record {
			r := p.startRecord()
			r.Fields[3] = signatureSyrup(ed25519.Sign(p.key.priv, []byte("i am invalid")))
			return r
		},
		"a malformed key": func(p *rawPeer) syrup.Record {
			r := p.startRecord()
			r.Fields[1] = []any{sym("public-key")}
			return r
		},
		"three fields": func(p *rawPeer) syrup.Record {
			r := p.startRecord()
			r.Fields = r.Fields[:3]
			return r
		},
	}
	for name, make := range bad {
		t.Run("aborts on "+name, func(t *testing.T) {
			p := dialRaw(t, nl)
			p.send(make(p))
			closed, got := p.closedSoon()
			assert.True(t, closed)
			require.Len(t, got, 1, "an op:abort and nothing else: %v", got)
			assert.Equal(t, sym("op:abort"), got[0].Label)
		})
	}
	t.Run("a message before the hello aborts", func(t *testing.T) {
		p := dialRaw(t, nl)
		p.send(syrup.Record{Label: sym("op:deliver-only"), Fields: []any{exportDesc(0), []any{}}})
		closed, got := p.closedSoon()
		assert.True(t, closed)
		require.Len(t, got, 1)
		assert.Equal(t, sym("op:abort"), got[0].Label)
	})
	t.Run("a second hello aborts", func(t *testing.T) {
		p := dialRaw(t, nl)
		p.hello()
		p.send(p.startRecord())
		p.expect("op:abort")
	})
	t.Run("a second session from a peer with one open is refused", func(t *testing.T) {
		first := dialRaw(t, nl)
		first.hello()
		second := dialRaw(t, nl)
		second.loc = first.loc
		second.send(second.startRecord())
		second.expect("op:abort")
		first.fetch(swissGreeter) // the first goes on
	})
	t.Run("a peer that closed and dialed again at once gets its new session", func(t *testing.T) {
		for range 20 {
			first := dialRaw(t, nl)
			first.hello()
			first.c.Close()
			again := dialRaw(t, nl)
			again.loc = first.loc
			again.send(again.startRecord())
			// What it sends before the node's hello is held, not lost.
			res, _ := again.deliver(exportDesc(0), []any{sym("fetch"), swissGreeter}, false)
			again.expect("op:start-session")
			assert.Equal(t, sym("fulfill"), again.resolution(res)[0])
		}
	})
}

// startRecord is this peer's op:start-session, as a record to tamper with.
func (p *rawPeer) startRecord() syrup.Record {
	b, err := startSessionMessage(p.key, p.loc)
	require.NoError(p.t, err)
	v, err := syrup.Unmarshal(b)
	require.NoError(p.t, err)
	return v.(syrup.Record)
}

func TestAbortBeforeTheHelloClosesWithoutOne(t *testing.T) {
	_, nl := testNode(t, Config{})
	p := dialRaw(t, nl)
	p.send(syrup.Record{Label: sym("op:abort"), Fields: []any{"test-abort-before-setup"}})
	closed, got := p.closedSoon()
	assert.True(t, closed)
	assert.Empty(t, got, "the node says nothing to a peer that aborted")
}

func TestDelivers(t *testing.T) {
	_, nl := testNode(t, Config{})
	t.Run("deliver-only to the greeter", func(t *testing.T) {
		p := dialRaw(t, nl)
		p.hello()
		greeter := p.fetch(swissGreeter)
		me := p.newImport()
		p.send(syrup.Record{Label: sym("op:deliver-only"), Fields: []any{exportDesc(greeter), []any{importObj(me)}}})
		for {
			r := p.expect("op:deliver")
			if syrup.Equal(r.Fields[0], exportDesc(me)) {
				assert.Equal(t, []any{"Hello"}, r.Fields[1])
				return
			}
		}
	})
	t.Run("deliver with a resolver", func(t *testing.T) {
		p := dialRaw(t, nl)
		p.hello()
		echo := p.fetch(swissEcho)
		args := []any{"foo", int64(1), false, []byte("bar"), []any{"baz"}}
		res, _ := p.deliver(exportDesc(echo), args, false)
		assert.Equal(t, []any{sym("fulfill"), args}, p.resolution(res))
	})
	t.Run("pipelining through answers", func(t *testing.T) {
		p := dialRaw(t, nl)
		p.hello()
		_, builder := p.deliver(exportDesc(0), []any{sym("fetch"), swissCarFactoryBuilder}, true)
		_, factory := p.deliver(answerDesc(builder), []any{}, true)
		_, car := p.deliver(answerDesc(factory), []any{[]any{sym("red"), sym("zoomracer")}}, true)
		res, _ := p.deliver(answerDesc(car), []any{}, false)
		assert.Equal(t, []any{sym("fulfill"), "Vroom! I am a red zoomracer car!"}, p.resolution(res))
	})
	t.Run("a broken promise breaks what was pipelined on it", func(t *testing.T) {
		p := dialRaw(t, nl)
		p.hello()
		_, builder := p.deliver(exportDesc(0), []any{sym("fetch"), swissCarFactoryBuilder}, true)
		_, factory := p.deliver(answerDesc(builder), []any{}, true)
		_, car := p.deliver(answerDesc(factory), []any{[]any{int64(1), int64(2), int64(3)}}, true)
		res, _ := p.deliver(answerDesc(car), []any{}, false)
		got := p.resolution(res)
		assert.Equal(t, sym("break"), got[0])
		assert.Len(t, got, 2)
	})
	t.Run("fetching a swiss number nobody registered breaks", func(t *testing.T) {
		p := dialRaw(t, nl)
		p.hello()
		res, _ := p.deliver(exportDesc(0), []any{sym("fetch"), []byte("nothing here")}, false)
		assert.Equal(t, sym("break"), p.resolution(res)[0])
	})
}

func TestListen(t *testing.T) {
	_, nl := testNode(t, Config{})
	promise := func(p *rawPeer) (promisePos, resolverPos int) {
		pr := p.fetch(swissPromiseResolver)
		res, _ := p.deliver(exportDesc(pr), []any{}, false)
		got := p.resolution(res)
		require.Equal(t, sym("fulfill"), got[0])
		pair := got[1].([]any)
		_, promisePos, ok1 := descriptor(pair[0], "desc:import-promise")
		_, resolverPos, ok2 := descriptor(pair[1], "desc:import-object")
		require.True(t, ok1 && ok2, "%v", pair)
		return promisePos, resolverPos
	}
	listen := func(p *rawPeer, promisePos int) int {
		l := p.newImport()
		p.send(syrup.Record{Label: sym("op:listen"), Fields: []any{exportDesc(promisePos), importObj(l), false}})
		return l
	}
	t.Run("fulfilled", func(t *testing.T) {
		p := dialRaw(t, nl)
		p.hello()
		pp, rp := promise(p)
		l := listen(p, pp)
		p.send(syrup.Record{Label: sym("op:deliver-only"), Fields: []any{exportDesc(rp), []any{sym("fulfill"), "foo"}}})
		assert.Equal(t, []any{sym("fulfill"), "foo"}, p.resolution(l))
	})
	t.Run("broken, with the reason as sent", func(t *testing.T) {
		p := dialRaw(t, nl)
		p.hello()
		pp, rp := promise(p)
		l := listen(p, pp)
		p.send(syrup.Record{Label: sym("op:deliver-only"), Fields: []any{exportDesc(rp), []any{sym("break"), sym("oh-no")}}})
		assert.Equal(t, []any{sym("break"), sym("oh-no")}, p.resolution(l))
	})
	t.Run("already resolved", func(t *testing.T) {
		p := dialRaw(t, nl)
		p.hello()
		pp, rp := promise(p)
		p.send(syrup.Record{Label: sym("op:deliver-only"), Fields: []any{exportDesc(rp), []any{sym("fulfill"), int64(7)}}})
		l := listen(p, pp) // the two-field form of the draft works too
		assert.Equal(t, []any{sym("fulfill"), int64(7)}, p.resolution(l))
	})
}

func TestGC(t *testing.T) {
	_, nl := testNode(t, Config{})
	gcExports := func(p *rawPeer, pos, want int) {
		t.Helper()
		total := 0
		for total < want {
			r := p.expect("op:gc-export")
			positions, deltas := r.Fields[0].([]any), r.Fields[1].([]any)
			for i := range positions {
				if positions[i] == int64(pos) {
					total += int(deltas[i].(int64))
				}
			}
		}
		assert.Equal(t, want, total)
	}
	t.Run("an object sent once is given back once", func(t *testing.T) {
		p := dialRaw(t, nl)
		p.hello()
		echo := p.fetch(swissEcho)
		obj := p.newImport()
		p.send(syrup.Record{Label: sym("op:deliver-only"), Fields: []any{exportDesc(echo), []any{importObj(obj)}}})
		gcExports(p, obj, 1)
	})
	t.Run("three times in one message, thrice", func(t *testing.T) {
		p := dialRaw(t, nl)
		p.hello()
		echo := p.fetch(swissEcho)
		obj := p.newImport()
		p.send(syrup.Record{Label: sym("op:deliver-only"), Fields: []any{exportDesc(echo), []any{importObj(obj), importObj(obj), importObj(obj)}}})
		gcExports(p, obj, 3)
	})
	t.Run("in four messages, four times", func(t *testing.T) {
		p := dialRaw(t, nl)
		p.hello()
		echo := p.fetch(swissEcho)
		obj := p.newImport()
		for range 4 {
			p.send(syrup.Record{Label: sym("op:deliver-only"), Fields: []any{exportDesc(echo), []any{importObj(obj)}}})
		}
		gcExports(p, obj, 4)
	})
	t.Run("an answer is given back once settled", func(t *testing.T) {
		p := dialRaw(t, nl)
		p.hello()
		greeter := p.fetch(swissGreeter)
		me := p.newImport()
		p.send(syrup.Record{Label: sym("op:deliver-only"), Fields: []any{exportDesc(greeter), []any{importObj(me)}}})
		var greeting syrup.Record
		for {
			greeting = p.expect("op:deliver")
			if syrup.Equal(greeting.Fields[0], exportDesc(me)) {
				break
			}
		}
		answer, ok := position(greeting.Fields[2])
		require.True(t, ok, "the greeting has an answer position")
		_, resolver, ok := descriptor(greeting.Fields[3], "desc:import-object")
		require.True(t, ok)
		p.send(syrup.Record{Label: sym("op:deliver-only"), Fields: []any{exportDesc(resolver), []any{sym("fulfill"), "Hello"}}})
		r := p.expect("op:gc-answer")
		assert.Equal(t, []any{int64(answer)}, r.Fields[0])
	})
}
