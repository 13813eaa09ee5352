package projector

import "time"

// SetLinger sets how long p's batches wait for more events.
func SetLinger(p *Projector, d time.Duration) { p.linger = d }
