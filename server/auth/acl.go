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
//	topic read $SYS/#
//	user alice
//	topic readwrite sensors/#
//	topic write alerts/alice
//	# patterns apply to every client; %c = client id, %u = username
//	pattern readwrite devices/%c/#
//
// Access is denied unless a line grants it. A SUBSCRIBE filter is allowed
// when every topic it can match is readable: each level of the filter is
// covered by the rule's level ('#' covers the rest, '+' covers one level or
// a '+' in the filter). A '%c' or '%u' rule never matches a client id or
// username containing '+', '#' or '/', so a device cannot widen its own
// rule by choosing its name.
type ACLFile struct {
	anon     []aclRule
	users    map[string][]aclRule
	patterns []aclRule
}

type aclRule struct {
	topic       string
	read, write bool
}

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
	a := &ACLFile{users: map[string][]aclRule{}}
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
			rule, err := parseACLRule(rest)
			if err != nil {
				errs = append(errs, fmt.Errorf("line %d: %w", n, err))
				continue
			}
			switch {
			case word == "pattern":
				a.patterns = append(a.patterns, rule)
			case inUser:
				a.users[user] = append(a.users[user], rule)
			default:
				a.anon = append(a.anon, rule)
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

func parseACLRule(s string) (aclRule, error) {
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
	switch access {
	case "read":
		return aclRule{topic: topic, read: true}, nil
	case "write":
		return aclRule{topic: topic, write: true}, nil
	case "deny":
		return aclRule{topic: topic}, nil
	}
	return aclRule{topic: topic, read: true, write: true}, nil
}

// CanPublish implements Authorizer.
func (a *ACLFile) CanPublish(clientID, username, topic string) bool {
	return a.allowed(clientID, username, func(r aclRule, pattern string) bool {
		return r.write && trie.MatchTopic(pattern, topic)
	})
}

// CanSubscribe implements Authorizer.
func (a *ACLFile) CanSubscribe(clientID, username, filter string) bool {
	if _, inner, shared := trie.SplitShared(filter); shared {
		filter = inner
	}
	return a.allowed(clientID, username, func(r aclRule, pattern string) bool {
		return r.read && covers(pattern, filter)
	})
}

func (a *ACLFile) allowed(clientID, username string, ok func(aclRule, string) bool) bool {
	rules := a.anon
	if username != "" {
		rules = a.users[username]
	}
	for _, r := range rules {
		if ok(r, r.topic) {
			return true
		}
	}
	for _, r := range a.patterns {
		p, valid := expandPattern(r.topic, clientID, username)
		if valid && ok(r, p) {
			return true
		}
	}
	return false
}

// expandPattern substitutes %c and %u; a substitution that would inject
// topic syntax invalidates the rule for this client.
func expandPattern(p, clientID, username string) (string, bool) {
	if strings.Contains(p, "%c") {
		if clientID == "" || strings.ContainsAny(clientID, "+#/") {
			return "", false
		}
		p = strings.ReplaceAll(p, "%c", clientID)
	}
	if strings.Contains(p, "%u") {
		if username == "" || strings.ContainsAny(username, "+#/") {
			return "", false
		}
		p = strings.ReplaceAll(p, "%u", username)
	}
	return p, true
}

// covers reports whether every topic that filter can match also matches
// rule.
func covers(rule, filter string) bool {
	rl, fl := strings.Split(rule, "/"), strings.Split(filter, "/")
	for i, f := range fl {
		if i >= len(rl) {
			return false
		}
		r := rl[i]
		switch {
		case r == "#":
			return true
		case f == "#":
			return false // the filter reaches deeper than a single-level rule
		case r == "+":
			continue
		case f == "+" || r != f:
			return false
		}
	}
	return len(rl) == len(fl) || (len(rl) == len(fl)+1 && rl[len(fl)] == "#")
}
