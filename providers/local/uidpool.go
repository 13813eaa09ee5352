package local

import (
	"bufio"
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"

	"github.com/wes-dev/wes/providers"
)

// UIDPool gives each run's engine a user of its own: uid = gid = an id from
// First to Last, ids no account holds (WES_ENGINE_UIDS). A run's directory
// is its id's alone while the engine runs, so that runs cannot read or
// change each other's files, as they can when they all run as one
// WES_ENGINE_USER.
//
// An id is not given out while a run holds it, nor while any process runs
// as it. Ids go round from a random start, so that while the executor
// runs an id comes back only after every other one did (and after a
// restart, seldom soon): what a workflow wrote outside its directory (in
// /tmp, say) is its id's, and a later run given that id could read it.
//
// Engines given such an id are started with no_new_privs (no set-user-ID
// file they run gains them anything), and once a run is over every process
// of its id is killed before the id goes to another run.
type UIDPool struct {
	first, n uint32
	starter  *noNewPrivsStarter
	// running returns the ids processes run as, user or group (real,
	// effective, saved or filesystem), or an error if that cannot be told.
	running func() (map[uint32]bool, error)

	mu   sync.Mutex
	next uint32
	held map[uint32]bool
}

// NewUIDPool returns the pool of ids first to last.
func NewUIDPool(first, last uint32) (*UIDPool, error) {
	if first == 0 || last < first {
		return nil, fmt.Errorf("engine uid range %d-%d: want first-last, first above 0", first, last)
	}
	starter, err := newNoNewPrivsStarter()
	if err != nil {
		return nil, err
	}
	n := last - first + 1
	return &UIDPool{first: first, n: n, starter: starter, running: runningIDs, next: rand.Uint32N(n), held: map[uint32]bool{}}, nil
}

// contains reports whether id is one of the pool's.
func (p *UIDPool) contains(id uint32) bool { return id >= p.first && id-p.first < p.n }

// holds reports whether a run holds id now.
func (p *UIDPool) holds(id uint32) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.held[id]
}

// start starts an engine with no_new_privs.
func (p *UIDPool) start(cmd *exec.Cmd) error { return p.starter.start(cmd) }

// acquire returns a free id's credential (no supplementary groups), and a
// release to call once the run's processes are gone and its directory is
// taken back.
func (p *UIDPool) acquire() (*syscall.Credential, func(), error) {
	running, err := p.running()
	if err != nil {
		return nil, nil, fmt.Errorf("%w: find the engine uids in use: %w", providers.ErrRetryable, err)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for range p.n {
		id := p.first + p.next
		p.next = (p.next + 1) % p.n
		if p.held[id] || running[id] {
			continue
		}
		p.held[id] = true
		var once sync.Once
		release := func() {
			once.Do(func() {
				p.mu.Lock()
				defer p.mu.Unlock()
				delete(p.held, id)
			})
		}
		return &syscall.Credential{Uid: id, Gid: id, Groups: []uint32{}}, release, nil
	}
	return nil, nil, fmt.Errorf("%w: every engine uid of %d-%d (WES_ENGINE_UIDS) is held by a run or a process", providers.ErrRetryable, p.first, p.first+p.n-1)
}

// runningIDs reads the user and group ids (a pool id is both) of every
// thread of every process from /proc: a process whose main thread exited
// shows as a zombie while its other threads run, and each thread has ids
// of its own. A thread that ends while it is read is skipped; a process
// that forks and exits over and over may be missed: killAllOf is what
// makes sure no process of a run's id is left once the run is over.
func runningIDs() (map[uint32]bool, error) {
	statuses, err := filepath.Glob("/proc/[0-9]*/task/[0-9]*/status")
	if err != nil {
		return nil, err
	}
	if len(statuses) == 0 {
		return nil, fmt.Errorf("no process in /proc")
	}
	ids := map[uint32]bool{}
	for _, s := range statuses {
		data, err := os.ReadFile(s)
		if err != nil || dead(data) {
			continue // it ended
		}
		for _, id := range statusIDs(data) {
			ids[id] = true
		}
	}
	return ids, nil
}

// dead reports whether a /proc/<pid>/task/<tid>/status is a thread that
// ended (of a zombie, which holds nothing, if they all did).
func dead(status []byte) bool {
	return bytes.Contains(status, []byte("\nState:\tZ")) || bytes.Contains(status, []byte("\nState:\tX"))
}

// statusIDs returns the ids of the Uid and Gid lines of a
// /proc/<pid>/status: a process run from a set-group-ID file has the
// group's id only there.
func statusIDs(status []byte) []uint32 {
	var ids []uint32
	sc := bufio.NewScanner(bytes.NewReader(status))
	for sc.Scan() {
		rest, ok := bytes.CutPrefix(sc.Bytes(), []byte("Uid:"))
		if !ok {
			rest, ok = bytes.CutPrefix(sc.Bytes(), []byte("Gid:"))
		}
		if !ok {
			continue
		}
		for _, f := range bytes.Fields(rest) {
			if id, err := strconv.ParseUint(string(f), 10, 32); err == nil {
				ids = append(ids, uint32(id))
			}
		}
	}
	return ids
}
