//! The envelope: the one type the bus moves, and the only one it puts on a wire.

use actix::Message;
use chrono::{DateTime, SubsecRound, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::address::Address;
use crate::trace::TraceParent;

/// The envelope format this build speaks. A receiver refuses envelopes of a
/// higher version rather than guessing at their meaning.
pub const PROTOCOL_VERSION: u16 = 1;

/// The message a bus delivers to an actor: implement `Handler<Deliver<B>>`
/// and register the actor's recipient.
#[derive(Debug)]
pub struct Deliver<B>(pub Envelope<B>);

impl<B: 'static> Message for Deliver<B> {
    type Result = ();
}

/// A message on the bus: routing and tracing metadata around an opaque body.
///
/// On a wire it is JSON with these field names; `body` is whatever the body
/// type serializes to (courier's task protocol is a tagged enum). In-process
/// it is moved, never serialized.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Envelope<B> {
    /// Protocol version, [`PROTOCOL_VERSION`] when sent by this build.
    pub v: u16,
    /// Unique message id (UUID v7, so ids sort by send time). Receivers use it
    /// to drop duplicates of an at-least-once delivery.
    pub id: Uuid,
    /// Who sent it; replies go here.
    pub from: Address,
    /// Who it is for.
    pub to: Address,
    /// The id of the message or the entity this one answers or concerns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<Uuid>,
    /// When the sender handed it to the bus (UTC, microseconds).
    pub sent_at: DateTime<Utc>,
    /// W3C trace context, so one trace follows a task across processes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<TraceParent>,
    /// The payload; the bus never looks inside.
    pub body: B,
}

impl<B> Envelope<B> {
    /// A new envelope with a fresh id and the current time.
    pub fn new(from: Address, to: Address, body: B) -> Self {
        Envelope {
            v: PROTOCOL_VERSION,
            id: Uuid::now_v7(),
            from,
            to,
            correlation_id: None,
            sent_at: Utc::now().trunc_subsecs(6),
            traceparent: None,
            body,
        }
    }

    /// Sets the correlation id.
    pub fn correlate(mut self, id: Uuid) -> Self {
        self.correlation_id = Some(id);
        self
    }

    /// Sets the trace context.
    pub fn traced(mut self, tp: TraceParent) -> Self {
        self.traceparent = Some(tp);
        self
    }

    /// True when this build understands the envelope's version.
    pub fn is_supported(&self) -> bool {
        self.v >= 1 && self.v <= PROTOCOL_VERSION
    }

    /// The same envelope with another body (used by transports that decode in two steps).
    pub fn map<C>(self, f: impl FnOnce(B) -> C) -> Envelope<C> {
        Envelope {
            v: self.v,
            id: self.id,
            from: self.from,
            to: self.to,
            correlation_id: self.correlation_id,
            sent_at: self.sent_at,
            traceparent: self.traceparent,
            body: f(self.body),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    #[serde(tag = "type", rename_all = "snake_case")]
    enum Body {
        Ping { n: u32 },
    }

    #[test]
    fn json_wire_form_is_stable() {
        let task = Uuid::now_v7();
        let env = Envelope::new(
            Address::executor("e1").unwrap(),
            Address::task(task),
            Body::Ping { n: 7 },
        )
        .correlate(task)
        .traced(TraceParent::new_root());
        let json = serde_json::to_value(&env).unwrap();
        assert_eq!(json["v"], 1);
        assert_eq!(json["from"], "executor/e1");
        assert_eq!(json["to"], format!("task/{task}"));
        assert_eq!(json["correlation_id"], task.to_string());
        assert_eq!(json["body"], serde_json::json!({"type": "ping", "n": 7}));
        assert!(json["traceparent"].as_str().unwrap().starts_with("00-"));
        let back: Envelope<Body> = serde_json::from_value(json).unwrap();
        assert_eq!(back, env);
        assert!(back.is_supported());
    }

    #[test]
    fn optional_fields_may_be_absent_and_ids_are_v7() {
        let env = Envelope::new(
            Address::pool("p").unwrap(),
            Address::pool("q").unwrap(),
            Body::Ping { n: 1 },
        );
        assert_eq!(env.id.get_version_num(), 7);
        let json = serde_json::to_string(&env).unwrap();
        assert!(!json.contains("correlation_id"));
        assert!(!json.contains("traceparent"));
        let back: Envelope<Body> = serde_json::from_str(&json).unwrap();
        assert_eq!(back.correlation_id, None);
    }

    #[test]
    fn newer_versions_are_not_supported() {
        let mut env = Envelope::new(
            Address::pool("p").unwrap(),
            Address::pool("q").unwrap(),
            Body::Ping { n: 1 },
        );
        env.v = PROTOCOL_VERSION + 1;
        assert!(!env.is_supported());
        let bad = r#"{"v":1,"id":"x","from":"pool/p","to":"pool/q","sent_at":"2026-01-01T00:00:00Z","body":{"type":"ping","n":1}}"#;
        assert!(serde_json::from_str::<Envelope<Body>>(bad).is_err());
    }
}
