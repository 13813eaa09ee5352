package local

import (
	"errors"
	"fmt"
	"os/exec"
	"runtime"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// noNewPrivsStarter starts commands from an OS thread of its own that has
// no_new_privs set: what they run, and what that runs in turn, gains no
// privilege from a set-user-ID or set-group-ID file, or from file
// capabilities. A run's engine, whose user is an id of its own, could
// otherwise leave a set-user-ID copy of a program behind (in /tmp, say),
// for a process of any later run to act as that id, while another run
// holds it. The flag is the thread's (and its children's) only: the
// executor itself keeps its privileges.
type noNewPrivsStarter struct {
	starts chan func()
}

// newNoNewPrivsStarter starts the thread. It lives as long as the process.
func newNoNewPrivsStarter() (*noNewPrivsStarter, error) {
	s := &noNewPrivsStarter{starts: make(chan func())}
	ready := make(chan error, 1)
	go func() {
		// Never unlocked: the thread, which has no_new_privs, runs only
		// this goroutine, and ends with it.
		runtime.LockOSThread()
		if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
			ready <- fmt.Errorf("set no_new_privs: %w", err)
			return
		}
		ready <- nil
		for start := range s.starts {
			start()
		}
	}()
	if err := <-ready; err != nil {
		return nil, err
	}
	return s, nil
}

// start starts cmd from the thread: os/exec forks from the thread that
// calls it, and the child inherits the flag.
func (s *noNewPrivsStarter) start(cmd *exec.Cmd) error {
	errc := make(chan error, 1)
	s.starts <- func() { errc <- cmd.Start() }
	return <-errc
}

// killAllOf sends SIGKILL to every process of uid: from a thread of its
// own that takes uid as its real, effective and saved user id, kill(-1)
// reaches exactly the processes of uid (the kernel lets a process signal
// those whose real or saved id is its real or effective one), whatever
// they did to hide from a look through /proc: one that forks and exits
// over and over cannot escape, for the kernel fails a fork whose parent
// has SIGKILL pending. It is tried until none is left to signal (ESRCH),
// a few times at most: the dead may stay, as zombies, until reaped.
func killAllOf(uid uint32) error {
	if uid == 0 {
		return errors.New("will not kill every process of root")
	}
	errc := make(chan error, 1)
	go func() {
		// Never unlocked: the thread takes uid, and must end with this
		// goroutine rather than run another as uid.
		runtime.LockOSThread()
		// Raw setresuid changes this thread only (syscall.Setresuid
		// would change every thread of the process).
		if _, _, e := syscall.RawSyscall(syscall.SYS_SETRESUID, uintptr(uid), uintptr(uid), uintptr(uid)); e != 0 {
			errc <- fmt.Errorf("take uid %d: %w", uid, e)
			return
		}
		for try := 0; ; try++ {
			pid := -1
			_, _, e := syscall.RawSyscall(syscall.SYS_KILL, uintptr(pid), uintptr(syscall.SIGKILL), 0)
			switch {
			case e == syscall.ESRCH:
				errc <- nil
				return
			case e != 0:
				errc <- fmt.Errorf("kill the processes of uid %d: %w", uid, e)
				return
			case try == 20:
				// Signaled, and signaled again: zombies waiting to be
				// reaped, which hold nothing.
				errc <- nil
				return
			}
			time.Sleep(5 * time.Millisecond)
		}
	}()
	return <-errc
}
