package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"strconv"
	"strings"
	"syscall"
)

// engineCredential resolves WES_ENGINE_USER (a user name, or uid:gid) to
// the credential engines run with, nil when it is not set. Switching users
// takes root; the engine's user must reach workDir (its run directories
// are given to it, but the directories above them are not).
func engineCredential(spec, workDir string) (*syscall.Credential, error) {
	if spec == "" {
		return nil, nil
	}
	cred, err := lookupCredential(spec)
	if err != nil {
		return nil, fmt.Errorf("WES_ENGINE_USER=%q: %w", spec, err)
	}
	if os.Geteuid() != 0 {
		return nil, fmt.Errorf("WES_ENGINE_USER=%q: the executor must run as root to run engines as another user", spec)
	}
	if cred.Uid == 0 {
		return nil, fmt.Errorf("WES_ENGINE_USER=%q is root: name an unprivileged user", spec)
	}
	// The run directories' parent: others may pass through, not list it.
	if err := os.MkdirAll(workDir, 0o711); err != nil {
		return nil, fmt.Errorf("create WES_WORK_DIR: %w", err)
	}
	if err := os.Chmod(workDir, 0o711); err != nil {
		return nil, fmt.Errorf("WES_WORK_DIR: %w", err)
	}
	probe := exec.Command("/bin/sh", "-c", "cd \"$1\"", "probe", workDir)
	probe.Env = []string{}
	probe.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: cred.Uid, Gid: cred.Gid, Groups: []uint32{}}}
	if out, err := probe.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("WES_ENGINE_USER=%q cannot reach WES_WORK_DIR %s (%v: %s): the directories above it need o+x", spec, workDir, err, strings.TrimSpace(string(out)))
	}
	return cred, nil
}

// lookupCredential reads "name" (its primary group) or "uid:gid".
func lookupCredential(spec string) (*syscall.Credential, error) {
	if u, g, ok := strings.Cut(spec, ":"); ok {
		uid, err1 := strconv.ParseUint(u, 10, 32)
		gid, err2 := strconv.ParseUint(g, 10, 32)
		if err := errors.Join(err1, err2); err != nil {
			return nil, errors.New("want a user name, or numeric uid:gid")
		}
		return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
	}
	u, err := user.Lookup(spec)
	if err != nil {
		return nil, err
	}
	uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
	gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
	if err := errors.Join(err1, err2); err != nil {
		return nil, fmt.Errorf("user %s has no numeric uid and gid", spec)
	}
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
}
