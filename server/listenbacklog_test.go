package server

import "testing"

// TestPickBacklog walks the backlog steps: raised only with 4× the room,
// lowered as soon as the room is under 2×, never under the floor, and a
// queue filled at the old length always fits in the room left.
func TestPickBacklog(t *testing.T) {
	for _, tc := range []struct {
		cur, floor int
		room       int64
		want       int
	}{
		{64, 64, 19_700, 4096},
		{64, 64, 16_384, 4096},
		{64, 64, 16_383, 1024},
		{64, 64, 1023, 64},
		{64, 64, 1024, 256},
		{4096, 64, 8192, 4096}, // hysteresis: stays while room ≥ 2×
		{4096, 64, 8191, 1024},
		{4096, 64, 2047, 256},
		{4096, 64, 100, 64},
		{1024, 64, 3000, 1024},
		{256, 64, 511, 64},
		{64, 64, 0, 64},
		{64, 64, -5, 64},
		{1024, 1024, 100, 1024}, // never under the floor
		{1024, 1024, 20_000, 4096},
	} {
		got := pickBacklog(tc.cur, tc.floor, tc.room)
		if got != tc.want {
			t.Errorf("pickBacklog(%d, %d, %d) = %d, want %d", tc.cur, tc.floor, tc.room, got, tc.want)
		}
		if got > tc.floor && tc.room < 2*int64(got) {
			t.Errorf("pickBacklog(%d, %d, %d) = %d: a full queue would not fit in the room", tc.cur, tc.floor, tc.room, got)
		}
	}
}
