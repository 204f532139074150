package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/bokbok-go/bokbok"
	"github.com/vmihailenco/msgpack/v5"
	"github.com/vmihailenco/msgpack/v5/msgpcode"
)

const callAbout = `Send MESSAGE to the bokbok peer at ADDR as one request and print the
reply as indented JSON on standard output.

MESSAGE is JSON; "-" reads it from standard input. It travels as
MessagePack: objects become maps, arrays arrays, strings strings, and true,
false and null themselves; a number written without a fraction or an
exponent (42, -7) becomes an integer, any other (2.5, 1.0, 1e3) a float.
Put a MESSAGE that starts with "-" (such as -1) after "--".

The reply is shown as JSON: binary data as base64 strings, map keys that
are not strings as their JSON text, timestamps in RFC 3339, other
MessagePack extension values as {"msgpack_ext": TYPE, "data": BASE64}.

--method NAME sends MESSAGE as the message of a request for the method
NAME, which the peer's router (a bokbok.Mux) dispatches on; MESSAGE may
then be left out, to send null. Without --method the request names no
method (and "bokbok serve" reads MESSAGE as {"method": NAME, "params":
VALUE}).

--meta KEY=VALUE (repeatable, each KEY once) sends metadata with the
request; VALUE is sent byte for byte as given, and may be empty. The
metadata the reply carries (an error reply too) is printed on standard
error, before anything else, as one "metadata: KEY=VALUE" line per key,
keys sorted; a key or value that is not printable text, and a key with
"=" in it, is shown quoted as Go quotes strings. Standard output holds the
reply alone.

--notify sends MESSAGE as a notification instead (with --method and
--meta, if given): no reply comes and nothing is printed; the exit status
is 0 once it has been sent.

The server that "bokbok serve" runs serves its methods in both forms
("bokbok serve --help" lists them):

  bokbok call 127.0.0.1:7070 --method echo '[1, "two", 3.5]' --meta tenant=t1 --insecure
  bokbok call 127.0.0.1:7070 '{"method": "echo", "params": [1, "two", 3.5]}' --insecure
  bokbok call 127.0.0.1:7070 --method info --user alice --key-file alice.key --realm prod
  echo 5000 | bokbok call ./bokbok.sock - --method sleep --insecure --timeout 1s

ADDR is host:port, tcp://host:port, a Unix socket path with a "/" in it
(./bokbok.sock) or unix:///abs/path.sock. To connect securely, pass --user
and --key-file (and --realm, if the server has one); to an insecure server,
pass --insecure. --timeout bounds connecting and, again, waiting for the
reply (0 waits for ever); the request carries its deadline to the server,
whose handler is cancelled when it passes.

Exit status: 0 with the reply printed (or the notification sent); 1 if
the peer answered with an error (its code and message are printed on
standard error: "bokbok.no_method" if it serves no method NAME); 2 if
connecting or authenticating failed, the connection broke, or no reply
came within --timeout; 64 for bad flags or arguments, a MESSAGE that is
not JSON, metadata beyond the protocol's bounds, or --method to a peer
too old to read method names.`

// metaFlag is the value of the repeatable --meta KEY=VALUE.
type metaFlag struct{ md bokbok.Metadata }

func (f *metaFlag) String() string { return "" }

func (f *metaFlag) Set(kv string) error {
	k, v, ok := strings.Cut(kv, "=")
	switch {
	case !ok || k == "":
		return fmt.Errorf("want KEY=VALUE, got %q", kv)
	case len(k) > 255:
		return fmt.Errorf("the key is %d bytes long; a metadata key has at most 255", len(k))
	}
	if _, dup := f.md[k]; dup {
		return fmt.Errorf("the key %q is given twice; give each key once", k)
	}
	if f.md == nil {
		f.md = bokbok.Metadata{}
	}
	f.md[k] = v
	return nil
}

func runCall(ctx context.Context, e *env, args []string) int {
	flags := newFlags(e, "call", "call ADDR [MESSAGE] [--method NAME] [--meta KEY=VALUE]... [--notify] [--user NAME --key-file FILE | --insecure] [--realm REALM] [--timeout D]", callAbout)
	var cf connFlags
	cf.register(flags)
	method := flags.String("method", "", "send MESSAGE (null if left out) as a request for the method `NAME`")
	var meta metaFlag
	flags.Var(&meta, "meta", "send metadata `KEY=VALUE` with the request (repeatable); reply metadata is printed on standard error")
	notify := flags.Bool("notify", false, "send MESSAGE as a notification: no reply, nothing printed")
	pos, code, ok := parseArgs(flags, args, "ADDR", "[MESSAGE]")
	if !ok {
		return code
	}
	fail := func(code int, format string, a ...any) int {
		fmt.Fprintf(e.stderr, "bokbok call: "+format+"\n", a...)
		return code
	}
	methodSet := false
	flags.Visit(func(f *flag.Flag) { methodSet = methodSet || f.Name == "method" })
	switch {
	case methodSet && *method == "":
		return fail(exitUsage, "--method needs a NAME; leave it out to send a request without a method name")
	case len(*method) > 255:
		return fail(exitUsage, "--method is %d bytes long; a method name has at most 255", len(*method))
	case len(pos) < 2 && !methodSet:
		fmt.Fprintf(e.stderr, "bokbok call: want 2 argument(s) (ADDR MESSAGE), got %d: %q; MESSAGE may be left out only with --method NAME\n", len(pos), pos)
		fmt.Fprintln(e.stderr, `Run "bokbok call --help" for usage.`)
		return exitUsage
	}
	addr, text := pos[0], "null"
	if len(pos) > 1 {
		text = pos[1]
	}
	if _, err := bokbok.ParseAddr(addr); err != nil {
		return fail(exitUsage, "ADDR: %s", trimBokbok(err))
	}
	cfg, err := cf.config()
	if err != nil {
		return fail(exitUsage, "%v", err)
	}

	what := "MESSAGE"
	if text == "-" {
		what = "the MESSAGE on standard input"
		var b []byte
		if err := interruptible(ctx, func() (err error) { b, err = io.ReadAll(e.stdin); return err }); err != nil {
			return fail(exitUsage, "reading MESSAGE from standard input: %v", err)
		}
		text = string(b)
	}
	msg, err := parseJSONMessage(text)
	if err != nil {
		return fail(exitUsage, "%s is not valid JSON: %v", what, err)
	}

	dctx, cancel := callTimeoutCtx(ctx, cf.timeout)
	conn, err := bokbok.Dial(dctx, addr, cfg)
	cancel()
	if err != nil {
		return fail(exitConnect, "%s", whyNoConn(ctx, err, addr, &cf))
	}
	defer conn.Close()

	rctx, cancel := callTimeoutCtx(ctx, cf.timeout)
	defer cancel()
	if meta.md != nil {
		rctx = bokbok.WithMetadata(rctx, meta.md)
	}
	var resp *bokbok.Response
	if *notify {
		err = conn.NotifyMethod(rctx, *method, msg)
		if err == nil {
			// Shut down gracefully, so that the notification is written
			// out before the connection closes.
			if err = conn.Shutdown(rctx); err != nil && ctx.Err() == nil && rctx.Err() == nil {
				return fail(exitConnect, "the connection closed before the notification was surely sent: %s", trimBokbok(err))
			}
		}
	} else {
		resp, err = conn.RequestMethod(rctx, *method, msg)
	}
	var re *bokbok.RemoteError
	if errors.As(err, &re) {
		printMetadata(e.stderr, re.Metadata())
	} else if resp != nil {
		printMetadata(e.stderr, resp.Metadata())
	}
	switch {
	case err == nil:
	case ctx.Err() != nil:
		if *notify {
			return fail(exitConnect, "interrupted before the notification was sent")
		}
		return fail(exitConnect, "interrupted before the reply came")
	case *notify && (rctx.Err() != nil || err == context.DeadlineExceeded):
		return fail(exitConnect, "the notification could not be sent within %v (--timeout): the peer takes no more notifications for now", cf.timeout)
	case rctx.Err() != nil || err == context.DeadlineExceeded: // Request reports a passed deadline even before rctx's timer fires
		return fail(exitConnect, "no reply within %v (--timeout; the server's handler had the same deadline); pass a longer --timeout to wait more", cf.timeout)
	case errors.As(err, &re):
		if re.Code == "" {
			return fail(exitRemote, "remote error: %s", re.Message)
		}
		return fail(exitRemote, "remote error [%s]: %s", re.Code, re.Message)
	case errors.Is(err, bokbok.ErrClosed) && errors.Is(err, bokbok.ErrShutdown):
		return fail(exitConnect, "the server shut down before it replied")
	case errors.Is(err, bokbok.ErrClosed):
		return fail(exitConnect, "the connection closed before the reply came: %s", trimBokbok(err))
	case errors.Is(err, bokbok.ErrBadMetadata):
		return fail(exitUsage, "--method or --meta: %s", trimBokbok(err))
	case errors.Is(err, bokbok.ErrNoHeaders):
		return fail(exitUsage, "--method: the peer does not read method names (it speaks an earlier version of the protocol): leave out --method, and send what its handler expects")
	case errors.Is(err, bokbok.ErrMessageTooLarge):
		return fail(exitUsage, "%s is too large for the peer: %s", what, trimBokbok(err))
	case errors.Is(err, bokbok.ErrShutdown):
		return fail(exitConnect, "the server is shutting down and took no new request; try again when it is back")
	default:
		return fail(exitConnect, "%s", trimBokbok(err))
	}
	if *notify {
		return exitOK
	}
	out, err := replyJSON(resp.Decode, "  ")
	if err != nil {
		return fail(exitConnect, "the reply cannot be shown as JSON: %v", err)
	}
	fmt.Fprintln(e.stdout, out)
	return exitOK
}

// printMetadata prints reply metadata as "metadata: KEY=VALUE" lines,
// keys sorted; a key or value that is not printable text, or a key with
// "=" in it, is quoted.
func printMetadata(w io.Writer, md bokbok.Metadata) {
	for _, k := range slices.Sorted(maps.Keys(md)) {
		fmt.Fprintf(w, "metadata: %s=%s\n", metaText(k, true), metaText(md[k], false))
	}
}

// metaText shows a metadata key or value on one line.
func metaText(s string, key bool) string {
	if !utf8.ValidString(s) || strings.ContainsFunc(s, func(r rune) bool { return !unicode.IsPrint(r) }) ||
		key && strings.Contains(s, "=") || strings.HasPrefix(s, `"`) {
		return strconv.Quote(s)
	}
	return s
}

// callTimeoutCtx is context.WithTimeout, except that d <= 0 means no limit.
func callTimeoutCtx(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	if d <= 0 {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, d)
}

// parseJSONMessage parses exactly one JSON value and converts it for
// msgpack (see jsonToMsgpack).
func parseJSONMessage(text string) (any, error) {
	dec := json.NewDecoder(strings.NewReader(text))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		var se *json.SyntaxError
		switch {
		case errors.Is(err, io.EOF):
			return nil, errors.New(`it is empty (quote it for the shell: '{"method": "ping"}')`)
		case errors.As(err, &se):
			return nil, fmt.Errorf("%v (at byte %d; quote it for the shell: '{\"method\": \"ping\"}')", err, se.Offset)
		case errors.Is(err, io.ErrUnexpectedEOF):
			return nil, errors.New("it ends in the middle of a value")
		}
		return nil, err
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("more follows the value (at byte %d): send one value (an array holds several)", dec.InputOffset())
	}
	return jsonToMsgpack(v)
}

// jsonToMsgpack converts a value decoded with json.Decoder.UseNumber for
// msgpack: integers (numbers written without a fraction or exponent)
// become int64, or uint64 above int64's range; other numbers float64.
func jsonToMsgpack(v any) (any, error) {
	switch v := v.(type) {
	case json.Number:
		return jsonNumberToMsgpack(v)
	case map[string]any:
		for k, x := range v {
			y, err := jsonToMsgpack(x)
			if err != nil {
				return nil, err
			}
			v[k] = y
		}
	case []any:
		for i, x := range v {
			y, err := jsonToMsgpack(x)
			if err != nil {
				return nil, err
			}
			v[i] = y
		}
	}
	return v, nil
}

func jsonNumberToMsgpack(n json.Number) (any, error) {
	s := n.String()
	if !strings.ContainsAny(s, ".eE") {
		if i, err := strconv.ParseInt(s, 10, 64); err == nil {
			return i, nil
		}
		if u, err := strconv.ParseUint(s, 10, 64); err == nil {
			return u, nil
		}
		// Beyond 64 bits: a float, as JSON's own readers take it.
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return nil, fmt.Errorf("the number %s is out of range", s)
	}
	return f, nil
}

// replyJSON decodes a message with decode (Response.Decode or
// Request.Decode) and renders it as JSON, indented by indent if not "".
func replyJSON(decode func(any) error, indent string) (string, error) {
	var v jsonable
	if err := decode(&v); err != nil {
		return "", err
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if indent != "" {
		enc.SetIndent("", indent)
	}
	if err := enc.Encode(v.v); err != nil {
		return "", err
	}
	return strings.TrimSuffix(buf.String(), "\n"), nil
}

// jsonable decodes any msgpack value into one that encoding/json can
// encode: maps become map[string]any whatever their keys, binary []byte
// (base64 in JSON), timestamps RFC 3339 strings, NaN and infinities
// strings, other extension values {"msgpack_ext": TYPE, "data": BYTES}.
// Going through bokbok's Decode means the message has been checked for
// sizes and depth before this decoder sees it.
type jsonable struct{ v any }

func (j *jsonable) DecodeMsgpack(d *msgpack.Decoder) (err error) {
	j.v, err = decodeJSONable(d)
	return err
}

func decodeJSONable(d *msgpack.Decoder) (any, error) {
	c, err := d.PeekCode()
	if err != nil {
		return nil, err
	}
	switch {
	case msgpcode.IsFixedMap(c) || c == msgpcode.Map16 || c == msgpcode.Map32:
		n, err := d.DecodeMapLen()
		if err != nil {
			return nil, err
		}
		m := make(map[string]any, min(n, 1024))
		for range n {
			k, err := decodeJSONable(d)
			if err != nil {
				return nil, err
			}
			v, err := decodeJSONable(d)
			if err != nil {
				return nil, err
			}
			m[jsonKey(k)] = v
		}
		return m, nil
	case msgpcode.IsFixedArray(c) || c == msgpcode.Array16 || c == msgpcode.Array32:
		n, err := d.DecodeArrayLen()
		if err != nil {
			return nil, err
		}
		s := make([]any, 0, min(n, 1024))
		for range n {
			v, err := decodeJSONable(d)
			if err != nil {
				return nil, err
			}
			s = append(s, v)
		}
		return s, nil
	case msgpcode.IsBin(c):
		return d.DecodeBytes()
	case msgpcode.IsExt(c):
		raw, err := d.DecodeRaw()
		if err != nil {
			return nil, err
		}
		return extJSONable(raw), nil
	}
	v, err := d.DecodeInterfaceLoose()
	if f, ok := v.(float64); ok {
		if math.IsNaN(f) || math.IsInf(f, 0) {
			return strconv.FormatFloat(f, 'g', -1, 64), err // "NaN", "+Inf", "-Inf"
		}
		return jsonFloat(f), err
	}
	return v, err
}

// jsonFloat is a float that shows as one in JSON: 1.0, not 1, so that a
// float in a reply can be told from an integer.
type jsonFloat float64

func (f jsonFloat) MarshalJSON() ([]byte, error) {
	b, err := json.Marshal(float64(f))
	if err == nil && !bytes.ContainsAny(b, ".eE") {
		b = append(b, ".0"...)
	}
	return b, err
}

// jsonKey turns a decoded map key into a JSON object key: a string is
// itself, anything else its JSON text (1 → "1", binary → its base64).
func jsonKey(k any) string {
	if s, ok := k.(string); ok {
		return s
	}
	b, err := json.Marshal(k)
	if err != nil {
		return fmt.Sprint(k)
	}
	var s string
	if json.Unmarshal(b, &s) == nil {
		return s
	}
	return string(b)
}

// extJSONable shows a complete msgpack extension value.
func extJSONable(raw []byte) any {
	var typ int8
	var data []byte
	switch c := raw[0]; {
	case msgpcode.IsFixedExt(c):
		typ, data = int8(raw[1]), raw[2:]
	case c == msgpcode.Ext8:
		typ, data = int8(raw[2]), raw[3:]
	case c == msgpcode.Ext16:
		typ, data = int8(raw[3]), raw[4:]
	default: // Ext32
		typ, data = int8(raw[5]), raw[6:]
	}
	if typ == -1 { // the timestamp extension
		var t time.Time
		if msgpack.Unmarshal(raw, &t) == nil {
			return t.Format(time.RFC3339Nano)
		}
	}
	return map[string]any{"msgpack_ext": typ, "data": data}
}
