//go:build !linux

package local

import (
	"errors"
	"os/exec"
)

var errConfineUnsupported = errors.New("engine ids of their own (WES_ENGINE_UIDS) need Linux")

type noNewPrivsStarter struct{}

func newNoNewPrivsStarter() (*noNewPrivsStarter, error) { return nil, errConfineUnsupported }

func (*noNewPrivsStarter) start(cmd *exec.Cmd) error { return errConfineUnsupported }

func killAllOf(uint32) error { return errConfineUnsupported }
