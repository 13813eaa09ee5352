// Package local runs workflow engines as subprocesses of the executor.
//
// Engine adapters (cwltool, toil, snakemake, nextflow) are added by the
// "Real engines" work; until then this provider reports no engines, so the
// executor takes no runs and service-info lists nothing rather than
// accepting runs that cannot execute.
package local

import (
	"context"
	"errors"

	"github.com/wes-dev/wes/providers"
)

// Provider runs engines found on this host's PATH.
type Provider struct{}

// New returns a local provider.
func New() *Provider { return &Provider{} }

// Engines implements providers.Provider.
func (*Provider) Engines(context.Context) ([]providers.Engine, error) { return nil, nil }

// Run implements providers.Provider.
func (*Provider) Run(context.Context, providers.Job, providers.Reporter) (providers.Result, error) {
	return providers.Result{}, errors.New("local: no workflow engine is installed on this executor")
}
