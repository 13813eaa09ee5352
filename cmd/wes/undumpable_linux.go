package main

import "golang.org/x/sys/unix"

// undumpable makes this process's /proc entries (environ, mem) readable by
// root alone, not by other processes of its user, such as the engines it
// starts (they are dumpable again after exec).
func undumpable() error {
	return unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0)
}
