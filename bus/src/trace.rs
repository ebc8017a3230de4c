//! W3C trace context (`traceparent`), carried in every envelope.
//!
//! courier gives every task a trace id when it is created (sub-tasks inherit
//! their parent's), and every message about that task carries it with a fresh
//! span id. Log lines of every process that touched the task can then be
//! joined on one `trace_id`, and an OpenTelemetry exporter can adopt the same
//! ids. Only version `00` of the format is produced; parsing accepts any
//! version but `ff`, as the specification asks.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A parsed `traceparent`: `00-<32 hex trace id>-<16 hex span id>-<2 hex flags>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct TraceParent {
    /// The trace this message belongs to; never all zeros.
    pub trace_id: u128,
    /// The span that sent the message; never zero.
    pub parent_id: u64,
    /// Trace flags; bit 0 is "sampled".
    pub flags: u8,
}

fn nonzero_u64() -> u64 {
    loop {
        let v = rand::random::<u64>();
        if v != 0 {
            return v;
        }
    }
}

impl TraceParent {
    /// A new trace with a random id, sampled.
    pub fn new_root() -> Self {
        let trace_id = loop {
            let v = rand::random::<u128>();
            if v != 0 {
                break v;
            }
        };
        TraceParent {
            trace_id,
            parent_id: nonzero_u64(),
            flags: 1,
        }
    }

    /// A new span in an existing trace. A zero trace id (invalid) starts a new trace.
    pub fn in_trace(trace_id: u128) -> Self {
        if trace_id == 0 {
            return Self::new_root();
        }
        TraceParent {
            trace_id,
            parent_id: nonzero_u64(),
            flags: 1,
        }
    }

    /// A child span of this one: same trace, new span id.
    pub fn child(&self) -> Self {
        TraceParent {
            parent_id: nonzero_u64(),
            ..*self
        }
    }

    /// The trace id as 32 lowercase hex digits, the form used in logs and the database.
    pub fn trace_id_hex(&self) -> String {
        format!("{:032x}", self.trace_id)
    }
}

impl fmt::Display for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "00-{:032x}-{:016x}-{:02x}",
            self.trace_id, self.parent_id, self.flags
        )
    }
}

/// Why a `traceparent` string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid traceparent {0:?}")]
pub struct TraceParentError(pub String);

fn hex_field(s: &str, len: usize) -> Option<&str> {
    (s.len() == len
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
    .then_some(s)
}

impl FromStr for TraceParent {
    type Err = TraceParentError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || TraceParentError(s.to_string());
        let mut parts = s.split('-');
        let version = parts.next().and_then(|p| hex_field(p, 2)).ok_or_else(bad)?;
        if version == "ff" {
            return Err(bad());
        }
        let trace = parts
            .next()
            .and_then(|p| hex_field(p, 32))
            .ok_or_else(bad)?;
        let span = parts
            .next()
            .and_then(|p| hex_field(p, 16))
            .ok_or_else(bad)?;
        let flags = parts.next().and_then(|p| hex_field(p, 2)).ok_or_else(bad)?;
        // Version 00 has exactly four fields; later versions may append more.
        if version == "00" && parts.next().is_some() {
            return Err(bad());
        }
        let trace_id = u128::from_str_radix(trace, 16).map_err(|_| bad())?;
        let parent_id = u64::from_str_radix(span, 16).map_err(|_| bad())?;
        let flags = u8::from_str_radix(flags, 16).map_err(|_| bad())?;
        if trace_id == 0 || parent_id == 0 {
            return Err(bad());
        }
        Ok(TraceParent {
            trace_id,
            parent_id,
            flags,
        })
    }
}

impl From<TraceParent> for String {
    fn from(t: TraceParent) -> String {
        t.to_string()
    }
}

impl TryFrom<String> for TraceParent {
    type Error = TraceParentError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

/// Makes `span` part of the trace `parent` names, as a child of the span
/// `parent` names: what an exporter needs to put a process's spans about a
/// task in that task's trace. Installed once by whoever exports spans
/// (the `courier` binary's OpenTelemetry layer, with `--otlp`); without
/// one, [`adopt`] does nothing. A function, not a dependency: courier's
/// crates name no OpenTelemetry version, so an embedder plugs in its own.
pub type Adopter = fn(&tracing::Span, TraceParent);

static ADOPTER: std::sync::OnceLock<Adopter> = std::sync::OnceLock::new();

/// Installs the process's [`Adopter`]; the first one wins.
pub fn set_adopter(adopter: Adopter) -> bool {
    ADOPTER.set(adopter).is_ok()
}

/// Puts `span` in the trace of `parent` (see [`Adopter`]).
pub fn adopt(span: &tracing::Span, parent: TraceParent) {
    if let Some(a) = ADOPTER.get() {
        a(span, parent);
    }
}

/// [`adopt`] by a task's trace id (32 hex digits, as stored): the span
/// becomes a child of a fresh span id in that trace.
pub fn adopt_trace(span: &tracing::Span, trace_id_hex: &str) {
    if ADOPTER.get().is_none() {
        return;
    }
    if let Ok(id) = u128::from_str_radix(trace_id_hex, 16) {
        adopt(span, TraceParent::in_trace(id));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_spec_example() {
        let s = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let t: TraceParent = s.parse().unwrap();
        assert_eq!(t.trace_id, 0x4bf92f3577b34da6a3ce929d0e0e4736);
        assert_eq!(t.parent_id, 0x00f067aa0ba902b7);
        assert_eq!(t.flags, 1);
        assert_eq!(t.to_string(), s);
    }

    #[test]
    fn refuses_invalid_values() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        ] {
            assert!(bad.parse::<TraceParent>().is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn children_keep_the_trace() {
        let root = TraceParent::new_root();
        let child = root.child();
        assert_eq!(root.trace_id, child.trace_id);
        assert_ne!(root.parent_id, child.parent_id);
        assert_eq!(TraceParent::in_trace(root.trace_id).trace_id, root.trace_id);
        assert_eq!(root.trace_id_hex().len(), 32);
    }
}
