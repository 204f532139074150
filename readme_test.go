package bokbok_test

// TestREADME keeps README.md honest: every ```go block in it must compile,
// and the programs of "Five minutes to a secure server and client" must
// work as the README says.
//
// The blocks are compiled in a temporary module that requires this one
// (through a replace directive pointing at this directory), offline, from
// the module cache:
//
//   - A block that is a whole program (it declares package main) becomes a
//     program of its own. If its first line is a comment naming a file, as
//     in "// server/server.go", it is written there; otherwise to
//     prog/lN/main.go, N being its README line.
//   - Any other block is a fragment. It becomes the body of a function
//     "func() error" in a package of its own, frag/lN, next to a harness
//     file that declares what fragments use without declaring it (ctx, h,
//     conn, srv, aliceKey, keys, ...; see readmeHarness). The imports it
//     needs are worked out from the package names it uses (readmeImports),
//     and each variable it declares at its top level is marked used, so
//     that a fragment that ends with "err := ..." compiles. A fragment
//     that does not parse as a function body is tried as top-level
//     declarations.
//
// Every generated file carries //line directives, so the compiler's and
// vet's messages point at README.md lines.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"
)

// readmeBlock is one ```go block of README.md.
type readmeBlock struct {
	line int    // README line of the block's first line of code
	code string // the code, with the fence's indentation removed
}

// readmeGoBlocks returns the ```go blocks of a Markdown document.
func readmeGoBlocks(t *testing.T, doc string) []readmeBlock {
	t.Helper()
	var blocks []readmeBlock
	lines := strings.Split(doc, "\n")
	for i := 0; i < len(lines); i++ {
		trimmed := strings.TrimLeft(lines[i], " \t")
		if !strings.HasPrefix(trimmed, "```") {
			continue
		}
		indent := lines[i][:len(lines[i])-len(trimmed)]
		lang := strings.TrimSpace(strings.TrimPrefix(trimmed, "```"))
		start := i + 1
		for i++; i < len(lines) && strings.TrimSpace(lines[i]) != "```"; i++ {
		}
		if i == len(lines) {
			t.Fatalf("README.md:%d: code block never closed", start-1)
		}
		if lang != "go" {
			continue
		}
		var code strings.Builder
		for _, l := range lines[start:i] {
			code.WriteString(strings.TrimPrefix(l, indent))
			code.WriteByte('\n')
		}
		blocks = append(blocks, readmeBlock{line: start + 1, code: code.String()})
	}
	return blocks
}

// readmeImports maps the package names README fragments may use to their
// import paths.
var readmeImports = map[string]string{
	"bokbok":  "github.com/bokbok-go/bokbok",
	"bufio":   "bufio",
	"bytes":   "bytes",
	"context": "context",
	"errors":  "errors",
	"flag":    "flag",
	"fmt":     "fmt",
	"io":      "io",
	"log":     "log",
	"net":     "net",
	"ocap":    "github.com/bokbok-go/bokbok/ocap",
	"ocapn":   "github.com/bokbok-go/bokbok/ocapn",
	"os":      "os",
	"pipes":   "github.com/bokbok-go/bokbok/pipes",
	"signal":  "os/signal",
	"slog":    "log/slog",
	"strings": "strings",
	"sync":    "sync",
	"syscall": "syscall",
	"time":    "time",
}

// readmeHarness declares, at package level, what README fragments use
// without declaring it. A fragment may declare the same names itself.
var readmeHarness = []struct{ name, decl string }{
	{"ctx", "var ctx context.Context"},
	{"h", "var h bokbok.Handler"},
	{"conn", "var conn *bokbok.Conn"},
	{"srv", "var srv *bokbok.Server"},
	{"key", "var key bokbok.Key"},
	{"aliceKey", "var aliceKey bokbok.Key"},
	{"keys", "var keys map[string]bokbok.Key"},
	{"addr", "var addr *string // a flag"},
	{"err", "var err error"},
	{"Msg", "type Msg struct {\n\tMethod string `msgpack:\"method\"`\n\tArgs   []any  `msgpack:\"args,omitempty\"`\n}"},
	{"mux", "var mux *bokbok.Mux"},
	{"node", "var node *pipes.Node"},
	{"token", "var token string // a secret both sides know"},
	{"GetRequest", "type GetRequest struct {\n\tKey string `msgpack:\"key\"`\n}"},
	{"GetReply", "type GetReply struct {\n\tValue   string `msgpack:\"value\"`\n\tVersion int    `msgpack:\"version\"`\n}"},
	{"get", "func get(ctx context.Context, req GetRequest) (GetReply, error) { return GetReply{}, nil }"},
}

var (
	readmeProgramRe = regexp.MustCompile(`(?m)^package main\s*$`)
	readmeFileRe    = regexp.MustCompile(`^// ([\w./-]+\.go)\s*$`)
	goDirectiveRe   = regexp.MustCompile(`(?m)^go (\S+)\s*$`)
)

// readmeModule is the temporary module holding the README's code.
type readmeModule struct {
	dir      string
	gotool   string
	programs map[string]readmeBlock // by directory, such as "server"
}

// goCmd runs the go command in the module, offline.
func (m *readmeModule) goCmd(ctx context.Context, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, m.gotool, args...)
	cmd.Dir = m.dir
	cmd.Env = append(os.Environ(),
		"GOFLAGS=-mod=mod -buildvcs=false",
		"GOPROXY=off",
		"GOSUMDB=off",
		"GOWORK=off",
		"GOTOOLCHAIN=local",
	)
	return cmd
}

// newReadmeModule writes the README's go blocks into a temporary module.
func newReadmeModule(t *testing.T, doc string) *readmeModule {
	t.Helper()
	gotool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go command in PATH:", err)
	}
	root, err := filepath.Abs(".")
	if err != nil {
		t.Fatal(err)
	}
	gomod, err := os.ReadFile("go.mod")
	if err != nil {
		t.Fatal(err)
	}
	goVersion := runtime.Version()
	if m := goDirectiveRe.FindSubmatch(gomod); m != nil {
		goVersion = string(m[1])
	}
	readme := filepath.ToSlash(filepath.Join(root, "README.md"))
	dir := t.TempDir()
	if keep := os.Getenv("BOKBOK_README_DIR"); keep != "" {
		// To look at the generated module: BOKBOK_README_DIR=/tmp/readme go test -run README
		// (a directory that does not exist, or one an earlier run made).
		if b, err := os.ReadFile(filepath.Join(keep, "go.mod")); err == nil && bytes.HasPrefix(b, []byte("module readmecheck\n")) {
			if err := os.RemoveAll(keep); err != nil {
				t.Fatal(err)
			}
		} else if _, err := os.Stat(keep); err == nil {
			t.Fatalf("BOKBOK_README_DIR=%s exists and is not a module this test made; name a new directory", keep)
		}
		dir = keep
	}
	m := &readmeModule{dir: dir, gotool: gotool, programs: make(map[string]readmeBlock)}
	writeFile(t, filepath.Join(m.dir, "go.mod"), fmt.Sprintf(
		"module readmecheck\n\ngo %s\n\nrequire github.com/bokbok-go/bokbok v0.0.0\n\nreplace github.com/bokbok-go/bokbok => %q\n",
		goVersion, filepath.ToSlash(root)))
	if sum, err := os.ReadFile("go.sum"); err == nil {
		writeFile(t, filepath.Join(m.dir, "go.sum"), string(sum))
	}

	for _, b := range readmeGoBlocks(t, doc) {
		if readmeProgramRe.MatchString(b.code) {
			path := fmt.Sprintf("prog/l%d/main.go", b.line)
			first, _, _ := strings.Cut(b.code, "\n")
			if sub := readmeFileRe.FindStringSubmatch(first); sub != nil {
				path = sub[1]
			}
			dir := filepath.Dir(filepath.FromSlash(path))
			if prev, dup := m.programs[dir]; dup {
				t.Errorf("README.md:%d: another program in %s, as at line %d", b.line, dir, prev.line)
				continue
			}
			m.programs[dir] = b
			writeFile(t, filepath.Join(m.dir, filepath.FromSlash(path)), fmt.Sprintf("//line %s:%d\n%s", readme, b.line, b.code))
			continue
		}
		files, err := readmeFragment(b, readme)
		if err != nil {
			t.Errorf("%v", err)
			continue
		}
		for name, src := range files {
			writeFile(t, filepath.Join(m.dir, "frag", fmt.Sprintf("l%d", b.line), name), src)
		}
	}
	return m
}

// readmeFragment turns a fragment into the files of a package: the
// fragment itself and the harness.
func readmeFragment(b readmeBlock, readme string) (map[string]string, error) {
	fset := token.NewFileSet()
	const bodyHead = "package p\nfunc f() error {\n"
	f, bodyErr := parser.ParseFile(fset, "", bodyHead+b.code+"}\n", parser.ParseComments)
	var (
		src      string
		declared = make(map[string]bool) // by the fragment, at package level
	)
	if bodyErr == nil {
		src = readmeBody(fset, f, b, readme)
	} else {
		// Top-level declarations, perhaps.
		var err error
		f, err = parser.ParseFile(fset, "", "package p\n"+b.code, parser.ParseComments)
		if err != nil {
			return nil, fmt.Errorf("README.md:%d: a go block that parses neither as statements nor as declarations: %v",
				b.line, readmeParseError(bodyErr, b.line-3))
		}
		for _, d := range f.Decls {
			switch d := d.(type) {
			case *ast.FuncDecl:
				if d.Recv == nil {
					declared[d.Name.Name] = true
				}
			case *ast.GenDecl:
				for _, s := range d.Specs {
					switch s := s.(type) {
					case *ast.TypeSpec:
						declared[s.Name.Name] = true
					case *ast.ValueSpec:
						for _, n := range s.Names {
							declared[n.Name] = true
						}
					}
				}
			}
		}
		src = fmt.Sprintf("//line %s:%d\n%s", readme, b.line, b.code)
	}

	var pkgs []string
	seen := make(map[string]bool)
	ast.Inspect(f, func(n ast.Node) bool {
		if sel, ok := n.(*ast.SelectorExpr); ok {
			if id, ok := sel.X.(*ast.Ident); ok && readmeImports[id.Name] != "" && !seen[id.Name] {
				seen[id.Name] = true
				pkgs = append(pkgs, id.Name)
			}
		}
		return true
	})
	sort.Slice(pkgs, func(i, j int) bool { return readmeImports[pkgs[i]] < readmeImports[pkgs[j]] })
	var head strings.Builder
	head.WriteString("package frag\n\n")
	if len(pkgs) > 0 {
		head.WriteString("import (\n")
		for _, p := range pkgs {
			fmt.Fprintf(&head, "\t%q\n", readmeImports[p])
		}
		head.WriteString(")\n\n")
	}

	var harness strings.Builder
	harness.WriteString("package frag\n\nimport (\n\t\"context\"\n\n\t\"github.com/bokbok-go/bokbok\"\n\t\"github.com/bokbok-go/bokbok/pipes\"\n)\n\n")
	harness.WriteString("var (\n\t_ context.Context\n\t_ bokbok.Key\n\t_ *pipes.Node\n)\n\n")
	for _, d := range readmeHarness {
		if !declared[d.name] {
			harness.WriteString(d.decl + "\n\n")
		}
	}
	return map[string]string{
		"fragment.go": head.String() + src,
		"harness.go":  harness.String(),
	}, nil
}

// readmeBody wraps a fragment that parsed as the body of f in a function.
// Each variable declared at the body's top level is marked used right
// after the statement that declares it, on the same line, so that line
// numbers stay the README's.
func readmeBody(fset *token.FileSet, f *ast.File, b readmeBlock, readme string) string {
	body := f.Decls[0].(*ast.FuncDecl).Body
	base := fset.File(f.Pos()).Base() + len("package p\nfunc f() error {\n")
	type insert struct {
		off  int
		text string
	}
	var inserts []insert
	for _, s := range body.List {
		var names []string
		switch s := s.(type) {
		case *ast.AssignStmt:
			if s.Tok == token.DEFINE {
				for _, e := range s.Lhs {
					if id, ok := e.(*ast.Ident); ok && id.Name != "_" {
						names = append(names, id.Name)
					}
				}
			}
		case *ast.DeclStmt:
			if g, ok := s.Decl.(*ast.GenDecl); ok && g.Tok == token.VAR {
				for _, spec := range g.Specs {
					for _, id := range spec.(*ast.ValueSpec).Names {
						if id.Name != "_" {
							names = append(names, id.Name)
						}
					}
				}
			}
		}
		if len(names) > 0 {
			blanks := strings.TrimSuffix(strings.Repeat("_, ", len(names)), ", ")
			inserts = append(inserts, insert{int(s.End()) - base, fmt.Sprintf("; %s = %s", blanks, strings.Join(names, ", "))})
		}
	}
	code := b.code
	for _, in := range slices.Backward(inserts) {
		code = code[:in.off] + in.text + code[in.off:]
	}
	tail := "\treturn nil\n"
	if n := len(body.List); n > 0 {
		if _, ok := body.List[n-1].(*ast.ReturnStmt); ok {
			tail = ""
		}
	}
	return fmt.Sprintf("func _() error {\n//line %s:%d\n%s%s}\n", readme, b.line, code, tail)
}

// readmeParseError rewrites a parse error's line numbers by adding shift.
func readmeParseError(err error, shift int) string {
	re := regexp.MustCompile(`^(\d+):`)
	var out []string
	for _, l := range strings.Split(err.Error(), "\n") {
		if m := re.FindStringSubmatch(l); m != nil {
			var n int
			fmt.Sscan(m[1], &n)
			l = fmt.Sprintf("README.md:%d:%s", n+shift, l[len(m[0]):])
		}
		out = append(out, l)
	}
	return strings.Join(out, "\n")
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestREADME(t *testing.T) {
	if testing.Short() {
		t.Skip("builds README.md's code with the go command")
	}
	doc, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	m := newReadmeModule(t, string(doc)) // reports blocks that do not parse, and goes on
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	if out, err := m.goCmd(ctx, "vet", "./...").CombinedOutput(); err != nil {
		t.Fatalf("README.md's go blocks do not compile or do not pass vet (%v); positions are README.md lines:\n%s", err, out)
	}
	if t.Failed() {
		return // a block did not parse
	}

	t.Run("five minutes", func(t *testing.T) {
		testFiveMinutes(t, ctx, m, string(doc))
	})
}

// testFiveMinutes builds and runs the programs of "Five minutes to a
// secure server and client" as the README says to.
func testFiveMinutes(t *testing.T, ctx context.Context, m *readmeModule, doc string) {
	for _, p := range []string{"keygen", "server", "client"} {
		if _, ok := m.programs[p]; !ok {
			t.Fatalf("README.md has no program %s/%s.go", p, p)
		}
	}
	bin := t.TempDir()
	out, err := m.goCmd(ctx, "build", "-o", bin+string(filepath.Separator), "./keygen", "./server", "./client").CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	exe := func(name string) string {
		if runtime.GOOS == "windows" {
			name += ".exe"
		}
		return filepath.Join(bin, name)
	}
	work := t.TempDir() // the module directory of the README, where the key files are
	run := func(name string, args ...string) (stdout, stderr string, err error) {
		cmd := exec.CommandContext(ctx, exe(name), args...)
		cmd.Dir = work
		var o, e bytes.Buffer
		cmd.Stdout, cmd.Stderr = &o, &e
		err = cmd.Run()
		return o.String(), e.String(), err
	}

	// go run ./keygen > alice.key
	keyText, stderr, err := run("keygen")
	if err != nil {
		t.Fatalf("keygen: %v\n%s", err, stderr)
	}
	if len(strings.TrimSpace(keyText)) != 44 {
		t.Fatalf("keygen printed %q, want a 44-character key", keyText)
	}
	writeFile(t, filepath.Join(work, "alice.key"), keyText)
	// echo "alice $(cat alice.key)" > users.txt
	writeFile(t, filepath.Join(work, "users.txt"), "alice "+strings.TrimSpace(keyText)+"\n")

	// go run ./server
	addr, _ := startReadmeServer(t, ctx, exe("server"), work, "127.0.0.1:0")

	// go run ./client
	got, stderr, err := run("client", "-addr", addr)
	if err != nil {
		t.Fatalf("client: %v\n%s", err, stderr)
	}
	want := "6, computed for alice\n"
	if got != want {
		t.Errorf("client printed %q, want %q", got, want)
	}
	if !strings.Contains(doc, "# prints: "+strings.TrimSpace(got)) {
		t.Errorf("README.md does not show what the client prints: %q", got)
	}

	// A new alice.key, and users.txt unchanged: the client is refused.
	keyText, stderr, err = run("keygen")
	if err != nil {
		t.Fatalf("keygen: %v\n%s", err, stderr)
	}
	writeFile(t, filepath.Join(work, "alice.key"), keyText)
	got, stderr, err = run("client", "-addr", addr)
	if err == nil {
		t.Errorf("client with a new key: succeeded, printing %q", got)
	}
	const refused = "bokbok: authentication failed"
	if !strings.Contains(stderr, refused) {
		t.Errorf("client with a new key: stderr %q, want it to contain %q", stderr, refused)
	}
	if !strings.Contains(doc, refused) {
		t.Errorf("README.md does not mention %q", refused)
	}

	// On a Unix socket, Ctrl-C stops the server cleanly and leaves no
	// socket file behind, so the next run listens there again.
	if runtime.GOOS == "windows" {
		return
	}
	for run := range 2 {
		_, server := startReadmeServer(t, ctx, exe("server"), work, "./hello.sock")
		if err := server.cmd.Process.Signal(os.Interrupt); err != nil {
			t.Fatal(err)
		}
		select {
		case <-server.exited:
		case <-time.After(20 * time.Second):
			t.Fatalf("run %d: the server did not stop on Ctrl-C:\n%s", run, server.logs.String())
		}
		if code := server.cmd.ProcessState.ExitCode(); code != 0 {
			t.Fatalf("run %d: exit status %d after Ctrl-C:\n%s", run, code, server.logs.String())
		}
		if _, err := os.Stat(filepath.Join(work, "hello.sock")); !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("run %d: the socket file is still there after Ctrl-C (%v)", run, err)
		}
	}
}

// readmeServer is a running five-minute server.
type readmeServer struct {
	cmd    *exec.Cmd
	logs   *lockedBuffer
	exited chan struct{}
}

// startReadmeServer runs the five-minute server on addr, in dir, until the
// test ends, and returns the address it logs.
func startReadmeServer(t *testing.T, ctx context.Context, exe, dir, addr string) (string, *readmeServer) {
	t.Helper()
	s := &readmeServer{cmd: exec.CommandContext(ctx, exe, "-addr", addr), logs: &lockedBuffer{}, exited: make(chan struct{})}
	s.cmd.Dir = dir
	s.cmd.Stderr = s.logs
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		s.cmd.Wait()
		close(s.exited)
	}()
	t.Cleanup(func() {
		s.cmd.Process.Kill()
		<-s.exited
	})
	listening := regexp.MustCompile(`listening on (\S+)`)
	deadline := time.Now().Add(20 * time.Second)
	for {
		if m := listening.FindStringSubmatch(s.logs.String()); m != nil {
			return m[1], s
		}
		select {
		case <-s.exited:
			t.Fatalf("the server exited before listening:\n%s", s.logs.String())
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("the server did not log \"listening on ADDR\":\n%s", s.logs.String())
		}
	}
}

// lockedBuffer collects a process's output while the test reads it.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
