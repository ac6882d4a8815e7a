package trie

import (
	"bytes"
	"strings"
)

// MaxTopicLength is the longest topic name or filter, in bytes, that MQTT can
// carry: it is a UTF-8 string with a 16-bit length prefix [MQTT-4.7.3-3].
const MaxTopicLength = 65535

// DefaultMaxLevels is the number of topic levels allowed when a caller passes
// maxLevels = 0. It is a broker limit, not a protocol rule: it bounds the
// recursion depth of Match and the size of a trie path.
const DefaultMaxLevels = 128

// sharePrefix starts every shared-subscription filter [MQTT-4.8.2-1].
const sharePrefix = "$share/"

// Error is a topic or filter validation failure. Rule is the normative
// statement of the MQTT 5.0 specification that the input breaks, or "" for a
// broker limit (too many levels). Compare with errors.Is against the Err*
// sentinels below; they are the only values ValidateTopic and ValidateFilter
// return, so validation never allocates.
type Error struct {
	Rule   string
	Reason string
}

// Error implements error.
func (e *Error) Error() string {
	if e.Rule == "" {
		return "trie: " + e.Reason
	}
	return "trie: " + e.Reason + " [" + e.Rule + "]"
}

// Validation errors. Each names the statement it enforces.
var (
	// ErrEmpty: topic names and filters must be at least one character long.
	ErrEmpty = &Error{"MQTT-4.7.3-1", "topic or filter is empty"}
	// ErrNullChar: topic names and filters must not contain U+0000.
	ErrNullChar = &Error{"MQTT-4.7.3-2", "topic or filter contains U+0000"}
	// ErrTooLong: topic names and filters must not encode to more than 65,535 bytes.
	ErrTooLong = &Error{"MQTT-4.7.3-3", "topic or filter longer than 65535 bytes"}
	// ErrTooManyLevels: more levels than the configured maximum (a broker limit).
	ErrTooManyLevels = &Error{"", "topic or filter has too many levels"}
	// ErrWildcardInTopic: a PUBLISH topic name must not contain '+' or '#'.
	ErrWildcardInTopic = &Error{"MQTT-3.3.2-2", "topic name contains a wildcard"}
	// ErrMultiLevelWildcard: '#' must be the whole last level of a filter.
	ErrMultiLevelWildcard = &Error{"MQTT-4.7.1-2", "'#' is not the whole last level"}
	// ErrSingleLevelWildcard: '+' must occupy a whole level of a filter.
	ErrSingleLevelWildcard = &Error{"MQTT-4.7.1-3", "'+' is not a whole level"}
	// ErrShareNameEmpty: "$share/" must be followed by a non-empty ShareName.
	ErrShareNameEmpty = &Error{"MQTT-4.8.2-1", "shared subscription has an empty ShareName"}
	// ErrShareNameInvalid: a ShareName must not contain '+' or '#'.
	ErrShareNameInvalid = &Error{"MQTT-4.8.2-2", "ShareName contains '+' or '#'"}
	// ErrShareNoFilter: the ShareName must be followed by '/' and a topic filter.
	ErrShareNoFilter = &Error{"MQTT-4.8.2-2", "shared subscription has no topic filter after the ShareName"}
)

// ValidateTopic checks a PUBLISH topic name (also a Will topic): non-empty
// [MQTT-4.7.3-1], no U+0000 [MQTT-4.7.3-2], at most MaxTopicLength bytes
// [MQTT-4.7.3-3], no '+' or '#' [MQTT-3.3.2-2] and at most maxLevels levels
// (0 means DefaultMaxLevels). UTF-8 well-formedness is the codec's job. It
// returns nil or one of the Err* sentinels and never allocates.
func ValidateTopic(topic []byte, maxLevels int) error {
	if len(topic) == 0 {
		return ErrEmpty
	}
	if len(topic) > MaxTopicLength {
		return ErrTooLong
	}
	if maxLevels <= 0 {
		maxLevels = DefaultMaxLevels
	}
	levels := 1
	for _, c := range topic {
		switch c {
		case '/':
			levels++
		case '+', '#':
			return ErrWildcardInTopic
		case 0:
			return ErrNullChar
		}
	}
	if levels > maxLevels {
		return ErrTooManyLevels
	}
	return nil
}

// ValidateFilter checks a SUBSCRIBE or UNSUBSCRIBE topic filter: non-empty
// [MQTT-4.7.3-1], no U+0000 [MQTT-4.7.3-2], at most MaxTopicLength bytes
// [MQTT-4.7.3-3], '#' only as the whole last level [MQTT-4.7.1-2], '+' only as
// a whole level [MQTT-4.7.1-3], at most maxLevels levels (0 means
// DefaultMaxLevels). A filter starting with "$share/" must continue with a
// non-empty ShareName [MQTT-4.8.2-1] free of '+' and '#', then '/' and a valid
// non-empty filter [MQTT-4.8.2-2]; the level limit applies to that inner
// filter. Whether "$share" is special for the protocol version in use (it is
// not in 3.1.1) is the caller's decision. Returns nil or an Err* sentinel and
// never allocates.
func ValidateFilter(filter []byte, maxLevels int) error {
	if len(filter) == 0 {
		return ErrEmpty
	}
	if len(filter) > MaxTopicLength {
		return ErrTooLong
	}
	if maxLevels <= 0 {
		maxLevels = DefaultMaxLevels
	}
	f := filter
	if bytes.HasPrefix(f, []byte(sharePrefix)) {
		rest := f[len(sharePrefix):]
		group := rest
		i := bytes.IndexByte(rest, '/')
		if i >= 0 {
			group = rest[:i]
		}
		if len(group) == 0 {
			return ErrShareNameEmpty
		}
		for _, c := range group {
			switch c {
			case '+', '#':
				return ErrShareNameInvalid
			case 0:
				return ErrNullChar
			}
		}
		if i < 0 || i == len(rest)-1 {
			return ErrShareNoFilter
		}
		f = rest[i+1:]
	}
	levels, start := 1, 0
	for i, c := range f {
		switch c {
		case '/':
			levels++
			start = i + 1
		case '+':
			if i != start || (i+1 < len(f) && f[i+1] != '/') {
				return ErrSingleLevelWildcard
			}
		case '#':
			if i != start || i != len(f)-1 {
				return ErrMultiLevelWildcard
			}
		case 0:
			return ErrNullChar
		}
	}
	if levels > maxLevels {
		return ErrTooManyLevels
	}
	return nil
}

// SplitShared splits "$share/<group>/<filter>" into its ShareName and topic
// filter; shared is false (and topicFilter is the input) for an ordinary
// filter. For a malformed shared filter such as "$share/g" it returns
// shared = true with an empty topicFilter; ValidateFilter rejects those. The
// results are substrings of filter: no allocation.
func SplitShared(filter string) (group, topicFilter string, shared bool) {
	if !strings.HasPrefix(filter, sharePrefix) {
		return "", filter, false
	}
	rest := filter[len(sharePrefix):]
	i := strings.IndexByte(rest, '/')
	if i < 0 {
		return rest, "", true
	}
	return rest[:i], rest[i+1:], true
}

// MatchTopic reports whether the topic filter matches the topic name. It is
// the simple reference matcher (level by level, per §4.7): '+' matches exactly
// one level, '#' matches the rest including zero levels ("sport/#" matches
// "sport" [MQTT-4.7.1-2]), and a filter starting with a wildcard does not
// match a topic starting with '$' [MQTT-4.7.2-1]. It does not interpret
// "$share/": call SplitShared first. A '#' that is not the last level matches
// nothing. It is the oracle that tests and fuzzing compare the Trie, the
// Retained index and the ACL matchers of server/auth against; the broker's
// own matching goes through the Trie.
func MatchTopic(filter, topic string) bool {
	if filter == "" || topic == "" {
		return false
	}
	if topic[0] == '$' && (filter[0] == '+' || filter[0] == '#') {
		return false
	}
	for {
		fl, frest, fmore := cut(filter)
		if fl == "#" {
			return !fmore
		}
		tl, trest, tmore := cut(topic)
		if fl != "+" && fl != tl {
			return false
		}
		if !fmore || !tmore {
			if !tmore && fmore {
				// The topic ran out: only a trailing "/#" can still match.
				return frest == "#"
			}
			return fmore == tmore
		}
		filter, topic = frest, trest
	}
}

// cut splits off the first level of s. more reports whether a '/' followed
// (so rest, possibly empty, is at least one more level).
func cut(s string) (level, rest string, more bool) {
	if i := strings.IndexByte(s, '/'); i >= 0 {
		return s[:i], s[i+1:], true
	}
	return s, "", false
}

// cutBytes is cut for []byte.
func cutBytes(s []byte) (level, rest []byte, more bool) {
	if i := bytes.IndexByte(s, '/'); i >= 0 {
		return s[:i], s[i+1:], true
	}
	return s, nil, false
}
