package promcheck

import (
	"fmt"
	"regexp"
	"strings"
)

// ---------------------------------------------------------------------------
// A PromQL parser, enough for dashboards: selectors, functions, aggregations,
// binary operators with vector matching, ranges and subqueries.

type tokKind int

const (
	tEOF tokKind = iota
	tIdent
	tNumber // numbers, durations, and Grafana variables standing for them
	tString
	tRange // the inside of [...]
	tPunct
)

type token struct {
	kind tokKind
	text string
	pos  int
}

func isIdentStart(c byte) bool {
	return c == '_' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
}

func isIdentChar(c byte) bool { return isIdentStart(c) || (c >= '0' && c <= '9') || c == ':' }

func lex(s string) ([]token, error) {
	var toks []token
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			i++
		case c == '#':
			for i < len(s) && s[i] != '\n' {
				i++
			}
		case isIdentStart(c):
			j := i + 1
			for j < len(s) && isIdentChar(s[j]) {
				j++
			}
			toks = append(toks, token{tIdent, s[i:j], i})
			i = j
		case (c >= '0' && c <= '9') || c == '.':
			j := i + 1
			for j < len(s) && (isIdentChar(s[j]) || s[j] == '.') {
				j++
			}
			toks = append(toks, token{tNumber, s[i:j], i})
			i = j
		case c == '$':
			m := VarRef.FindStringIndex(s[i:])
			if m == nil || m[0] != 0 {
				return nil, fmt.Errorf("stray $ at %d", i)
			}
			toks = append(toks, token{tNumber, s[i : i+m[1]], i})
			i += m[1]
		case c == '"' || c == '\'' || c == '`':
			j := i + 1
			for j < len(s) && s[j] != c {
				if s[j] == '\\' && c != '`' {
					j++
				}
				j++
			}
			if j >= len(s) {
				return nil, fmt.Errorf("unterminated string at %d", i)
			}
			toks = append(toks, token{tString, s[i+1 : j], i})
			i = j + 1
		case c == '[':
			k := strings.IndexByte(s[i:], ']')
			if k < 0 {
				return nil, fmt.Errorf("unclosed [ at %d", i)
			}
			toks = append(toks, token{tRange, strings.TrimSpace(s[i+1 : i+k]), i})
			i += k + 1
		default:
			if i+1 < len(s) {
				switch two := s[i : i+2]; two {
				case "=~", "!~", "!=", "==", ">=", "<=":
					toks = append(toks, token{tPunct, two, i})
					i += 2
					continue
				}
			}
			if !strings.ContainsRune("(){},=+-*/%^<>@", rune(c)) {
				return nil, fmt.Errorf("unexpected %q at %d", c, i)
			}
			toks = append(toks, token{tPunct, string(c), i})
			i++
		}
	}
	return append(toks, token{kind: tEOF, pos: len(s)}), nil
}

type node any

type (
	numberLit struct{ text string }
	stringLit struct{ text string }
	matcher   struct{ label, op, value string }
	selector  struct {
		name     string
		matchers []matcher
		rng      string
	}
	call struct {
		fn   string
		args []node
	}
	aggregation struct {
		op                   string
		grouping             []string
		without, hasGrouping bool
		param, expr          node
	}
	binary struct {
		op, card          string // card: "", group_left, group_right
		lhs, rhs          node
		on, hasMatching   bool
		matching, include []string
	}
	unary    struct{ expr node }
	paren    struct{ expr node }
	subquery struct {
		expr node
		rng  string
	}
)

var aggregators = map[string]bool{
	"sum": true, "avg": true, "min": true, "max": true, "count": true, "group": true, "stddev": true, "stdvar": true,
	"topk": true, "bottomk": true, "quantile": true, "count_values": true, "limitk": true, "limit_ratio": true,
}

var binaryPrec = map[string]int{
	"or": 1, "and": 2, "unless": 2,
	"==": 3, "!=": 3, "<=": 3, "<": 3, ">=": 3, ">": 3,
	"+": 4, "-": 4, "*": 5, "/": 5, "%": 5, "atan2": 5, "^": 6,
}

var rangeSyntax = regexp.MustCompile(`^(?:(?:\d+(?:ms|s|m|h|d|w|y))+|\$\{?\w+\}?)?$`)

type parser struct {
	toks []token
	i    int
}

type syntaxError struct{ msg string }

func (p *parser) peek() token { return p.toks[p.i] }

func (p *parser) next() token {
	t := p.toks[p.i]
	if t.kind != tEOF {
		p.i++
	}
	return t
}

func (p *parser) fail(format string, args ...any) {
	panic(syntaxError{fmt.Sprintf(format, args...)})
}

func (p *parser) is(text string) bool {
	t := p.peek()
	return (t.kind == tPunct || t.kind == tIdent) && t.text == text
}

func (p *parser) expect(text string) {
	if t := p.next(); t.text != text || (t.kind != tPunct && t.kind != tIdent) {
		p.fail("want %q at %d, got %q", text, t.pos, t.text)
	}
}

func parse(src string) (n node, err error) {
	toks, err := lex(src)
	if err != nil {
		return nil, err
	}
	p := &parser{toks: toks}
	defer func() {
		if r := recover(); r != nil {
			se, ok := r.(syntaxError)
			if !ok {
				panic(r)
			}
			n, err = nil, fmt.Errorf("%s", se.msg)
		}
	}()
	n = p.binaryExpr(1)
	if t := p.peek(); t.kind != tEOF {
		p.fail("unexpected %q at %d", t.text, t.pos)
	}
	return n, nil
}

func (p *parser) binaryExpr(minPrec int) node {
	lhs := p.unaryExpr()
	for {
		t := p.peek()
		prec, ok := binaryPrec[t.text]
		if !ok || (t.kind != tPunct && t.kind != tIdent) || prec < minPrec {
			return lhs
		}
		p.next()
		b := &binary{op: t.text}
		if p.is("bool") {
			p.next()
		}
		if p.is("on") || p.is("ignoring") {
			b.on, b.hasMatching = p.next().text == "on", true
			b.matching = p.labelList()
		}
		if p.is("group_left") || p.is("group_right") {
			b.card = p.next().text
			if p.is("(") {
				b.include = p.labelList()
			}
		}
		nextMin := prec + 1
		if t.text == "^" {
			nextMin = prec // right-associative
		}
		b.lhs, b.rhs = lhs, p.binaryExpr(nextMin)
		lhs = b
	}
}

func (p *parser) unaryExpr() node {
	if p.is("-") || p.is("+") {
		p.next()
		return &unary{p.unaryExpr()}
	}
	return p.postfix(p.primary())
}

func (p *parser) postfix(n node) node {
	for {
		switch t := p.peek(); {
		case t.kind == tRange:
			p.next()
			parts := strings.SplitN(t.text, ":", 2)
			if !rangeSyntax.MatchString(parts[0]) || parts[0] == "" || (len(parts) == 2 && !rangeSyntax.MatchString(parts[1])) {
				p.fail("bad range [%s] at %d", t.text, t.pos)
			}
			if sel, ok := n.(*selector); ok && sel.rng == "" && len(parts) == 1 {
				sel.rng = t.text
			} else if len(parts) == 2 {
				n = &subquery{n, t.text}
			} else {
				p.fail("a range [%s] at %d can follow only a selector; a subquery needs [range:step]", t.text, t.pos)
			}
		case t.kind == tIdent && t.text == "offset":
			p.next()
			if d := p.next(); d.kind != tNumber {
				p.fail("want a duration after offset at %d", d.pos)
			}
		case t.kind == tPunct && t.text == "@":
			p.next()
			p.primary()
		default:
			return n
		}
	}
}

func (p *parser) primary() node {
	t := p.next()
	switch t.kind {
	case tNumber:
		return &numberLit{t.text}
	case tString:
		return &stringLit{t.text}
	case tPunct:
		switch t.text {
		case "(":
			n := p.binaryExpr(1)
			p.expect(")")
			return &paren{n}
		case "{":
			return &selector{matchers: p.matchers()}
		}
	case tIdent:
		switch {
		case strings.EqualFold(t.text, "inf") || strings.EqualFold(t.text, "nan"):
			return &numberLit{t.text}
		case aggregators[t.text] && (p.is("(") || p.is("by") || p.is("without")):
			return p.aggregation(t.text)
		case p.is("("):
			p.next()
			c := &call{fn: t.text}
			for !p.is(")") {
				c.args = append(c.args, p.binaryExpr(1))
				if !p.is(")") {
					p.expect(",")
				}
			}
			p.next()
			return c
		default:
			sel := &selector{name: t.text}
			if p.is("{") {
				p.next()
				sel.matchers = p.matchers()
			}
			return sel
		}
	}
	p.fail("unexpected %q at %d", t.text, t.pos)
	return nil
}

func (p *parser) aggregation(op string) node {
	a := &aggregation{op: op}
	grouping := func() {
		if p.is("by") || p.is("without") {
			a.without, a.hasGrouping = p.next().text == "without", true
			a.grouping = p.labelList()
		}
	}
	grouping()
	p.expect("(")
	first := p.binaryExpr(1)
	if p.is(",") {
		p.next()
		a.param, a.expr = first, p.binaryExpr(1)
	} else {
		a.expr = first
	}
	p.expect(")")
	if !a.hasGrouping {
		grouping()
	}
	return a
}

func (p *parser) labelList() []string {
	p.expect("(")
	var labels []string
	for !p.is(")") {
		t := p.next()
		if t.kind != tIdent {
			p.fail("want a label name at %d, got %q", t.pos, t.text)
		}
		labels = append(labels, t.text)
		if !p.is(")") {
			p.expect(",")
		}
	}
	p.next()
	return labels
}

// matchers reads label matchers up to the closing brace; the opening brace
// has been read.
func (p *parser) matchers() []matcher {
	var ms []matcher
	for !p.is("}") {
		l := p.next()
		if l.kind != tIdent {
			p.fail("want a label name at %d, got %q", l.pos, l.text)
		}
		op := p.next()
		if op.kind != tPunct || (op.text != "=" && op.text != "!=" && op.text != "=~" && op.text != "!~") {
			p.fail("want a matcher operator at %d, got %q", op.pos, op.text)
		}
		v := p.next()
		if v.kind != tString {
			p.fail("want a quoted value at %d, got %q", v.pos, v.text)
		}
		ms = append(ms, matcher{l.text, op.text, v.text})
		if !p.is("}") {
			p.expect(",")
		}
	}
	p.next()
	return ms
}

// VarRef matches a Grafana variable reference: ${name}, ${name:format},
// $name or [[name]]; the name is in one of the three groups.
var VarRef = regexp.MustCompile(`\$\{(\w+)(?::[^}]*)?\}|\$(\w+)|\[\[(\w+)(?::[^\]]*)?\]\]`)
