package local

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/wes-dev/wes/models"
)

// feed hands each line of log to p and returns every update it made.
func feed(p taskParser, log string) []models.TaskLog {
	var out []models.TaskLog
	now := time.Date(2024, 1, 1, 10, 0, 0, 0, time.UTC)
	for _, l := range strings.Split(log, "\n") {
		now = now.Add(time.Second)
		out = append(out, p.line(l, now)...)
	}
	return out
}

// Lines as cwltool 3.1 writes them (with --disable-color) for
// examples/cwl-workflow and for a tool that exits 3.
const cwltoolLog = `INFO [workflow ] start
INFO [workflow ] starting step count
INFO [step count] start
INFO [job count] /tmp/run/tmp/a10xu9su$ wc \
    -l \
    /tmp/run/tmp/ewl68qgr/stg800e54a3/one.txt > /tmp/run/tmp/a10xu9su/one.count
INFO [job count] completed success
INFO [step count] start
INFO [job count_2] /tmp/run/tmp/q3bm6w7o$ wc \
    -l \
    /tmp/run/tmp/9itossvt/stg4a927c67/two.txt > /tmp/run/tmp/q3bm6w7o/two.count
INFO [job count_2] completed success
INFO [step count] completed success
INFO [job fail.cwl] /tmp/2kzqim2r$ sh \
    -c \
    'exit 3'
WARNING [job fail.cwl] exited with status: 3
WARNING [job fail.cwl] completed permanentFail
INFO [workflow ] completed success`

func TestCwlTasks(t *testing.T) {
	t.Parallel()
	updates := feed(&cwlTasks{byName: map[string]*models.TaskLog{}}, cwltoolLog)
	require.Len(t, updates, 6, "a start and an end per job: %+v", updates)

	start, end := updates[0], updates[1]
	require.Equal(t, "count", start.Name)
	require.NotNil(t, start.StartTime)
	require.Nil(t, start.EndTime)
	require.Equal(t, start.ID, end.ID)
	require.NotNil(t, end.EndTime)
	require.True(t, end.EndTime.After(*end.StartTime))
	require.Equal(t, 0, *end.ExitCode)

	require.Equal(t, "count_2", updates[2].Name)
	require.NotEqual(t, start.ID, updates[2].ID, "each job has its own ID")

	failed := updates[5]
	require.Equal(t, "fail.cwl", failed.Name)
	require.NotNil(t, failed.ExitCode)
	require.NotEqual(t, 0, *failed.ExitCode)
	require.Equal(t, []string{"completed permanentFail"}, failed.SystemLogs)
}

// cwltool prints a job's command over several lines, one argument a line;
// the task's cmd is the whole command, not only the program.
func TestCwlTasksCmdIsTheWholeCommand(t *testing.T) {
	t.Parallel()
	updates := feed(&cwlTasks{byName: map[string]*models.TaskLog{}}, cwltoolLog)
	require.NotEmpty(t, updates)
	require.Equal(t, "wc", updates[0].Cmd[0])
	require.Contains(t, updates[0].Cmd, "-l", "cmd is %q", updates[0].Cmd)
	require.Contains(t, updates[0].Cmd, "/tmp/run/tmp/ewl68qgr/stg800e54a3/one.txt", "cmd is %q", updates[0].Cmd)
}

// Lines as Snakemake 7 writes them.
const snakemakeLog = `Select jobs to execute...

[Sat Nov 28 05:08:36 2026]
rule greet:
    output: results/greet/Ada.txt
    jobid: 2
    reason: Missing output files: results/greet/Ada.txt
    wildcards: name=Ada
    resources: tmpdir=/tmp

[Sat Nov 28 05:08:36 2026]
Finished job 2.
1 of 3 steps (33%) done
Select jobs to execute...

[Sat Nov 28 05:16:49 2026]
rule bad:
    output: a.txt
    jobid: 1
    reason: Missing output files: a.txt
    resources: tmpdir=/tmp

[Sat Nov 28 05:16:49 2026]
Error in rule bad:
    jobid: 1
    output: a.txt
    shell:
        exit 3
        (one of the commands exited with non-zero exit code; note that snakemake uses bash strict mode!)

[Sat Nov 28 05:08:36 2026]
localrule all:
    input: results/all.txt
    jobid: 0
    reason: Input files updated by another job: results/all.txt
    resources: tmpdir=/tmp

[Sat Nov 28 05:08:36 2026]
Finished job 0.`

func TestSmkTasks(t *testing.T) {
	t.Parallel()
	updates := feed(&smkTasks{jobs: map[string]*models.TaskLog{}}, snakemakeLog)
	require.Len(t, updates, 6, "%+v", updates)

	require.Equal(t, "2", updates[0].ID)
	require.Equal(t, "greet", updates[0].Name)
	require.NotNil(t, updates[0].StartTime)
	require.Nil(t, updates[0].EndTime)
	require.Equal(t, "2", updates[1].ID)
	require.NotNil(t, updates[1].EndTime)
	require.Equal(t, 0, *updates[1].ExitCode)

	require.Equal(t, "bad", updates[2].Name)
	require.Equal(t, "1", updates[3].ID)
	require.Equal(t, "bad", updates[3].Name)
	require.NotNil(t, updates[3].StartTime, "the failed job keeps its start")
	require.NotNil(t, updates[3].EndTime)
	require.NotEqual(t, 0, *updates[3].ExitCode)

	require.Equal(t, "all", updates[4].Name, "localrule blocks are jobs too")
	require.Equal(t, 0, *updates[5].ExitCode)
}

// Snakemake 9 (whose Snakefiles the adapter offers when it is installed) ends a job with
// "Finished jobid: N (Rule: NAME)" instead of "Finished job N.".
const snakemake9Log = `Select jobs to execute...
Execute 1 jobs...

[Fri May 30 03:30:27 2025]
localrule hello_world:
    output: hello_world.txt
    jobid: 1
    reason: Missing output files: hello_world.txt
    resources: tmpdir=/tmp

[Fri May 30 03:30:27 2025]
Finished jobid: 1 (Rule: hello_world)
1 of 2 steps (50%) done`

func TestSmkTasksSnakemake9(t *testing.T) {
	t.Parallel()
	updates := feed(&smkTasks{jobs: map[string]*models.TaskLog{}}, snakemake9Log)
	require.NotEmpty(t, updates)
	require.Equal(t, "hello_world", updates[0].Name)
	last := updates[len(updates)-1]
	require.NotNil(t, last.EndTime, "job 1 never ended: %+v", updates)
	require.NotNil(t, last.ExitCode)
	require.Equal(t, 0, *last.ExitCode)
}

// Lines as Toil 5.9's leader writes them.
const toilLog = `[2026-11-28T05:28:25+0000] [MainThread] [I] [toil.job] Processing job 'CWLWorkflow' count-lines.cwl kind-CWLWorkflow/instance-prfyrk_r v0
[2026-11-28T05:28:30+0000] [MainThread] [I] [toil.leader] Issued job 'CWLJob' count-lines.cwl.1.wc.cwl kind-CWLJob/instance-2mq76kzx v1 with job batch system ID: 2 and disk: 3.0 Gi, memory: 2.0 Gi, cores: 1, accelerators: [], preemptible: False
[2026-11-28T05:28:30+0000] [MainThread] [I] [toil.leader] Issued job 'CWLJob' count-lines.cwl.0.wc.cwl kind-CWLJob/instance-zfoe_bux v1 with job batch system ID: 3 and disk: 3.0 Gi, memory: 2.0 Gi, cores: 1, accelerators: [], preemptible: False
[2026-11-28T05:28:52+0000] [MainThread] [I] [toil.leader] Finished toil run successfully.`

func TestToilTasks(t *testing.T) {
	t.Parallel()
	updates := feed(&toilTasks{open: map[string]*models.TaskLog{}}, toilLog)
	require.Len(t, updates, 4, "two starts, two ends")
	require.Equal(t, "count-lines.cwl.1.wc.cwl", updates[0].Name)
	require.Equal(t, "instance-2mq76kzx", updates[0].ID)
	require.Nil(t, updates[0].EndTime)
	for _, end := range updates[2:] {
		require.NotNil(t, end.EndTime)
		require.Equal(t, 0, *end.ExitCode)
	}
}

// Lines as Toil 5.9 writes them for a tool that exits 3, tried twice
// (the failed worker's log is indented).
const toilFailedLog = `[2026-12-05T16:20:19+0000] [MainThread] [I] [toil.leader] Issued job 'CWLJob' fail.cwl kind-CWLJob/instance-2zp5_5rm v1 with job batch system ID: 0 and disk: 3.0 Gi, memory: 2.0 Gi, cores: 1, accelerators: [], preemptible: False
[2026-12-05T16:20:21+0000] [Thread-1 (daddy)] [E] [toil.batchSystems.singleMachine] Got exit code 1 (indicating failure) from job _toil_worker CWLJob file:/tmp/toilfail/js kind-CWLJob/instance-2zp5_5rm.
[2026-12-05T16:20:21+0000] [MainThread] [W] [toil.leader] Job failed with exit value 1: 'CWLJob' fail.cwl kind-CWLJob/instance-2zp5_5rm v1
	[2026-12-05T16:20:21+0000] [MainThread] [W] [cwltool] [job fail.cwl] exited with status: 3
	[2026-12-05T16:20:21+0000] [MainThread] [W] [cwltool] [job fail.cwl] completed permanentFail
[2026-12-05T16:20:21+0000] [MainThread] [I] [toil.leader] Issued job 'CWLJob' fail.cwl kind-CWLJob/instance-2zp5_5rm v3 with job batch system ID: 1 and disk: 3.0 Gi, memory: 2.0 Gi, cores: 1, accelerators: [], preemptible: False
[2026-12-05T16:20:23+0000] [MainThread] [W] [toil.leader] Job failed with exit value 1: 'CWLJob' fail.cwl kind-CWLJob/instance-2zp5_5rm v3
	[2026-12-05T16:20:23+0000] [MainThread] [W] [cwltool] [job fail.cwl] exited with status: 3`

func TestToilFailedTasks(t *testing.T) {
	t.Parallel()
	p := &toilTasks{open: map[string]*models.TaskLog{}}
	updates := feed(p, toilFailedLog)
	require.NotEmpty(t, updates)
	last := updates[len(updates)-1]
	require.Equal(t, "instance-2zp5_5rm", last.ID)
	require.NotNil(t, last.EndTime, "a failed job ends")
	require.NotNil(t, last.ExitCode)
	require.Equal(t, 3, *last.ExitCode, "the tool's exit status, not the worker's")
	require.Equal(t, []string{"toil: the job failed (its worker exited 1)"}, last.SystemLogs, "the retry is a new try of the task")
	require.Equal(t, []string{"instance-2zp5_5rm"}, p.order, "a retried job is one task")
}
