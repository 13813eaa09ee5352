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

// killAllOf sends SIGKILL to every process of uid, and makes sure none is
// left. A child that runs as uid has its shell's kill send SIGKILL to
// every process it may signal, kill(-1), which spares the child itself:
// exactly the processes whose real or saved id is uid, whatever they did
// to hide from a look through /proc (one that forks and exits over and
// over cannot escape it, for the kernel fails a fork whose parent has
// SIGKILL pending). (A child, not a thread of this process that takes uid:
// the runtime wedges rather than ends the main thread, and that thread
// would stay uid's, open to its processes' signals.) Then a look through
// /proc, every thread, says whether any is left.
func killAllOf(uid uint32) error {
	if uid == 0 {
		return errors.New("will not kill every process of root")
	}
	for try := 0; ; try++ {
		kill := exec.Command("/bin/sh", "-c", "kill -KILL -1")
		kill.Env = []string{}
		kill.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: uid, Groups: []uint32{}}}
		// Its status tells nothing: kill(-1) fails only when no process
		// is there at all, and it is allowed to signal none.
		if err := kill.Run(); err != nil && !errors.As(err, new(*exec.ExitError)) {
			return fmt.Errorf("kill the processes of uid %d: %w", uid, err)
		}
		running, err := runningIDs()
		if err != nil {
			return fmt.Errorf("kill the processes of uid %d: %w", uid, err)
		}
		switch {
		case !running[uid]:
			return nil
		case try == 4:
			return fmt.Errorf("processes of uid %d outlive SIGKILL", uid)
		}
		time.Sleep(20 * time.Millisecond) // signaled, not yet gone
	}
}
