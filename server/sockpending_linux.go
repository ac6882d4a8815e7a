package server

import "golang.org/x/sys/unix"

// socketPending reports whether bytes wait in fd's kernel receive queue,
// unread (SIOCINQ, tcp(7)).
func socketPending(fd int) bool {
	n, err := unix.IoctlGetInt(fd, unix.SIOCINQ)
	return err == nil && n > 0
}
