//go:build !linux

package bench

import (
	"context"
	"errors"
)

// Run executes the scenario cfg describes. The event-loop engine uses epoll,
// timerfd and eventfd: on this platform Run returns an error.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	return nil, errors.New("bench: the load generator needs Linux (epoll)")
}
