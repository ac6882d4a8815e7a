package auth

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/ternmq/tern/trie"
)

// ACLFile is an Authorizer read from a file in mosquitto's acl_file format:
//
//	# topic lines before any "user" line apply to anonymous clients
//	topic read public/#
//	user alice
//	topic readwrite sensors/#
//	topic deny sensors/secret/#
//	topic write alerts/alice
//	topic read $SYS/#
//	# patterns apply to every client; %c = client id, %u = username
//	pattern readwrite devices/%c/#
//
// The access word is read, write, readwrite (the default when omitted) or
// deny. A client is governed by the topic lines of its user (of the
// anonymous section when it has no username) and by every pattern.
//
// Decisions, in order:
//
//  1. A deny that applies refuses, whatever grants say (mosquitto
//     semantics). A PUBLISH topic is refused when a deny rule matches it;
//     a SUBSCRIBE filter is refused when it overlaps a deny rule, that is
//     when some topic could match both: with "deny secret/#", "#",
//     "+/x" and "secret/+" are refused, since the broker decides a
//     subscription once, when it is made, and must not deliver from a
//     denied subtree later.
//  2. Otherwise a grant decides. A PUBLISH topic needs a write rule that
//     matches it; a SUBSCRIBE filter needs one read rule that covers it,
//     every topic the filter can match ('#' in the rule covers the rest,
//     '+' one level or a '+' in the filter).
//  3. With no grant, access is refused.
//
// Topics whose first level begins with '$' are the broker's
// (MQTT §4.7.2): as in subscription matching [MQTT-4.7.2-1], a rule whose
// first level is a wildcard or a substitution never reaches them, so
// "readwrite #" does not grant "$SYS/#"; only a rule whose first level is
// literally "$…" does, e.g. "topic read $SYS/#". Publishing to "$SYS" or
// "$SYS/…" is refused whatever the file says: those topics carry the
// broker's own state, and a client writing there could forge it. Other
// "$…" topics can be granted for writing by an explicit rule.
//
// Substitutions: '%c' and '%u' are replaced by the client id and username.
// A value containing '+', '#' or '/' would widen the rule, so such a value
// voids a granting pattern for that client, and makes a deny pattern deny
// everything to it (a client cannot escape a deny by choosing its name).
// An empty value (no username) leaves the pattern out for that client.
//
// The rules are immutable after parsing: an ACLFile is safe for concurrent
// use, and a decision does not allocate.
type ACLFile struct {
	anon     ruleSet
	users    map[string]*ruleSet
	patterns ruleSet
}

// ruleSet keeps denies apart from grants so that a decision reads every
// deny first and can stop at the first grant.
type ruleSet struct {
	deny, grant []aclRule
}

type aclRule struct {
	levels      []string // the topic filter, split at '/'
	read, write bool
	subC, subU  bool // a pattern using %c, %u
}

func (r *aclRule) subst() bool { return r.subC || r.subU }

// LoadACLFile reads an ACL file.
func LoadACLFile(path string) (*ACLFile, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return ParseACL(f)
}

// ParseACL parses ACL file content, reporting every bad line.
func ParseACL(r io.Reader) (*ACLFile, error) {
	a := &ACLFile{users: map[string]*ruleSet{}}
	sc := bufio.NewScanner(r)
	var errs []error
	user, inUser := "", false
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		word, rest, _ := strings.Cut(line, " ")
		rest = strings.TrimSpace(rest)
		switch word {
		case "user":
			if rest == "" {
				errs = append(errs, fmt.Errorf("line %d: user needs a name", n))
				continue
			}
			user, inUser = rest, true
		case "topic", "pattern":
			rule, err := parseACLRule(rest, word == "pattern")
			if err != nil {
				errs = append(errs, fmt.Errorf("line %d: %w", n, err))
				continue
			}
			set := &a.anon
			switch {
			case word == "pattern":
				set = &a.patterns
			case inUser:
				if a.users[user] == nil {
					a.users[user] = &ruleSet{}
				}
				set = a.users[user]
			}
			if rule.read || rule.write {
				set.grant = append(set.grant, rule)
			} else {
				set.deny = append(set.deny, rule)
			}
		default:
			errs = append(errs, fmt.Errorf("line %d: unknown keyword %q (want user, topic or pattern)", n, word))
		}
	}
	if err := sc.Err(); err != nil {
		errs = append(errs, err)
	}
	return a, errors.Join(errs...)
}

func parseACLRule(s string, pattern bool) (aclRule, error) {
	access, topic := "readwrite", s
	if w, t, ok := strings.Cut(s, " "); ok && (w == "read" || w == "write" || w == "readwrite" || w == "deny") {
		access, topic = w, strings.TrimSpace(t)
	}
	if topic == "" {
		return aclRule{}, errors.New("rule needs a topic")
	}
	if err := trie.ValidateFilter([]byte(topic), 0); err != nil {
		return aclRule{}, fmt.Errorf("topic %q: %w", topic, err)
	}
	r := aclRule{levels: strings.Split(topic, "/")}
	if pattern {
		r.subC, r.subU = strings.Contains(topic, "%c"), strings.Contains(topic, "%u")
	}
	switch access {
	case "read":
		r.read = true
	case "write":
		r.write = true
	case "readwrite":
		r.read, r.write = true, true
	}
	return r, nil
}

// who is the client a decision is about, with whether each substitution
// value is usable in a topic.
type who struct {
	clientID, username string
	idOK, userOK       bool // non-empty and free of topic syntax
	idBad, userBad     bool // contains '+', '#' or '/'
}

func newWho(clientID, username string) who {
	w := who{clientID: clientID, username: username}
	w.idBad = strings.ContainsAny(clientID, "+#/")
	w.userBad = strings.ContainsAny(username, "+#/")
	w.idOK = clientID != "" && !w.idBad
	w.userOK = username != "" && !w.userBad
	return w
}

// applies says whether pattern r can be expanded for w; when it cannot,
// hostile is true if a value carries topic syntax (rather than being empty).
func (w *who) applies(r *aclRule) (ok, hostile bool) {
	if (r.subC && !w.idOK) || (r.subU && !w.userOK) {
		return false, (r.subC && w.idBad) || (r.subU && w.userBad)
	}
	return true, false
}

// CanPublish implements Authorizer.
func (a *ACLFile) CanPublish(clientID, username, topic string) bool {
	if topic == "$SYS" || strings.HasPrefix(topic, "$SYS/") {
		return false // the broker's own topics: never written by clients
	}
	w := newWho(clientID, username)
	return a.decide(&w, username, func(r *aclRule) bool { return r.matchTopic(topic, &w) },
		func(r *aclRule) bool { return r.write && r.matchTopic(topic, &w) })
}

// CanSubscribe implements Authorizer.
func (a *ACLFile) CanSubscribe(clientID, username, filter string) bool {
	if _, inner, shared := trie.SplitShared(filter); shared {
		filter = inner
	}
	w := newWho(clientID, username)
	return a.decide(&w, username, func(r *aclRule) bool { return r.overlaps(filter, &w) },
		func(r *aclRule) bool { return r.read && r.covers(filter, &w) })
}

// decide applies the deny rules, then the grants, of the client's section
// and of the patterns.
func (a *ACLFile) decide(w *who, username string, denied, granted func(*aclRule) bool) bool {
	set := &a.anon
	if username != "" {
		set = a.users[username] // nil: no section, patterns only
	}
	if set != nil {
		for i := range set.deny {
			if denied(&set.deny[i]) {
				return false
			}
		}
	}
	for i := range a.patterns.deny {
		r := &a.patterns.deny[i]
		ok, hostile := w.applies(r)
		if hostile || (ok && denied(r)) {
			return false
		}
	}
	if set != nil {
		for i := range set.grant {
			if granted(&set.grant[i]) {
				return true
			}
		}
	}
	for i := range a.patterns.grant {
		r := &a.patterns.grant[i]
		if ok, _ := w.applies(r); ok && granted(r) {
			return true
		}
	}
	return false
}

// cut splits off the first level of s; more reports whether a '/' followed.
func cut(s string) (level, rest string, more bool) {
	if i := strings.IndexByte(s, '/'); i >= 0 {
		return s[:i], s[i+1:], true
	}
	return s, "", false
}

// dollar reports whether a first level is one of the broker's ('$…').
func dollar(level string) bool { return level != "" && level[0] == '$' }

// matchTopic reports whether topic matches the rule's filter.
func (r *aclRule) matchTopic(topic string, w *who) bool {
	rest, more := topic, true
	for i, rl := range r.levels {
		if !more {
			// The topic ran out: a trailing '#' also matches the parent.
			return rl == "#" && i == len(r.levels)-1
		}
		var tl string
		tl, rest, more = cut(rest)
		if i == 0 && dollar(rl) != dollar(tl) {
			return false // [MQTT-4.7.2-1]: only a literal '$' level reaches '$' topics
		}
		switch {
		case rl == "#":
			return true
		case rl == "+":
		case !r.levelEqual(rl, tl, w):
			return false
		}
	}
	return !more
}

// covers reports whether every topic filter can match also matches the
// rule.
func (r *aclRule) covers(filter string, w *who) bool {
	rest, more := filter, true
	for i, rl := range r.levels {
		if !more {
			return rl == "#" && i == len(r.levels)-1
		}
		var fl string
		fl, rest, more = cut(rest)
		if i == 0 && dollar(rl) != dollar(fl) {
			return false
		}
		switch {
		case rl == "#":
			return true
		case fl == "#":
			return false // the filter reaches deeper than a single-level rule
		case rl == "+":
		case fl == "+" || !r.levelEqual(rl, fl, w):
			return false
		}
	}
	return !more
}

// overlaps reports whether some topic matches both the rule and filter.
func (r *aclRule) overlaps(filter string, w *who) bool {
	rest, more := filter, true
	for i, rl := range r.levels {
		if !more {
			return rl == "#" && i == len(r.levels)-1
		}
		var fl string
		fl, rest, more = cut(rest)
		if i == 0 && dollar(rl) != dollar(fl) {
			return false // a wildcard first level never meets a '$' one
		}
		switch {
		case rl == "#" || fl == "#":
			return true
		case rl == "+" || fl == "+":
		case !r.levelEqual(rl, fl, w):
			return false
		}
	}
	// The rule ran out: the filter meets it if it ends too, or goes on
	// with a lone '#', which also matches its parent.
	return !more || rest == "#"
}

// levelEqual compares a rule level with a literal level, substituting %c
// and %u of a pattern in place (no allocation). The caller has checked the
// values with who.applies.
func (r *aclRule) levelEqual(rl, l string, w *who) bool {
	if !r.subst() {
		return rl == l
	}
	for {
		i := strings.IndexByte(rl, '%')
		if i < 0 || i == len(rl)-1 {
			return rl == l
		}
		var v string
		switch {
		case rl[i+1] == 'c' && r.subC:
			v = w.clientID
		case rl[i+1] == 'u' && r.subU:
			v = w.username
		default: // a literal '%'
			if len(l) < i+1 || l[:i+1] != rl[:i+1] {
				return false
			}
			rl, l = rl[i+1:], l[i+1:]
			continue
		}
		if len(l) < i+len(v) || l[:i] != rl[:i] || l[i:i+len(v)] != v {
			return false
		}
		rl, l = rl[i+2:], l[i+len(v):]
	}
}
