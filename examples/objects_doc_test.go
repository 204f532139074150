package examples_test

// A check of PROTOCOL.md's Appendix A, which lists the methods the
// example programs' capability objects answer, against the programs'
// sources. The sources are parsed, not imported (they are main packages):
// the object a table names `x` is the Go type x of the program it names,
// and its methods are the type's exported methods of the forms an actor's
// methods take, under their kebab-case names.

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/bokbok-go/bokbok/ocap"
)

// docMethod is one row of an object's table.
type docMethod struct {
	args   []string // the msgpack type of each argument
	result string   // the result's first word: str, ref, int or nil
	errors []string // the codes listed
}

// docObject is one object of Appendix A.
type docObject struct {
	program string // a directory under examples/
	methods map[string]docMethod
}

var (
	objectLine = regexp.MustCompile("^\\*\\*Object `([a-z]+)`\\*\\*, served by `examples/([a-z/]+)`")
	methodRow  = regexp.MustCompile("^\\| `([a-z-]+)` \\| (.*?) \\| (.*?) \\| (.*?) \\|$")
	argItem    = regexp.MustCompile("^`[a-z]+` ([a-z]+)$")
	codeSpan   = regexp.MustCompile("`([a-z]+\\.[a-z_]+)`")
)

// readAppendixA parses the object tables of PROTOCOL.md's Appendix A.
func readAppendixA(t *testing.T) (map[string]*docObject, string) {
	t.Helper()
	b, err := os.ReadFile("../PROTOCOL.md")
	if err != nil {
		t.Fatal(err)
	}
	_, appendix, ok := strings.Cut(string(b), "\n## Appendix A. The example objects\n")
	if !ok {
		t.Fatal("PROTOCOL.md has no Appendix A")
	}
	if i := strings.Index(appendix, "\n## "); i >= 0 {
		appendix = appendix[:i]
	}
	objects := map[string]*docObject{}
	var cur *docObject
	for _, line := range strings.Split(appendix, "\n") {
		if m := objectLine.FindStringSubmatch(line); m != nil {
			if objects[m[1]] != nil {
				t.Fatalf("Appendix A lists object %q twice", m[1])
			}
			cur = &docObject{program: m[2], methods: map[string]docMethod{}}
			objects[m[1]] = cur
			continue
		}
		m := methodRow.FindStringSubmatch(line)
		if m == nil || cur == nil {
			continue
		}
		var dm docMethod
		if m[2] != "none" {
			for _, a := range strings.Split(m[2], ", ") {
				am := argItem.FindStringSubmatch(a)
				if am == nil {
					t.Fatalf("Appendix A: method %q: argument %q is not `name` type", m[1], a)
				}
				dm.args = append(dm.args, am[1])
			}
		}
		dm.result, _, _ = strings.Cut(strings.TrimLeft(m[3], "`"), ":")
		dm.result, _, _ = strings.Cut(dm.result, ",")
		for _, c := range codeSpan.FindAllStringSubmatch(m[4], -1) {
			dm.errors = append(dm.errors, c[1])
		}
		if _, dup := cur.methods[m[1]]; dup {
			t.Fatalf("Appendix A lists method %q twice", m[1])
		}
		cur.methods[m[1]] = dm
	}
	if len(objects) == 0 {
		t.Fatal("Appendix A lists no objects")
	}
	return objects, appendix
}

// goProgram is the parsed source of one example program.
type goProgram struct {
	files []*ast.File
}

func parseProgram(t *testing.T, dir string) *goProgram {
	t.Helper()
	names, err := filepath.Glob(filepath.Join(dir, "*.go"))
	if err != nil || len(names) == 0 {
		t.Fatalf("no Go files in examples/%s (%v)", dir, err)
	}
	p := &goProgram{}
	fset := token.NewFileSet()
	for _, n := range names {
		if strings.HasSuffix(n, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, n, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		p.files = append(p.files, f)
	}
	return p
}

// goMethod is an exported method of a type, as a message invokes it.
type goMethod struct {
	args   []string // msgpack types of the parameters after a context
	result string   // str, ref, int, nil, or "" for a promise (not checked)
	errors []string // codes of the bokbok.Errorf calls in its body
}

// methods returns the exported methods of type name that an actor's
// methods can be, by kebab-case name.
func (p *goProgram) methods(t *testing.T, name string) (map[string]goMethod, bool) {
	t.Helper()
	found := false
	out := map[string]goMethod{}
	for _, f := range p.files {
		for _, d := range f.Decls {
			if g, ok := d.(*ast.GenDecl); ok {
				for _, s := range g.Specs {
					if ts, ok := s.(*ast.TypeSpec); ok && ts.Name.Name == name {
						found = true
					}
				}
			}
			fd, ok := d.(*ast.FuncDecl)
			if !ok || fd.Recv == nil || !fd.Name.IsExported() || recvType(fd) != name {
				continue
			}
			m, ok := invocable(t, fd)
			if ok {
				out[ocap.MethodName(fd.Name.Name)] = m
			}
		}
	}
	return out, found
}

func recvType(fd *ast.FuncDecl) string {
	e := fd.Recv.List[0].Type
	if s, ok := e.(*ast.StarExpr); ok {
		e = s.X
	}
	if id, ok := e.(*ast.Ident); ok {
		return id.Name
	}
	return ""
}

// invocable reads a method's signature, if it is of a form a message can
// invoke: an optional context, arguments, and nothing, a value, an error,
// or a value and an error.
func invocable(t *testing.T, fd *ast.FuncDecl) (goMethod, bool) {
	var m goMethod
	params := fd.Type.Params.List
	for i, f := range params {
		typ := typeString(f.Type)
		n := max(len(f.Names), 1)
		if i == 0 && typ == "context.Context" {
			continue
		}
		if _, ok := f.Type.(*ast.Ellipsis); ok {
			return m, false
		}
		for range n {
			m.args = append(m.args, msgpackType(t, fd.Name.Name, typ))
		}
	}
	var results []string
	if fd.Type.Results != nil {
		for _, f := range fd.Type.Results.List {
			for range max(len(f.Names), 1) {
				results = append(results, typeString(f.Type))
			}
		}
	}
	switch {
	case len(results) == 0, len(results) == 1 && results[0] == "error":
		m.result = "nil"
	case len(results) == 1, len(results) == 2 && results[1] == "error":
		m.result = msgpackType(t, fd.Name.Name, results[0])
	default:
		return m, false
	}
	ast.Inspect(fd.Body, func(n ast.Node) bool {
		if c, ok := n.(*ast.CallExpr); ok && typeString(c.Fun) == "bokbok.Errorf" && len(c.Args) > 0 {
			if code, ok := stringLit(c.Args[0]); ok {
				m.errors = append(m.errors, code)
			}
		}
		return true
	})
	return m, true
}

func typeString(e ast.Expr) string {
	switch e := e.(type) {
	case *ast.Ident:
		return e.Name
	case *ast.SelectorExpr:
		return typeString(e.X) + "." + e.Sel.Name
	case *ast.StarExpr:
		return "*" + typeString(e.X)
	case *ast.ArrayType:
		return "[]" + typeString(e.Elt)
	}
	return "?"
}

// msgpackType names a Go parameter or result type as Appendix A does.
func msgpackType(t *testing.T, method, goType string) string {
	switch goType {
	case "string":
		return "str"
	case "ocap.Ref":
		return "ref"
	case "int":
		return "int"
	case "[]byte":
		return "bin"
	case "*ocap.Promise":
		return "" // the answer follows the promise: whatever it settles as
	}
	t.Errorf("method %s: no msgpack name for Go type %s in this test", method, goType)
	return goType
}

func stringLit(e ast.Expr) (string, bool) {
	bl, ok := e.(*ast.BasicLit)
	if !ok || bl.Kind != token.STRING {
		return "", false
	}
	s, err := strconv.Unquote(bl.Value)
	return s, err == nil
}

// sent returns the method names the program sends (the first argument of
// Send and SendOnly, the method argument of the chat room's tell), the
// names it fetches, binds, and the types it spawns (&T{...}).
func (p *goProgram) sent() (methods, names, spawned []string) {
	for _, f := range p.files {
		ast.Inspect(f, func(n ast.Node) bool {
			c, ok := n.(*ast.CallExpr)
			if !ok {
				return true
			}
			fn := ""
			switch e := c.Fun.(type) {
			case *ast.SelectorExpr:
				fn = e.Sel.Name
			case *ast.Ident:
				fn = e.Name
			}
			arg := func(i int) (string, bool) {
				if i >= len(c.Args) {
					return "", false
				}
				return stringLit(c.Args[i])
			}
			switch fn {
			case "Send", "SendOnly":
				if s, ok := arg(0); ok {
					methods = append(methods, s)
				}
			case "tell":
				if s, ok := arg(2); ok {
					methods = append(methods, s)
				}
			case "Fetch", "Bind":
				if s, ok := arg(0); ok {
					names = append(names, s)
				}
			case "Spawn":
				for _, a := range c.Args {
					if u, ok := a.(*ast.UnaryExpr); ok && u.Op == token.AND {
						if cl, ok := u.X.(*ast.CompositeLit); ok {
							spawned = append(spawned, typeString(cl.Type))
						}
					}
				}
			}
			return true
		})
	}
	return methods, names, spawned
}

// TestExampleObjectsDoc checks PROTOCOL.md's Appendix A against the
// example programs: each object's methods, their arguments, results and
// error codes are those of the Go type, every actor an example spawns is
// listed, and every method an example sends and every name it fetches or
// binds is documented.
func TestExampleObjectsDoc(t *testing.T) {
	objects, appendix := readAppendixA(t)
	programs := map[string]*goProgram{}
	program := func(dir string) *goProgram {
		if programs[dir] == nil {
			programs[dir] = parseProgram(t, dir)
		}
		return programs[dir]
	}
	documented := map[string]bool{} // method names of any object
	for name, obj := range objects {
		goMethods, found := program(obj.program).methods(t, name)
		if !found {
			t.Errorf("Appendix A: object %q: examples/%s has no type %s", name, obj.program, name)
			continue
		}
		var docNames, goNames []string
		for m := range obj.methods {
			docNames = append(docNames, m)
			documented[m] = true
		}
		for m := range goMethods {
			goNames = append(goNames, m)
		}
		slices.Sort(docNames)
		slices.Sort(goNames)
		if !slices.Equal(docNames, goNames) {
			t.Errorf("Appendix A: object %q lists methods %q; examples/%s's %s has %q", name, docNames, obj.program, name, goNames)
			continue
		}
		for m, dm := range obj.methods {
			gm := goMethods[m]
			if !slices.Equal(dm.args, gm.args) {
				t.Errorf("Appendix A: %s.%s takes %q; the Go method takes %q", name, m, dm.args, gm.args)
			}
			if gm.result != "" && dm.result != gm.result {
				t.Errorf("Appendix A: %s.%s answers %q; the Go method answers %q", name, m, dm.result, gm.result)
			}
			slices.Sort(dm.errors)
			slices.Sort(gm.errors)
			if !slices.Equal(dm.errors, gm.errors) {
				t.Errorf("Appendix A: %s.%s breaks with %q; the Go method with %q", name, m, dm.errors, gm.errors)
			}
		}
	}

	// Every example program's capability traffic is documented.
	dirs, err := filepath.Glob("*/main.go")
	if err != nil {
		t.Fatal(err)
	}
	more, err := filepath.Glob("*/*/main.go")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range append(dirs, more...) {
		dir := filepath.ToSlash(filepath.Dir(f))
		methods, names, spawned := program(dir).sent()
		for _, m := range methods {
			if !documented[m] {
				t.Errorf("examples/%s sends %q, which Appendix A lists for no object", dir, m)
			}
		}
		for _, n := range names {
			if !strings.Contains(appendix, "under the name `"+n+"`") {
				t.Errorf("examples/%s fetches or binds %q, which Appendix A does not name", dir, n)
			}
		}
		for _, s := range spawned {
			if obj := objects[s]; obj == nil || obj.program != dir {
				t.Errorf("examples/%s spawns a %s, which Appendix A does not list as served by it", dir, s)
			}
		}
	}
}
