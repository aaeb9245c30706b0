//! The store-work queue's depth in `/metrics`: how many calls wait for a
//! thread, how many run, and how many clients wait (docs/deploy.md,
//! "Metrics"). A gauge read at each scrape from `sched::Pool::depth`: a
//! server whose waiting calls stay high for long has fewer `--workers`
//! (or cores) than its runners need. Knows the gauges' names and help,
//! not how the queue works.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::sched::Depth;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: &'static str,
}

/// The queue's gauges.
#[derive(Debug, Default)]
pub(crate) struct QueueGauges {
    calls: Family<StateLabels, Gauge>,
    clients: Gauge,
}

impl QueueGauges {
    pub(crate) fn register(&self, r: &mut Registry) {
        r.register(
            "queue_calls",
            "Store calls in the server's work queue, by state: waiting (for a --workers \
             thread) or running, as of the scrape",
            self.calls.clone(),
        );
        r.register(
            "queue_waiting_clients",
            "Clients (token and address) with store calls waiting, as of the scrape",
            self.clients.clone(),
        );
    }

    /// The queue as it is now.
    pub(crate) fn set(&self, d: Depth) {
        for (state, n) in [("waiting", d.waiting), ("running", d.running)] {
            self.calls
                .get_or_create(&StateLabels { state })
                .set(n as i64);
        }
        self.clients.set(d.clients_waiting as i64);
    }
}
