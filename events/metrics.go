package events

import (
	"context"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// QueueCollector reports, at scrape time, what JetStream says of the run
// queue and the event consumers: messages waiting per engine, deliveries not
// yet acknowledged, redeliveries.
type QueueCollector struct {
	bus                          *Bus
	pending, ackPending, redeliv *prometheus.Desc
}

// NewQueueCollector returns a collector over bus.
func NewQueueCollector(bus *Bus) *QueueCollector {
	labels := []string{"stream", "consumer"}
	return &QueueCollector{
		bus:        bus,
		pending:    prometheus.NewDesc("wes_queue_pending", "Messages waiting for a consumer (for executor_<engine>: runs queued for that engine).", labels, nil),
		ackPending: prometheus.NewDesc("wes_queue_ack_pending", "Messages delivered and not yet acknowledged (runs in progress, events being applied).", labels, nil),
		redeliv:    prometheus.NewDesc("wes_queue_redelivered", "Messages delivered more than once and not yet acknowledged.", labels, nil),
	}
}

// Describe implements prometheus.Collector.
func (c *QueueCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.pending
	ch <- c.ackPending
	ch <- c.redeliv
}

// Collect implements prometheus.Collector.
func (c *QueueCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	for _, stream := range []string{c.bus.Names.RunsStream(), c.bus.Names.EventsStream()} {
		s, err := c.bus.JS.Stream(ctx, stream)
		if err != nil {
			ch <- prometheus.NewInvalidMetric(c.pending, err)
			return
		}
		lister := s.ListConsumers(ctx)
		for info := range lister.Info() {
			name := info.Name
			if !strings.HasPrefix(name, "executor_") {
				continue
			}
			ch <- prometheus.MustNewConstMetric(c.pending, prometheus.GaugeValue, float64(info.NumPending), stream, name)
			ch <- prometheus.MustNewConstMetric(c.ackPending, prometheus.GaugeValue, float64(info.NumAckPending), stream, name)
			ch <- prometheus.MustNewConstMetric(c.redeliv, prometheus.GaugeValue, float64(info.NumRedelivered), stream, name)
		}
	}
}
