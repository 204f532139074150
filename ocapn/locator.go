package ocapn

import (
	"fmt"
	"net/url"
	"sort"
	"strings"

	"github.com/bokbok-go/bokbok/ocapn/syrup"
)

// Peer is an OCapN peer locator: which netlayer (Transport) reaches the
// peer, who the peer is on it (Designator), and how to reach it (Hints,
// such as host and port). Two locators name the same peer when their
// transports and designators are equal, whatever their hints.
type Peer struct {
	Transport  string
	Designator string
	Hints      map[string]string // nil: none
}

// Same reports whether p and q name the same peer.
func (p Peer) Same(q Peer) bool {
	return p.Transport == q.Transport && p.Designator == q.Designator
}

// String returns the locator's URI, ocapn://DESIGNATOR.TRANSPORT?HINTS,
// with the hints sorted by name.
func (p Peer) String() string {
	var b strings.Builder
	b.WriteString("ocapn://")
	b.WriteString(url.PathEscape(p.Designator))
	b.WriteByte('.')
	b.WriteString(p.Transport)
	b.WriteString(p.query())
	return b.String()
}

func (p Peer) query() string {
	if len(p.Hints) == 0 {
		return ""
	}
	keys := make([]string, 0, len(p.Hints))
	for k := range p.Hints {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var q []string
	for _, k := range keys {
		q = append(q, url.QueryEscape(k)+"="+url.QueryEscape(p.Hints[k]))
	}
	return "?" + strings.Join(q, "&")
}

// Sturdyref is an OCapN sturdyref locator: a peer and the swiss number
// of one of its objects. Whoever holds it may reach the object.
type Sturdyref struct {
	Peer  Peer
	Swiss []byte
}

// String returns the sturdyref's URI,
// ocapn://DESIGNATOR.TRANSPORT/s/SWISS?HINTS.
func (s Sturdyref) String() string {
	p := s.Peer
	p.Hints = nil
	return p.String() + "/s/" + url.PathEscape(string(s.Swiss)) + s.Peer.query()
}

// ParsePeer parses a peer locator URI (see Peer.String).
func ParsePeer(uri string) (Peer, error) {
	p, path, err := parseURI(uri)
	if err != nil {
		return Peer{}, err
	}
	if path != "" {
		return Peer{}, fmt.Errorf("ocapn: %q: a peer locator has no path", uri)
	}
	return p, nil
}

// ParseSturdyref parses a sturdyref URI (see Sturdyref.String).
func ParseSturdyref(uri string) (Sturdyref, error) {
	p, path, err := parseURI(uri)
	if err != nil {
		return Sturdyref{}, err
	}
	swiss, ok := strings.CutPrefix(path, "/s/")
	if !ok || swiss == "" || strings.Contains(swiss, "/") {
		return Sturdyref{}, fmt.Errorf("ocapn: %q: a sturdyref's path is /s/SWISS", uri)
	}
	return Sturdyref{Peer: p, Swiss: []byte(swiss)}, nil
}

func parseURI(uri string) (Peer, string, error) {
	u, err := url.Parse(uri)
	if err != nil {
		return Peer{}, "", fmt.Errorf("ocapn: %w", err)
	}
	if u.Scheme != "ocapn" || u.User != nil || u.Fragment != "" || u.Opaque != "" {
		return Peer{}, "", fmt.Errorf("ocapn: %q is not an ocapn:// locator", uri)
	}
	host := u.Host
	dot := strings.LastIndexByte(host, '.')
	if dot <= 0 || dot == len(host)-1 {
		return Peer{}, "", fmt.Errorf("ocapn: %q: want ocapn://DESIGNATOR.TRANSPORT", uri)
	}
	p := Peer{Designator: host[:dot], Transport: host[dot+1:]}
	if u.RawQuery != "" {
		q, err := url.ParseQuery(u.RawQuery)
		if err != nil {
			return Peer{}, "", fmt.Errorf("ocapn: %q: hints: %w", uri, err)
		}
		p.Hints = make(map[string]string, len(q))
		for k, v := range q {
			if len(v) != 1 {
				return Peer{}, "", fmt.Errorf("ocapn: %q: hint %q given %d times", uri, k, len(v))
			}
			p.Hints[k] = v[0]
		}
	}
	return p, u.Path, nil
}

// syrup returns the locator as OCapN's record
// <ocapn-peer transport designator hints>, hints false when there are
// none.
func (p Peer) syrup() syrup.Record {
	var hints any = false
	if len(p.Hints) > 0 {
		d := make(syrup.Dict, 0, len(p.Hints))
		for k, v := range p.Hints {
			d = append(d, syrup.Entry{Key: k, Value: v})
		}
		hints = d
	}
	return syrup.Record{Label: syrup.Symbol("ocapn-peer"), Fields: []any{syrup.Symbol(p.Transport), p.Designator, hints}}
}

// peerFromSyrup reads an <ocapn-peer ...> record. Hint names and values
// may be strings or symbols (implementations differ).
func peerFromSyrup(v any) (Peer, error) {
	r, ok := v.(syrup.Record)
	if !ok || r.Label != syrup.Symbol("ocapn-peer") || len(r.Fields) != 3 {
		return Peer{}, fmt.Errorf("not an <ocapn-peer transport designator hints> record")
	}
	transport, ok := r.Fields[0].(syrup.Symbol)
	if !ok || transport == "" || strings.Contains(string(transport), ".") {
		return Peer{}, fmt.Errorf("ocapn-peer: transport is not a symbol without dots")
	}
	designator, ok := textOf(r.Fields[1])
	if !ok {
		return Peer{}, fmt.Errorf("ocapn-peer: designator is not a string")
	}
	p := Peer{Transport: string(transport), Designator: designator}
	switch h := r.Fields[2].(type) {
	case bool:
		if h {
			return Peer{}, fmt.Errorf("ocapn-peer: hints are true")
		}
	case syrup.Dict:
		p.Hints = make(map[string]string, len(h))
		for _, e := range h {
			k, ok1 := textOf(e.Key)
			val, ok2 := textOf(e.Value)
			if !ok1 || !ok2 {
				return Peer{}, fmt.Errorf("ocapn-peer: a hint is not text")
			}
			if _, dup := p.Hints[k]; dup {
				return Peer{}, fmt.Errorf("ocapn-peer: hint %q given twice", k)
			}
			p.Hints[k] = val
		}
	default:
		return Peer{}, fmt.Errorf("ocapn-peer: hints are neither a dictionary nor false")
	}
	return p, nil
}

// syrup returns the sturdyref as <ocapn-sturdyref peer swiss-num>.
func (s Sturdyref) syrup() syrup.Record {
	return syrup.Record{Label: syrup.Symbol("ocapn-sturdyref"), Fields: []any{s.Peer.syrup(), s.Swiss}}
}

// sturdyrefFromSyrup reads an <ocapn-sturdyref peer swiss-num> record;
// the swiss number may be a byte string or a string.
func sturdyrefFromSyrup(v any) (Sturdyref, error) {
	r, ok := v.(syrup.Record)
	if !ok || r.Label != syrup.Symbol("ocapn-sturdyref") || len(r.Fields) != 2 {
		return Sturdyref{}, fmt.Errorf("not an <ocapn-sturdyref peer swiss-num> record")
	}
	p, err := peerFromSyrup(r.Fields[0])
	if err != nil {
		return Sturdyref{}, err
	}
	swiss, ok := bytesOf(r.Fields[1])
	if !ok {
		return Sturdyref{}, fmt.Errorf("ocapn-sturdyref: swiss number is not a byte string")
	}
	return Sturdyref{Peer: p, Swiss: swiss}, nil
}

// textOf returns a string or symbol's text.
func textOf(v any) (string, bool) {
	switch x := v.(type) {
	case string:
		return x, true
	case syrup.Symbol:
		return string(x), true
	}
	return "", false
}

// bytesOf returns a byte string's or a string's octets.
func bytesOf(v any) ([]byte, bool) {
	switch x := v.(type) {
	case []byte:
		return x, true
	case string:
		return []byte(x), true
	}
	return nil, false
}
