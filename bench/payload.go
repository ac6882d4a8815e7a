package bench

import "encoding/binary"

// HeaderSize is the size of the bench header at the start of every payload;
// payloads are never smaller.
const HeaderSize = 26

// payloadMagic marks a payload written by the harness, so that stray
// messages on the benchmark topics are counted as foreign, not misread.
var payloadMagic = [2]byte{'T', 'c'}

// PutHeader writes the bench header into p[:HeaderSize] (see the package doc
// for the layout). p must be at least HeaderSize long.
func PutHeader(p []byte, run, pub uint32, seq uint64, intended int64) {
	p[0], p[1] = payloadMagic[0], payloadMagic[1]
	binary.BigEndian.PutUint32(p[2:], run)
	binary.BigEndian.PutUint32(p[6:], pub)
	binary.BigEndian.PutUint64(p[10:], seq)
	binary.BigEndian.PutUint64(p[18:], uint64(intended))
}

// ParseHeader reads the bench header of a payload; ok is false for a payload
// the harness did not write.
func ParseHeader(p []byte) (run, pub uint32, seq uint64, intended int64, ok bool) {
	if len(p) < HeaderSize || p[0] != payloadMagic[0] || p[1] != payloadMagic[1] {
		return 0, 0, 0, 0, false
	}
	return binary.BigEndian.Uint32(p[2:]), binary.BigEndian.Uint32(p[6:]), binary.BigEndian.Uint64(p[10:]),
		int64(binary.BigEndian.Uint64(p[18:])), true
}
