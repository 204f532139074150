package ocap

import (
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/bokbok-go/bokbok"
	"github.com/bokbok-go/bokbok/internal/testutil"
)

// capExamples are the capability messages PROTOCOL.md §19 shows as hex
// dumps, built with the encoders the sessions use.
var capExamples = []struct {
	name  string
	bytes func(t *testing.T) []byte
}{
	{`op:deliver "fetch" to the bootstrap object, question 1`, func(t *testing.T) []byte {
		args, err := encodePayload([]any{"factory"})
		require.NoError(t, err)
		return newOp(opDeliver, 5).desc(desc{descYourExport, 0}).str("fetch").raw(args.data).descs(nil).uint(1).bytes()
	}},
	{`op:return of question 1: a reference to the sender's export 1`, func(t *testing.T) []byte {
		v, err := encodePayload(Ref{t: &actorCell{}})
		require.NoError(t, err)
		return newOp(opReturn, 3).uint(1).raw(v.data).descs([]desc{{descMyExport, 1}}).bytes()
	}},
	{`op:deliver "make-car" pipelined to answer 1, question 2`, func(t *testing.T) []byte {
		args, err := encodePayload([]any{"Explorist", "blue"})
		require.NoError(t, err)
		return newOp(opDeliver, 5).desc(desc{descYourAnswer, 1}).str("make-car").raw(args.data).descs(nil).uint(2).bytes()
	}},
	{`op:release of export 1, received twice`, func(t *testing.T) []byte {
		return newOp(opRelease, 2).uint(1).uint(2).bytes()
	}},
	// §19.11
	{`op:return of question 2 handing back the receiver's own export 5`, func(t *testing.T) []byte {
		v, err := encodePayload(Ref{t: &actorCell{}})
		require.NoError(t, err)
		return newOp(opReturn, 3).uint(2).raw(v.data).descs([]desc{{descYourExport, 5}}).bytes()
	}},
	{`op:deliver "echo" with a reference index beyond its refs, question 3`, func(t *testing.T) []byte {
		args := []byte{0x91, 0xd6, 0x62, 0, 0, 0, 1} // [reference 1]
		require.ErrorContains(t, checkRefs(args, 1), "reference index 1")
		return newOp(opDeliver, 5).desc(desc{descYourExport, 1}).str("echo").raw(args).descs([]desc{{descMyExport, 5}}).uint(3).bytes()
	}},
	{`op:release giving back the receipt of export 5`, func(t *testing.T) []byte {
		return newOp(opRelease, 2).uint(5).uint(1).bytes()
	}},
	{`op:deliver "fetch" with the largest question id`, func(t *testing.T) []byte {
		args, err := encodePayload([]any{"echo"})
		require.NoError(t, err)
		return newOp(opDeliver, 5).desc(desc{descYourExport, 0}).str("fetch").raw(args.data).descs(nil).uint(1<<64 - 1).bytes()
	}},
}

// hexDump formats b as PROTOCOL.md does.
var hexDump = testutil.HexDump

// TestProtocolDocCapExamples keeps PROTOCOL.md §19's dumps in step with the
// encoders.
func TestProtocolDocCapExamples(t *testing.T) {
	doc, err := os.ReadFile("../PROTOCOL.md")
	require.NoError(t, err)
	for _, ex := range capExamples {
		t.Run(ex.name, func(t *testing.T) {
			dump := hexDump(ex.bytes(t))
			if !strings.Contains(string(doc), "```\n"+dump+"\n```") {
				t.Errorf("PROTOCOL.md lacks the dump for %s:\n%s", ex.name, dump)
			}
		})
	}
}

// capExample returns the bytes of the example named name.
func capExample(t *testing.T, name string) []byte {
	t.Helper()
	for _, ex := range capExamples {
		if ex.name == name {
			return ex.bytes(t)
		}
	}
	t.Fatalf("no example %q", name)
	return nil
}

// rawBytes re-encodes a message the node sent, as the node encoded it.
func (o rawOp) rawBytes() []byte {
	w := newOp(o.op, len(o.fields))
	for _, f := range o.fields {
		w.raw(f)
	}
	return w.bytes()
}

// TestProtocolDocCapVectors: a node does what PROTOCOL.md §19.11 says
// its vectors make a receiver do.
func TestProtocolDocCapVectors(t *testing.T) {
	ctx := testCtx(t)
	v := newTestVat(t, "node")
	var node Node
	node.Bind("echo", v.Spawn(echo{}))

	t.Run("handing back", func(t *testing.T) {
		p := newRawPeer(t, ctx, &node)
		require.EqualValues(t, 1, p.fetch(1, "echo"))
		p.send(opDeliver, []any{descYourExport, 1}, "echo-ref", refArg(0), []any{[]any{descMyExport, 5}}, 2)
		op := p.next()
		require.Equal(t, hexDump(capExample(t, `op:return of question 2 handing back the receiver's own export 5`)), hexDump(op.rawBytes()))
	})
	t.Run("bad reference", func(t *testing.T) {
		p := newRawPeer(t, ctx, &node)
		require.EqualValues(t, 1, p.fetch(1, "echo"))
		p.sendRaw(capExample(t, `op:deliver "echo" with a reference index beyond its refs, question 3`))
		op := p.next()
		require.Equal(t, hexDump(capExample(t, `op:release giving back the receipt of export 5`)), hexDump(op.rawBytes()))
		p.expectBreak(3, CodeBadArgs)
		require.NoError(t, p.sess.Err())
	})
	t.Run("largest question id", func(t *testing.T) {
		p := newRawPeer(t, ctx, &node)
		p.sendRaw(capExample(t, `op:deliver "fetch" with the largest question id`))
		require.Len(t, p.expectReturn(1<<64-1), 1)
		p.send(opDeliver, []any{descYourExport, 0}, "fetch", []any{"echo"}, []any{}, 1)
		for op := p.next(); op.op != opAbort; op = p.next() {
		}
		var perr *ProtocolError
		<-p.sess.Done()
		require.ErrorAs(t, p.sess.Err(), &perr)
	})
}

// TestProtocolDocSturdyrefVectors keeps PROTOCOL.md §20.1's table of
// encoded realms and its example URIs in step with String and
// ParseSturdyref.
func TestProtocolDocSturdyrefVectors(t *testing.T) {
	doc, err := os.ReadFile("../PROTOCOL.md")
	require.NoError(t, err)
	lines := strings.Split(string(doc), "\n")
	swiss := make([]byte, 32)
	for i := range swiss {
		swiss[i] = byte(i)
	}
	host := bokbok.Addr{Network: "tcp", Address: "h:1"}
	for realm, query := range map[string]string{
		"chat":      "?realm=chat",
		"a b":       "?realm=a%20b",
		"a+b":       "?realm=a%2Bb",
		"x/y":       "?realm=x%2Fy",
		"100%":      "?realm=100%25",
		"é":         "?realm=%C3%A9",
		"a-b.c_d~e": "?realm=a-b.c_d~e",
		"k=v&w":     "?realm=k%3Dv%26w",
	} {
		row := "| `" + realm + "` | `" + query + "` |"
		require.Contains(t, lines, row, "PROTOCOL.md §20.1 lacks the row")
		s := Sturdyref{Addr: host, Realm: realm, Swiss: swiss}
		uri := "bokbok://h:1/s/" + swissText(swiss) + query
		require.Equal(t, uri, s.String())
		got, err := ParseSturdyref(uri)
		require.NoError(t, err)
		require.Equal(t, s, got)
	}
	for _, uri := range []string{"bokbok://h:1/s/" + swissText(swiss) + "?realm=a+b", "bokbok://h:1/s/" + swissText(swiss) + "?realm=a b"} {
		_, err := ParseSturdyref(uri)
		require.Error(t, err, uri)
	}
	got, err := ParseSturdyref("bokbok://h:1/s/" + swissText(swiss) + "?realm=%c3%a9")
	require.NoError(t, err)
	require.Equal(t, "é", got.Realm)

	for uri, s := range map[string]Sturdyref{
		"bokbok://127.0.0.1:7000/s/AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8": {
			Addr: bokbok.Addr{Network: "tcp", Address: "127.0.0.1:7000"}, Swiss: swiss},
		"bokbok://[fe80::1%25eth0]:7000/s/AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8?realm=chat%20room": {
			Addr: bokbok.Addr{Network: "tcp", Address: "[fe80::1%eth0]:7000"}, Realm: "chat room", Swiss: swiss},
		"bokbok+unix:///run/my%20app/chat%2B1.sock/s/AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8?realm=%C3%A9%2Fx": {
			Addr: bokbok.Addr{Network: "unix", Address: "/run/my app/chat+1.sock"}, Realm: "é/x", Swiss: swiss},
	} {
		require.Contains(t, lines, uri, "PROTOCOL.md §20.1 lacks the URI")
		require.Equal(t, uri, s.String())
		got, err := ParseSturdyref(uri)
		require.NoError(t, err)
		require.Equal(t, s, got)
	}
}
