//! `GET /metrics`: the OpenMetrics text format (what Prometheus scrapes),
//! encoded by `prometheus-client`.
//!
//! Process metrics come from [`courier_actors::metrics`]; deployment-wide
//! gauges (tasks by state, each queue's depth) are read from the store at
//! scrape time; bus counters from the bus actor. Each scrape builds a
//! registry of the process's metrics (shared, not copied) and of these
//! readings, and encodes it once.

use actix_web::{web, HttpResponse};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use courier_actors::TaskState;

use crate::WebState;

/// The media type of the OpenMetrics text format.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueueState {
    queue: String,
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueueLabel {
    queue: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LaneLabel {
    lane: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TransportLabel {
    transport: String,
}

#[utoipa::path(
    get,
    path = "/metrics",
    operation_id = "metrics",
    tag = "meta",
    summary = "Metrics",
    description = "This process's metrics in the OpenMetrics text format (what Prometheus scrapes); deployment-wide gauges are read from the database at scrape time. Never needs a token.",
    responses((status = 200, description = "The metrics.", content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8", body = String))
)]
pub async fn metrics(state: web::Data<WebState>) -> HttpResponse {
    let mut registry = Registry::default();
    courier_actors::metrics::metrics().register(&mut registry);

    let store_up = Gauge::<i64>::default();
    match state.client.count_by_state().await {
        Ok(counts) => {
            let tasks = Family::<StateLabel, Gauge>::default();
            for s in TaskState::ALL {
                let n = counts
                    .iter()
                    .find(|(st, _)| *st == s)
                    .map_or(0, |(_, n)| *n);
                tasks
                    .get_or_create(&StateLabel {
                        state: s.to_string(),
                    })
                    .set(n);
            }
            registry.register(
                "courier_tasks",
                "Tasks in the store, by state (pending is the queue depth)",
                tasks,
            );
            store_up.set(1);
        }
        Err(e) => tracing::warn!(error = %e, "metrics: the store did not answer"),
    }
    registry.register(
        "courier_store_up",
        "Whether the store answered this scrape",
        store_up,
    );

    match state.client.queues().await {
        Ok(queues) => {
            let depth = Family::<QueueState, Gauge>::default();
            let paused = Family::<QueueLabel, Gauge>::default();
            for q in &queues {
                for (st, n) in [
                    ("scheduled", q.scheduled),
                    ("pending", q.pending),
                    ("running", q.running),
                    ("suspended", q.suspended),
                ] {
                    depth
                        .get_or_create(&QueueState {
                            queue: q.name.clone(),
                            state: st,
                        })
                        .set(n);
                }
                paused
                    .get_or_create(&QueueLabel {
                        queue: q.name.clone(),
                    })
                    .set(i64::from(q.paused));
            }
            registry.register(
                "courier_queue_tasks",
                "Tasks of each queue waiting or running, by state (scheduled and pending are the queue's depth)",
                depth,
            );
            registry.register(
                "courier_queue_paused",
                "Whether a queue is paused (1) or not (0)",
                paused,
            );
        }
        Err(e) => tracing::warn!(error = %e, "metrics: could not read the queues"),
    }

    let (lanes, bound) = state.client.write_queues();
    let held = Family::<LaneLabel, Gauge>::default();
    for (lane, n) in lanes {
        held.get_or_create(&LaneLabel { lane }).set(n as i64);
    }
    registry.register(
        "courier_store_writes_held",
        format!("Writes held by each group-commit lane of this process (queued or being written); past {bound}, callers wait"),
        held,
    );

    if let Ok(stats) = state.client.bus().stats().await {
        let routed = Family::<TransportLabel, Counter>::default();
        let mut by = vec![
            ("local".to_string(), stats.local),
            ("inbound".to_string(), stats.inbound),
        ];
        by.extend(stats.by_transport.iter().map(|(t, n)| (t.to_string(), *n)));
        for (transport, n) in by {
            routed
                .get_or_create(&TransportLabel { transport })
                .inc_by(n);
        }
        registry.register(
            "courier_bus_messages",
            "Messages routed by this process's bus, by route",
            routed,
        );
        let dropped = Counter::<u64>::default();
        dropped.inc_by(stats.dropped);
        registry.register(
            "courier_bus_dropped",
            "Messages the bus dropped: no route, or its mailbox full (recovered from the store)",
            dropped,
        );
        let full = Counter::<u64>::default();
        full.inc_by(stats.full);
        registry.register(
            "courier_bus_mailbox_full",
            format!("Of the dropped messages, those a sender that could not wait found the bus's mailbox full ({} envelopes)", courier_bus::MAILBOX_BOUND),
            full,
        );
    }

    let mut out = String::with_capacity(8192);
    match prometheus_client::encoding::text::encode(&mut out, &registry) {
        Ok(()) => HttpResponse::Ok().content_type(CONTENT_TYPE).body(out),
        Err(e) => {
            tracing::error!(error = %e, "metrics: could not encode");
            HttpResponse::InternalServerError().finish()
        }
    }
}
