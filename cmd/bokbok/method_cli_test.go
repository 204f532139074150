package main

// Method names and metadata: "bokbok call --method --meta --notify"
// against "bokbok serve", whose built-in methods a Mux routes.

import (
	"encoding/hex"
	"encoding/json"
	"net"
	"regexp"
	"strings"
	"testing"
)

// insecureCall runs "bokbok call ADDR --insecure args...".
func insecureCall(t *testing.T, addr string, args ...string) cliResult {
	t.Helper()
	return cliRun(t, "", append([]string{"call", addr, "--insecure"}, args...)...)
}

func TestCLICallMethod(t *testing.T) {
	s := cliServe(t, "--listen", "127.0.0.1:0", "--insecure", "--verbose")
	call := func(args ...string) cliResult { t.Helper(); return insecureCall(t, s.addr, args...) }

	t.Run("echo with metadata", func(t *testing.T) {
		r := call("--method", "echo", `{"a": [1, 2.5, "x"]}`, "--meta", "tenant=t1", "--meta", "trace=x=y", "--meta", "empty=", "--meta", "tab=a\tb")
		r.want(t, exitOK, nil, nil)
		if got := compactJSON(t, r.stdout); got != `{"a":[1,2.5,"x"]}` {
			t.Errorf("echo replied %s", got)
		}
		// Reply metadata on stderr, keys sorted; stdout the reply alone.
		if want := "metadata: empty=\nmetadata: tab=\"a\\tb\"\nmetadata: tenant=t1\nmetadata: trace=x=y\n"; r.stderr != want {
			t.Errorf("stderr %q, want %q", r.stderr, want)
		}
	})
	t.Run("metadata method", func(t *testing.T) {
		// MESSAGE may be left out with --method.
		r := call("--method", "metadata", "--meta", "tenant=t1", "--meta", "token=s3cret")
		r.want(t, exitOK, nil, nil)
		var md map[string]string
		if err := json.Unmarshal([]byte(r.stdout), &md); err != nil || len(md) != 2 || md["tenant"] != "t1" || md["token"] != "s3cret" {
			t.Errorf("metadata replied %q (%v)", r.stdout, err)
		}
		if r.stderr != "" {
			t.Errorf("stderr %q: metadata sets no reply metadata", r.stderr)
		}
		r = call("--method", "metadata")
		r.want(t, exitOK, []string{"{}"}, nil)
	})
	t.Run("other methods by name", func(t *testing.T) {
		r := call("--method", "ping")
		r.want(t, exitOK, nil, nil)
		if r.stdout != "\"pong\"\n" {
			t.Errorf("ping: stdout %q", r.stdout)
		}
		call("--method", "info").want(t, exitOK, []string{`"secure": false`, `"remote": "127.0.0.1:`}, nil)
		if got := compactJSON(t, call("--method", "sleep", "20").stdout); got != `{"slept_ms":20}` {
			t.Errorf("sleep replied %s", got)
		}
		call("--method", "error", `"boom"`).wantOneLine(t, exitRemote, "remote error [example]: boom")
		call("--method", "error", `{"code": "teapot", "message": "short and stout"}`).wantOneLine(t, exitRemote, "[teapot]: short and stout")
		call("--method", "error").wantOneLine(t, exitRemote, "[example]: an error, as requested")
	})
	t.Run("unknown method", func(t *testing.T) {
		r := call("--method", "fly", "1")
		r.wantOneLine(t, exitRemote, "remote error [bokbok.no_method]", `no method "fly"`, "this server has echo")
		// The body form says the same.
		call(`{"method": "fly", "params": 1}`).wantOneLine(t, exitRemote, "remote error [bokbok.no_method]", `no method "fly"`)
	})
	t.Run("bad params", func(t *testing.T) {
		for _, tc := range []struct {
			args []string
			want []string
		}{
			{[]string{"--method", "error", `{"code": 5}`}, []string{`error: request field "code"`, "integer into string"}},
			{[]string{"--method", "error", `{"cod": "x"}`}, []string{`error: request has unknown field "cod"`}},
			{[]string{"--method", "sleep", `"soon"`}, []string{`sleep: request: cannot decode a msgpack string into float64`}},
			{[]string{"--method", "sleep"}, []string{"sleep: want the milliseconds"}},
			{[]string{"--method", "sleep", "-1"}, []string{"out of range"}},
			// The body form decodes the params just as strictly.
			{[]string{`{"method": "error", "params": {"code": 5}}`}, []string{`error: request field "params.code"`, "integer into string"}},
			{[]string{`{"method": "error", "params": {"cod": "x"}}`}, []string{`error: request has unknown field "params.cod"`}},
			{[]string{`{"method": "sleep"}`}, []string{"sleep: want the milliseconds"}},
		} {
			args := tc.args
			if len(args) == 3 && strings.HasPrefix(args[2], "-") {
				args = []string{args[0], args[1], "--", args[2]}
			}
			call(args...).wantOneLine(t, exitRemote, append([]string{"remote error [bokbok.bad_request]"}, tc.want...)...)
		}
	})
	t.Run("body form", func(t *testing.T) {
		if got := compactJSON(t, call(`{"method": "echo", "params": {"k": [1.5, "v"]}}`).stdout); got != `{"k":[1.5,"v"]}` {
			t.Errorf("echo replied %s", got)
		}
		r := call(`"ping"`)
		if r.code != exitOK || r.stdout != "\"pong\"\n" {
			t.Errorf("ping: exit %d, stdout %q", r.code, r.stdout)
		}
		// The same echo: it returns the metadata in the body form too.
		r = call(`{"method": "echo", "params": 1}`, "--meta", "tenant=t2")
		r.want(t, exitOK, []string{"1\n"}, nil)
		if r.stderr != "metadata: tenant=t2\n" {
			t.Errorf("stderr %q", r.stderr)
		}
		call(`{"method": "error", "params": "boom"}`).wantOneLine(t, exitRemote, "[example]: boom")
		call(`{"method": "sleep", "params": 1}`).want(t, exitOK, []string{`"slept_ms": 1`}, nil)
	})
	t.Run("notify", func(t *testing.T) {
		r := call("--notify", "--method", "hello", `"noted-by-name"`, "--meta", "k=v")
		r.want(t, exitOK, nil, nil)
		if r.stdout != "" || r.stderr != "" {
			t.Errorf("stdout %q, stderr %q; want both empty", r.stdout, r.stderr)
		}
		s.log.waitFor(t, "noted-by-name")
		call("--notify", `{"method": "hello", "params": "noted-in-body"}`).want(t, exitOK, nil, nil)
		s.log.waitFor(t, "noted-in-body")
	})
	t.Run("usage", func(t *testing.T) {
		call().wantOneLineOrUsage(t, exitUsage, "want 2 argument(s)", "--method NAME")
		call("--method", "echo", "1", "2").wantOneLineOrUsage(t, exitUsage, "want 1 to 2 argument(s)")
		call("--method", "", "1").wantOneLine(t, exitUsage, "--method needs a NAME")
		call("--method", strings.Repeat("m", 256), "1").wantOneLine(t, exitUsage, "--method", "255")
		call("1", "--meta", "novalue").wantOneLineOrUsage(t, exitUsage, "KEY=VALUE")
		call("1", "--meta", "=v").wantOneLineOrUsage(t, exitUsage, "KEY=VALUE")
		call("1", "--meta", "a=1", "--meta", "a=2").wantOneLineOrUsage(t, exitUsage, `"a" is given twice`)
		call("1", "--meta", strings.Repeat("k", 256)+"=v").wantOneLineOrUsage(t, exitUsage, "at most 255")
	})

	log := s.log.String()
	for _, want := range []string{
		`level=DEBUG msg=request remote=\S+ method=echo metadata_keys=empty,tab,tenant,trace message=`,
		`level=DEBUG msg=replied remote=\S+ method=echo metadata_keys=empty,tab,tenant,trace took=\S+ outcome=ok\n`,
		`level=DEBUG msg=replied remote=\S+ method=ping form=body took=\S+ outcome=ok\n`,
		`level=INFO msg=replied remote=\S+ method=fly took=\S+ outcome=error code=bokbok.no_method err="no method \\"fly\\"`,
		`level=INFO msg=replied remote=\S+ method=error form=body took=\S+ outcome=error code=bokbok.bad_request err="error: request field`,
		`level=INFO msg=notification remote=\S+ method=hello metadata_keys=k message="\\"noted-by-name\\""`,
	} {
		if !regexp.MustCompile(want).MatchString(log) {
			t.Errorf("the server's log lacks a match for %s", want)
		}
	}
	if strings.Contains(log, "s3cret") {
		t.Errorf("the server's log shows a metadata value")
	}
}

// Without --verbose the server logs failed requests, not the others.
func TestCLIServeLogsFailures(t *testing.T) {
	s := cliServe(t, "--listen", "127.0.0.1:0", "--insecure")
	insecureCall(t, s.addr, "--method", "ping").want(t, exitOK, nil, nil)
	insecureCall(t, s.addr, "--method", "fly").want(t, exitRemote, nil, nil)
	s.log.waitFor(t, "method=fly")
	log := s.log.String()
	for _, want := range []string{"level=INFO msg=replied", "outcome=error", "code=bokbok.no_method", "took="} {
		if !strings.Contains(log, want) {
			t.Errorf("the server's log lacks %q", want)
		}
	}
	for _, not := range []string{"method=ping", "level=DEBUG", "msg=request"} {
		if strings.Contains(log, not) {
			t.Errorf("the server's log has %q without --verbose", not)
		}
	}
}

// A peer of an earlier protocol version reads no method names: --method
// to it fails before sending, as a usage error.
func TestCLICallMethodOldPeer(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	// An insecure preamble and a SETTINGS frame without "headers"
	// (PROTOCOL.md, section 14).
	opening, _ := hex.DecodeString("626f6b626f6b0100" +
		"010000380000000083b06d61785f6d6573736167655f73697a65ce02000000ad" +
		"6e6f746966795f77696e646f77cd0100ac6d61785f68616e646c657273cd0100")
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.Write(opening)
				var buf [4096]byte
				for {
					if _, err := c.Read(buf[:]); err != nil {
						return
					}
				}
			}()
		}
	}()
	r := insecureCall(t, ln.Addr().String(), "--method", "ping", "--timeout", "5s")
	r.wantOneLine(t, exitUsage, "--method", "does not read method names", "leave out --method")
}
