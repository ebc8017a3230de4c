//! `GET /metrics`: Prometheus text exposition (format 0.0.4).
//!
//! Process counters come from [`courier_actors::metrics`]; deployment-wide
//! gauges (tasks by state, so the queue depth) are read from the store at
//! scrape time; bus counters from the bus actor.

use actix_web::{web, HttpResponse};
use std::fmt::Write;

use courier_actors::TaskState;

use crate::WebState;

pub async fn metrics(state: web::Data<WebState>) -> HttpResponse {
    let mut out = String::with_capacity(4096);
    courier_actors::metrics::metrics().render(&mut out);

    out.push_str("# HELP courier_tasks Tasks in the store, by state (pending is the queue depth).\n# TYPE courier_tasks gauge\n");
    match state.client.store().count_by_state().await {
        Ok(counts) => {
            for s in TaskState::ALL {
                let n = counts
                    .iter()
                    .find(|(st, _)| *st == s)
                    .map_or(0, |(_, n)| *n);
                let _ = writeln!(out, "courier_tasks{{state=\"{s}\"}} {n}");
            }
            out.push_str("# HELP courier_store_up Whether the store answered this scrape.\n# TYPE courier_store_up gauge\ncourier_store_up 1\n");
        }
        Err(e) => {
            tracing::warn!(error = %e, "metrics: the store did not answer");
            out.push_str("# HELP courier_store_up Whether the store answered this scrape.\n# TYPE courier_store_up gauge\ncourier_store_up 0\n");
        }
    }

    match state.client.queues().await {
        Ok(queues) => {
            out.push_str("# HELP courier_queue_tasks Tasks of each queue waiting or running, by state (scheduled and pending are the queue's depth).\n# TYPE courier_queue_tasks gauge\n");
            for q in &queues {
                let name = q.name.replace('\\', "\\\\").replace('"', "\\\"");
                for (st, n) in [
                    ("scheduled", q.scheduled),
                    ("pending", q.pending),
                    ("running", q.running),
                    ("suspended", q.suspended),
                ] {
                    let _ = writeln!(
                        out,
                        "courier_queue_tasks{{queue=\"{name}\",state=\"{st}\"}} {n}"
                    );
                }
            }
            out.push_str("# HELP courier_queue_paused Whether a queue is paused (1) or not (0).\n# TYPE courier_queue_paused gauge\n");
            for q in &queues {
                let name = q.name.replace('\\', "\\\\").replace('"', "\\\"");
                let _ = writeln!(
                    out,
                    "courier_queue_paused{{queue=\"{name}\"}} {}",
                    u8::from(q.paused)
                );
            }
        }
        Err(e) => tracing::warn!(error = %e, "metrics: could not read the queues"),
    }

    if let Ok(stats) = state.client.bus().stats().await {
        out.push_str("# HELP courier_bus_messages_total Messages routed by this process's bus, by route.\n# TYPE courier_bus_messages_total counter\n");
        let _ = writeln!(
            out,
            "courier_bus_messages_total{{transport=\"local\"}} {}",
            stats.local
        );
        for (t, n) in &stats.by_transport {
            let _ = writeln!(out, "courier_bus_messages_total{{transport=\"{t}\"}} {n}");
        }
        let _ = writeln!(
            out,
            "courier_bus_messages_total{{transport=\"inbound\"}} {}",
            stats.inbound
        );
        out.push_str("# HELP courier_bus_dropped_total Messages the bus found no route for (recovered from the store).\n# TYPE courier_bus_dropped_total counter\n");
        let _ = writeln!(out, "courier_bus_dropped_total {}", stats.dropped);
    }
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(out)
}
