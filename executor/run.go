package executor

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/wes-dev/wes/events"
	"github.com/wes-dev/wes/models"
	"github.com/wes-dev/wes/providers"
)

// attempt is one delivery of a run to this executor.
type attempt struct {
	e   *Executor
	msg jetstream.Msg
	sub events.RunSubmitted
	// n is the delivery's number (JetStream's NumDelivered). It names the
	// attempt in events, in the job and in the engine's process marker, so
	// it grows with every delivery, hand-backs included.
	n int
	// tries is the attempts at the run so far, this one included: the
	// earlier deliveries that started and were not handed back, and this
	// one (see attempts.go). MaxAttempts bounds it.
	tries int
	// received is when the delivery arrived: JetStream can have given the
	// run to another executor only once AckWait has passed since.
	received time.Time
	log      *slog.Logger

	// mu orders heartbeats and settling: no InProgress once the message is
	// acknowledged one way or the other. It guards msg, which a later
	// delivery of the run replaces (see claim), and settled.
	mu      sync.Mutex
	settled bool

	// keepDir says the run's directory holds what exists nowhere else
	// (outputs over the size cap): it is not removed.
	keepDir bool
	// takenOver says another executor took the run over (see takeover.go).
	takenOver atomic.Bool

	tasks taskBuffer
}

// handle executes one delivery. It never panics: a panic in a provider is
// treated as our failure.
func (e *Executor) handle(msg jetstream.Msg) {
	meta, err := msg.Metadata()
	if err != nil {
		e.log.Error("message without metadata", "err", err)
		_ = msg.Term()
		return
	}
	sub, err := events.DecodeRunSubmitted(msg.Data())
	if err != nil {
		e.log.Error("undecodable run.submitted, dropping it", "err", err, "stream_seq", meta.Sequence.Stream)
		_ = events.DeadLetter(context.Background(), e.bus, msg, "undecodable: "+err.Error())
		return
	}
	n := sub.PriorAttempts + int(meta.NumDelivered)
	a := &attempt{e: e, msg: msg, sub: sub, n: n, tries: n, received: time.Now(),
		log: e.log.With("run_id", sub.RunID, "attempt", n)}
	if a.n > 1 {
		e.m.redelivered.Inc()
	}
	if !e.claim(a) {
		return
	}
	defer e.release(a)
	e.m.busy.Inc()
	defer e.m.busy.Dec()
	a.run()
}

// claim records a as the attempt in progress of its run, and reports
// whether a is to run. It is not when an attempt of the same run is in
// progress here, its message not yet settled: JetStream delivered the run
// again because no heartbeat reached it within AckWait (a NATS node
// restarting, its consumer electing a leader). The attempt in progress
// then goes on with the new delivery's message, which it heartbeats and
// settles; a second attempt beside it would report an outcome the first
// one's settling could not match, and settling either would take the
// run's message from the queue while the other still ran.
func (e *Executor) claim(a *attempt) bool {
	e.runningMu.Lock()
	defer e.runningMu.Unlock()
	if cur := e.running[a.sub.RunID]; cur != nil && cur.adopt(a.msg, a.n) {
		return false
	}
	e.running[a.sub.RunID] = a
	return true
}

// release forgets a once it is over.
func (e *Executor) release(a *attempt) {
	e.runningMu.Lock()
	defer e.runningMu.Unlock()
	if e.running[a.sub.RunID] == a {
		delete(e.running, a.sub.RunID)
	}
}

// adopt makes msg, delivery n of a's run, the message a heartbeats and
// settles, unless a settled its own already (msg is then a delivery of
// its own, a retry, and runs as a new attempt).
func (a *attempt) adopt(msg jetstream.Msg, n int) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.settled {
		return false
	}
	a.msg = msg
	a.log.Warn("the run was delivered again while it runs here (no heartbeat reached JetStream within AckWait); the attempt goes on with the new delivery", "delivery", n)
	return true
}

func (a *attempt) run() {
	ctx, cancel := context.WithCancelCause(a.e.hard)
	defer cancel(nil)

	// The heartbeat and the cancel watch go on, whatever becomes of ctx,
	// until the message is settled: stopping the engine and reporting the
	// outcome may take longer than AckWait, and JetStream must not give
	// the run to another executor meanwhile.
	stopWatch := a.watch(cancel)
	defer stopWatch()
	ended, reason := a.review(ctx)
	switch {
	case ended != "":
		// An executor reported the run's outcome and died before it
		// settled the message: the run is over, whatever this delivery
		// would do.
		a.finish(ctx, a.alreadyEnded(string(ended)))
		return
	case a.cancelRequested(ctx):
		// A run canceled while it waited in the queue is not started.
		cancel(errCanceled)
	case reason != "":
		a.giveUp(reason)
		return
	}

	res, err := a.execute(ctx)
	a.settle(res, err, context.Cause(ctx))
}

// cancelRequested reports whether the run's cancel flag is set. It tries a
// few times; if the flag cannot be read the run goes on, and the cancel
// watch (which the attempt subscribed to before) reads the flag again
// until it can, and stops the run if it was set.
func (a *attempt) cancelRequested(ctx context.Context) bool {
	delay := 200 * time.Millisecond
	for try := 1; ; try++ {
		gctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		_, err := a.e.bus.Cancel.Get(gctx, a.sub.RunID)
		cancel()
		switch {
		case err == nil:
			return true
		case errors.Is(err, jetstream.ErrKeyNotFound):
			return false
		case try == 3 || ctx.Err() != nil:
			a.log.Warn("cannot read the cancel flag; starting the run, the cancel watch reads it again and stops the run if need be", "err", err)
			a.e.cancels.unsure(a.sub.RunID)
			return false
		}
		a.log.Warn("cannot read the cancel flag, retrying", "err", err, "retry_in", delay)
		select {
		case <-ctx.Done():
			return false
		case <-time.After(delay):
		}
		delay *= 2
	}
}

// review reads the history of a run delivered before. It returns the
// final state the run already reached, if it did; else it sets a.tries and
// returns why this delivery must not be tried, or "" if it may.
func (a *attempt) review(ctx context.Context) (ended models.State, reason string) {
	if a.n == 1 {
		return "", ""
	}
	history, err := a.e.history(ctx, a.sub.RunID)
	if err != nil {
		// Every earlier delivery counts as an attempt for retries, but only
		// the bound on deliveries can end the run.
		a.log.Warn("cannot count the run's attempts; counting earlier deliveries as attempts", "err", err)
		return "", overLimit(a.n, a.n, 0, false, a.e.cfg.MaxAttempts, a.e.cfg.MaxHandBacks)
	}
	if st, _ := events.Replay(history); st.Terminal() {
		return st, ""
	}
	a.tries = triesAt(history, a.n)
	return "", overLimit(a.n, a.tries, handBacks(history, a.n), true, a.e.cfg.MaxAttempts, a.e.cfg.MaxHandBacks)
}

// giveUp ends a run that must not be tried again.
func (a *attempt) giveUp(reason string) {
	a.log.Error("giving up on the run", "reason", reason)
	ctx, cancel := context.WithTimeout(context.Background(), a.e.cfg.ReportTimeout)
	defer cancel()
	a.finish(ctx, verdict{outcome: "system_error", verb: term,
		ev: events.RunEvent{State: models.SystemError, Error: reason, SystemLog: reason}})
}

// watch keeps the message alive with InProgress and cancels the attempt
// with errCanceled when the run's cancel flag appears, or with
// errTakenOver when another executor takes the run over, until stop is
// called.
func (a *attempt) watch(cancel context.CancelCauseFunc) (stop func()) {
	var once sync.Once
	log := a.log
	unsubscribe := a.e.cancels.subscribe(a.sub.RunID, func() {
		once.Do(func() {
			log.Info("cancel requested")
			cancel(errCanceled)
		})
	})
	stopBeating := every(context.Background(), a.e.cfg.AckWait/3, func(context.Context) { a.heartbeat() })
	stopTakeover := a.watchTakeover(cancel)
	return func() { unsubscribe(); stopBeating(); stopTakeover() }
}

// every calls fn every interval, with a context that ends when stop is
// called, until stop is called; stop returns once fn has returned.
func every(ctx context.Context, interval time.Duration, fn func(context.Context)) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				fn(ctx)
			}
		}
	}()
	return func() { cancel(); <-done }
}

// heartbeat tells JetStream the run is still in progress, unless the
// message is settled.
func (a *attempt) heartbeat() {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.settled {
		return
	}
	if err := a.msg.InProgress(); err != nil {
		a.log.Warn("heartbeat failed", "err", err)
	}
}

// execute stages the run and hands it to the provider. It returns the
// provider's result, or an error for a failure of ours.
func (a *attempt) execute(ctx context.Context) (res providers.Result, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("executor panic: %v", r)
		}
	}()
	if context.Cause(ctx) != nil {
		return res, ctx.Err()
	}
	if err := a.begin(ctx); err != nil {
		if ctx.Err() != nil {
			return res, ctx.Err()
		}
		return res, err
	}
	if st := a.endedBefore(ctx); st != "" {
		return res, fmt.Errorf("%w (%s)", errEnded, st)
	}
	dir, err := a.stage(ctx)
	if err != nil {
		return res, err
	}
	logs, err := openLogs(dir)
	if err != nil {
		return res, err
	}
	defer logs[0].Close()
	defer logs[1].Close()
	stopShipping := a.shipLogs(logs)
	defer stopShipping()
	stopTasks := a.sendTasks(ctx)
	defer stopTasks()

	job := providers.Job{
		RunID: a.sub.RunID, Attempt: a.n, Engine: a.sub.Engine, EngineVersion: a.sub.EngineVersion,
		Request: a.sub.Request, Dir: dir, Stdout: logs[0], Stderr: logs[1],
	}
	for _, att := range a.sub.Attachments {
		job.Inputs = append(job.Inputs, att.Name)
	}
	return a.e.provider.Run(ctx, job, &reporter{a: a, ctx: ctx})
}

// begin reports INITIALIZING. JetStream's delivery count, which numbers
// attempts, can repeat: a server undoes a delivery to a pull request whose
// client has gone, so the delivery after a crash may carry the crashed
// one's number. Events of two attempts with one number would take each
// other's message ids and be dropped as duplicates. So when the stream
// already has an INITIALIZING of this number that is not ours, this
// delivery takes the number after the highest in the run's history.
func (a *attempt) begin(ctx context.Context) error {
	for {
		ev := events.RunEvent{State: models.Initializing, SystemLog: a.note(), Time: time.Now().UTC()}
		duplicate, err := a.publishDedup(ctx, ev)
		if err != nil || !duplicate {
			return err
		}
		history, err := a.e.history(ctx, a.sub.RunID)
		if err != nil {
			return fmt.Errorf("%w: attempt %d was numbered before and the run's history cannot be read: %w", providers.ErrRetryable, a.n, err)
		}
		last, own := lastAttempt(history, a.n, events.RunEvent{Source: a.e.cfg.ID, Time: ev.Time})
		if own {
			return nil // our first publish got there; its ack did not
		}
		n := max(last, a.n) + 1
		a.log.Warn("this delivery's number was used by an earlier attempt; renumbering it", "new_attempt", n)
		a.mu.Lock() // the heartbeat logs with a.log
		a.n, a.tries = n, triesAt(history, n)
		a.log = a.e.log.With("run_id", a.sub.RunID, "attempt", n)
		a.mu.Unlock()
		if reason := overLimit(a.n, a.tries, handBacks(history, n), true, a.e.cfg.MaxAttempts, a.e.cfg.MaxHandBacks); reason != "" {
			return errors.New(reason)
		}
	}
}

// plural returns one if n is 1, else many.
func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

// note is the system log line that opens an attempt.
func (a *attempt) note() string {
	// Which engine ran it, and which version: a run's provenance.
	note := fmt.Sprintf("attempt %d on executor %s, with %s %s", a.n, a.e.cfg.ID, a.sub.Engine, a.e.versions[a.sub.Engine])
	if a.tries != a.n {
		note += fmt.Sprintf(" (%d earlier %s handed back or never started, so this one counts as try %d of at most %d, WES_MAX_ATTEMPTS)",
			a.n-a.tries, plural(a.n-a.tries, "delivery was", "deliveries were"), a.tries, a.e.cfg.MaxAttempts)
	}
	return note
}

// stage creates the run's directory and copies the attachments into
// Dir/inputs, through an os.Root so that no name, and no symlink already
// there, can write outside it. It returns "" and creates nothing for a run
// without attachments whose provider needs no directory.
func (a *attempt) stage(ctx context.Context) (string, error) {
	if !a.needsDir() {
		return "", nil
	}
	dir := filepath.Join(a.e.cfg.WorkDir, a.sub.RunID)
	// An earlier attempt's inputs go: its workflow (as the engine's
	// user, whose the directory was) may have swapped them for links to
	// the host's files, which root would then read. This attempt's are
	// the attachments again.
	if err := os.RemoveAll(filepath.Join(dir, "inputs")); err != nil {
		return "", fmt.Errorf("clear the run's earlier inputs: %w", err)
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return "", fmt.Errorf("create run directory: %w", err)
	}
	// inputs is made and opened through the run's directory as a root: a
	// link put in its place meanwhile (by an earlier attempt's process
	// that outlived an executor's crash) cannot lead out of it.
	runDir, err := os.OpenRoot(dir)
	if err != nil {
		return "", fmt.Errorf("open run directory: %w", err)
	}
	defer runDir.Close()
	if err := runDir.MkdirAll("inputs", 0o750); err != nil {
		return "", fmt.Errorf("create run directory: %w", err)
	}
	root, err := runDir.OpenRoot("inputs")
	if err != nil {
		return "", fmt.Errorf("open run directory: %w", err)
	}
	defer root.Close()
	for _, att := range a.sub.Attachments {
		if err := a.stageOne(ctx, root, att); err != nil {
			return "", fmt.Errorf("stage attachment %q: %w", att.Name, err)
		}
	}
	return dir, nil
}

// needsDir reports whether the run has a directory on this host: unless
// its provider needs none and it has no attachments. It depends on the run,
// not on how far this attempt got, so that the directory an earlier attempt
// left for a retry goes when a later one ends the run before staging.
func (a *attempt) needsDir() bool {
	d, ok := a.e.provider.(providers.Dirless)
	return !ok || !d.Dirless() || len(a.sub.Attachments) > 0
}

func (a *attempt) stageOne(ctx context.Context, root *os.Root, att models.Attachment) error {
	if d := filepath.Dir(filepath.FromSlash(att.Name)); d != "." {
		if err := root.MkdirAll(d, 0o750); err != nil {
			return err
		}
	}
	ctx, cancel := context.WithTimeout(ctx, events.TransferTimeout(uint64(max(att.Size, 0))))
	defer cancel()
	obj, err := a.e.bus.Objects.Get(ctx, att.Key)
	if err != nil {
		return fmt.Errorf("%w: %w", providers.ErrRetryable, err)
	}
	defer obj.Close()
	f, err := root.OpenFile(filepath.FromSlash(att.Name), os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o640)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, obj); err != nil {
		f.Close()
		return fmt.Errorf("%w: %w", providers.ErrRetryable, err)
	}
	return f.Close()
}

// verb is what JetStream is told about a message once its outcome is
// reported.
type verb int

const (
	ack   verb = iota // done
	nak               // handed back: another executor may start it at once
	retry             // tried again after a delay (NakWithDelay)
	term              // done, never to be delivered again
	leave             // not settled: another delivery's, or JetStream's to deliver again
)

// verdict is the outcome of an attempt: the event that reports it and the
// verb that settles the message.
type verdict struct {
	outcome string // the metric's label
	ev      events.RunEvent
	verb    verb
	delay   time.Duration // of retry
}

// settle reports the attempt's outcome and tells JetStream what to do with
// the message: the one place where outcomes become ack verbs.
func (a *attempt) settle(res providers.Result, err, cause error) {
	// Judging stores the outputs, which takes as long as they are large;
	// reporting then has its own time, and both outlive the attempt's
	// context (the heartbeats go on meanwhile).
	v := a.judge(res, err, cause)
	ctx, cancel := context.WithTimeout(context.Background(), a.e.cfg.ReportTimeout)
	defer cancel()
	a.finish(ctx, v)
}

// judge maps an attempt's result to its verdict.
func (a *attempt) judge(res providers.Result, err, cause error) verdict {
	notes := res.SystemLogs
	if errors.Is(err, providers.ErrSurvivors) {
		a.log.Error("processes of the run could not be stopped", "err", err)
		notes = append(notes, fmt.Sprintf("not every process of the run could be stopped on executor %s: %s", a.e.cfg.ID, survivors(err)))
	}
	// A cancel or a shutdown decides the outcome only of an attempt it
	// stopped: one whose engine had finished by then keeps its result.
	stopped := err != nil
	switch {
	case a.takenOver.Load():
		// The attempt that took over reports the run's outcome, and
		// settles its message; an event of this one would be dropped, and
		// its outputs must not replace that attempt's.
		return verdict{outcome: "superseded", verb: leave}
	case errors.Is(err, errEnded):
		return a.alreadyEnded(err.Error())
	case stopped && errors.Is(cause, errCanceled):
		return verdict{outcome: "canceled", verb: ack,
			ev: events.RunEvent{State: models.Canceled, SystemLog: joinLogs(append([]string{"canceled by the user"}, notes...)...)}}
	case stopped && errors.Is(cause, errShutdown):
		return verdict{outcome: "handed_back", verb: nak,
			ev: events.RunEvent{State: models.Preempted, SystemLog: joinLogs(append([]string{fmt.Sprintf("executor %s shut down; run handed back", a.e.cfg.ID)}, notes...)...)}}
	case errors.Is(err, providers.ErrInvalidRequest):
		a.log.Info("the provider refuses the run's request", "err", err)
		return verdict{outcome: "refused", verb: ack, ev: events.RunEvent{State: models.ExecutorError, Error: err.Error(),
			SystemLog: joinLogs(append([]string{fmt.Sprintf("attempt %d: %v", a.n, err)}, notes...)...)}}
	case err != nil:
		return a.failed(err)
	case res.ExitCode != 0 && a.retryFailures() && a.tries < a.e.cfg.MaxAttempts:
		// The workflow failed and the run (or the operator) asked for
		// failures to be tried again.
		delay := backoff(a.tries)
		return verdict{outcome: "retried", verb: retry, delay: delay, ev: events.RunEvent{State: models.Queued,
			SystemLog: joinLogs(append([]string{fmt.Sprintf("attempt %d: the workflow failed with exit code %d; retrying in %s (%s)", a.n, res.ExitCode, delay, events.RetryTag)}, notes...)...)}}
	}
	code := res.ExitCode
	v := verdict{outcome: "complete", verb: ack, ev: events.RunEvent{State: models.Complete, ExitCode: &code, Outputs: res.Outputs}}
	if code != 0 {
		v.ev.State, v.outcome = models.ExecutorError, "executor_error"
		v.ev.Error = fmt.Sprintf("the workflow failed: %s exited with status %d (its stderr says why)", a.sub.Engine, code)
	} else {
		// The upload has the time its size needs, up to a shutdown's end
		// of grace (the run is then tried again elsewhere).
		outputs, note, err := a.storeOutputs(a.e.hard, res.Outputs, res.OutputDir)
		if err != nil {
			// The workflow succeeded but we lost its outputs: ours.
			return a.failed(fmt.Errorf("%w: %w", providers.ErrRetryable, err))
		}
		v.ev.Outputs = outputs
		notes = append(notes, note)
	}
	v.ev.SystemLog = joinLogs(notes...)
	a.log.Info("run finished", "state", v.ev.State, "exit_code", code)
	return v
}

// alreadyEnded is the verdict on a delivery of a run that already ended
// (why says how): its message is acknowledged and nothing reported. The
// run's directory stays: it may hold the outputs over the size cap of the
// attempt that ended the run.
func (a *attempt) alreadyEnded(why string) verdict {
	a.log.Info("the run already ended; its message is acknowledged and its engine is not run", "why", why)
	a.keepDir = true
	return verdict{outcome: "already_ended", verb: ack}
}

// failed is the verdict on a failure of ours: tried again if it may pass
// and attempts are left, else SYSTEM_ERROR.
func (a *attempt) failed(err error) verdict {
	if errors.Is(err, providers.ErrRetryable) && a.tries < a.e.cfg.MaxAttempts {
		delay := backoff(a.tries)
		a.log.Warn("attempt failed, will retry", "err", err, "delay", delay)
		return verdict{outcome: "retried", verb: retry, delay: delay, ev: events.RunEvent{State: models.Queued,
			SystemLog: fmt.Sprintf("attempt %d failed: %v; retrying in %s", a.n, err, delay)}}
	}
	a.log.Error("run failed", "err", err)
	return verdict{outcome: "system_error", verb: term, ev: events.RunEvent{State: models.SystemError, Error: err.Error(),
		SystemLog: fmt.Sprintf("attempt %d failed: %v", a.n, err)}}
}

// survivors returns the part of err that says which processes survived.
func survivors(err error) string {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		for _, e := range j.Unwrap() {
			if errors.Is(e, providers.ErrSurvivors) {
				return e.Error()
			}
		}
	}
	return err.Error()
}

// finish reports v's event, if it has one, and settles the message as v
// then says.
func (a *attempt) finish(ctx context.Context, v verdict) {
	if v.ev.State != "" { // a verdict without an event reports nothing
		v = a.report(ctx, v)
	}
	if v.verb == nak && a.e.cfg.QueueHandBacksAnew && !a.takenOver.Load() {
		// A message handed back with Nak is delivered again at once while
		// the server runs; but a server that stops with this executor
		// (wes dev's) keeps it pending, and delivers it AckWait after it
		// is back. A new message, which carries the attempts so far, is
		// delivered at once; the old one is settled.
		if a.queueAgain(ctx) {
			v.verb = ack
		}
	}
	a.e.m.outcomes.WithLabelValues(a.sub.Engine, v.outcome).Inc()
	a.settleMsg(v)
}

// queueAgain queues the run anew, as a run that had a.n attempts (the
// next delivery is attempt a.n+1), under a message id of its own, and
// reports whether the new message is in the queue: then the old one must
// be acknowledged, else handed back, never both (two messages would be
// two deliveries numbered a.n+1, run at once). A publish whose answer is
// lost may have been stored: the queue is asked.
func (a *attempt) queueAgain(ctx context.Context) bool {
	sub := a.sub
	sub.PriorAttempts = a.n
	subject, msgID, data, err := a.e.pub.EncodeSubmitted(sub)
	if err != nil {
		a.log.Warn("cannot queue the run again; handing its message back", "err", err)
		return false
	}
	perr := a.e.pub.Publish(ctx, subject, fmt.Sprintf("%s.handed-back.%d", msgID, a.n), data)
	if perr == nil {
		return true
	}
	meta, err := a.msg.Metadata()
	if err != nil {
		return false
	}
	stream, err := a.e.bus.JS.Stream(ctx, a.e.bus.Names.RunsStream())
	if err == nil {
		var last *jetstream.RawStreamMsg
		if last, err = stream.GetLastMsgForSubject(ctx, subject); err == nil {
			return last.Sequence > meta.Sequence.Stream
		}
	}
	// Not stored (or not known to be, NATS failing all round): the old
	// message goes back.
	a.log.Warn("cannot queue the run again; handing its message back", "err", perr, "lookup", err)
	return false
}

// report publishes v's event and returns v with the verb to settle with.
// A final outcome (Ack, Term) that could not be recorded is not
// acknowledged, for then nobody would ever know it: if JetStream refuses
// the event whatever is tried (its size), a small SYSTEM_ERROR event says
// so and ends the run; if NATS could not be reached in time, the message
// is handed back with a delay, and the run is tried again. If another
// attempt took the run over meanwhile, the message is left alone (see
// takeover.go).
func (a *attempt) report(ctx context.Context, v verdict) verdict {
	v.ev = a.withTasks(ctx, v.ev)
	err := a.publish(ctx, v.ev)
	if err != nil && (v.verb == ack || v.verb == term) {
		if permanent(err) {
			msg := truncate(fmt.Sprintf("the outcome of attempt %d (%s) could not be recorded: %v", a.n, v.ev.State, err), shortLogBytes)
			a.log.Error("cannot record the run's outcome; reporting a system error instead", "state", v.ev.State, "err", err)
			if err = a.publish(ctx, events.RunEvent{State: models.SystemError, Error: msg, SystemLog: msg}); err == nil {
				v.outcome, v.verb = "system_error", term
			}
		}
		if err != nil {
			delay := backoff(a.tries)
			a.log.Error("cannot record the run's outcome; it will be delivered again", "state", v.ev.State, "err", err, "delay", delay)
			v.outcome, v.verb, v.delay = "unreported", retry, delay
		}
	} else if err != nil {
		a.log.Warn("cannot report the run's state; settling the message all the same", "state", v.ev.State, "err", err)
	}
	if by, err := a.supersededBy(ctx); err != nil {
		a.log.Warn("cannot tell whether another executor took the run over; leaving its message for JetStream to deliver again, which settles it", "err", err)
		v.outcome, v.verb = "unsettled", leave
	} else if by > 0 {
		a.log.Warn("another executor took the run over (no heartbeat reached JetStream within AckWait); its message is left to that attempt", "attempt_now", by)
		v.outcome, v.verb = "superseded", leave
	}
	return v
}

// settleMsg tells JetStream what becomes of the message, and stops the
// heartbeats.
func (a *attempt) settleMsg(v verdict) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.settled = true
	if a.takenOver.Load() && v.verb != leave {
		// Heard of since the last look: any verb would reach the delivery
		// of the attempt that took over.
		a.log.Warn("another executor took the run over; its message is left to that attempt", "instead_of", v.outcome)
		v.verb = leave
	}
	var err error
	switch v.verb {
	case ack:
		err = a.msg.Ack()
	case nak:
		err = a.msg.Nak()
	case retry:
		err = a.msg.NakWithDelay(v.delay)
	case term:
		err = a.msg.Term()
	case leave:
	}
	if err != nil {
		a.log.Warn("cannot settle message with JetStream", "err", err)
	}
	if (v.verb == ack || v.verb == term) && a.needsDir() && !a.keepDir && !a.e.cfg.KeepRunDirs && !a.e.cfg.LocalOutputLocations {
		// The run is over and its logs and outputs are in the object
		// store: its directory would only fill the disk.
		a.e.removeRunDir(a.sub.RunID)
	}
}

// retryFailures reports whether a workflow failure of this run is retried:
// its wes.retry_failures tag says so, or else the operator's default.
func (a *attempt) retryFailures() bool {
	if v, ok := a.sub.Request.Tags[events.RetryTag]; ok {
		return v == "true"
	}
	return a.e.cfg.RetryFailures
}

// backoff is the delay before retry n+1: 2s, 4s, 8s, … capped at 5 minutes.
func backoff(n int) time.Duration {
	return min(time.Duration(1<<min(n, 20))*time.Second, 5*time.Minute)
}

// reporter turns provider callbacks into events.
type reporter struct {
	a   *attempt
	ctx context.Context
}

func (r *reporter) Started(cmd []string) {
	_ = r.a.publish(r.ctx, events.RunEvent{State: models.Running, Cmd: cmd})
}

func (r *reporter) Task(t models.TaskLog) {
	r.a.tasks.add(t)
}
