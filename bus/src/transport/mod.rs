//! The transport seam.
//!
//! The [`Bus`](crate::Bus) first tries its in-process routing table
//! ([`routes`](crate::routes)); when the target is not registered in this process it asks
//! each added [`Transport`], nearest first, whether it can reach the address.
//! A transport that says yes takes the envelope and is then responsible for
//! it (serializing it, writing it to a socket, publishing it to a broker).
//! Envelopes that arrive from a transport re-enter the bus as
//! [`Inbound`](crate::router::Inbound) and are delivered in-process only, so a
//! message never bounces between transports.
//!
//! Transports are driven from inside the bus actor: `send` must not block. A
//! transport that does I/O hands the envelope to its own task and returns.

#[cfg(feature = "amqp")]
pub mod amqp;
#[cfg(feature = "postgres")]
pub mod postgres;
pub mod socket;

use crate::address::Address;
use crate::envelope::Envelope;
use crate::error::TransportError;

/// How far a transport carries a message. The bus prefers the nearest route.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Distance {
    /// Another process on the same host (e.g. a Unix socket).
    SameHost,
    /// Another host (e.g. AMQP or the shared database).
    Network,
}

/// Whether a transport that carries messages between nodes (a broker, the
/// database) reaches `to` from node `own`: anything while it is connected,
/// except this node's own web sessions, which are local or nowhere.
#[cfg(any(feature = "amqp", feature = "postgres"))]
pub(crate) fn network_reaches(connected: bool, own: &str, to: &Address) -> bool {
    connected
        && match to {
            Address::Web { node, .. } => node != own,
            _ => true,
        }
}

/// What this process can be reached for, as transports tell their peers:
/// the pools it has live members in and the executor addresses registered
/// here. (Task and web-session addresses are not advertised: web addresses
/// name their node, and task addresses move with their tasks.)
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Advertisement {
    pub pools: Vec<String>,
    pub executors: Vec<String>,
}

/// A way out of this process for envelopes of body type `B`.
pub trait Transport<B>: 'static {
    /// A short, stable name for logs and metrics (`socket`, `amqp`, `postgres`).
    fn name(&self) -> &'static str;

    /// How far this transport carries messages.
    fn distance(&self) -> Distance;

    /// Whether this transport knows a route to `to` right now. Pool addresses
    /// are reachable through a transport when some remote node consumes them.
    fn reaches(&self, to: &Address) -> bool;

    /// Takes the envelope for delivery. Must not block.
    fn send(&mut self, envelope: Envelope<B>) -> Result<(), TransportError>;

    /// The local routes changed: tell peers what this process now serves.
    fn advertise(&mut self, _ads: &Advertisement) {}

    /// The peers this transport is connected to now (node names), for
    /// health checks.
    fn peers(&self) -> Vec<String> {
        Vec::new()
    }

    /// The receiver of message `id` (which arrived through this transport)
    /// is done with it: `accept` — it may be forgotten; otherwise it should
    /// be offered again (to this receiver or another). Transports that hold
    /// nothing ignore it.
    fn settle(&mut self, _id: uuid::Uuid, _accept: bool) {}
}
