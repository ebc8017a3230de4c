//! courier-bus: the message bus that every courier actor talks through.
//!
//! The bus knows nothing of tasks. It moves envelopes of an opaque body type `B`
//! from one [`Address`] to another and lets senders ignore where the target
//! lives: in this process, in another process on the same host, or elsewhere.
//!
//! # Layout
//!
//! - [`address`]: the names actors are reached by (`executor/<id>`,
//!   `task/<uuid>`, `web/<node>/<session>`, `pool/<name>`), with parsing and
//!   validation.
//! - [`envelope`]: the versioned envelope (message id, from, to, correlation
//!   id, send time, W3C trace context, body). It is the only type the bus puts
//!   on a wire.
//! - [`trace`]: the W3C `traceparent` value carried in every envelope.
//!   [`Deliver`] is the actix message that hands an envelope to an actor.
//! - [`routes`]: the in-process routing table (addresses and pools to actix
//!   recipients): no serialization, no I/O. It is not a transport: the bus
//!   asks it first, and transports only for what it cannot reach.
//! - [`router`]: the [`Bus`] actor, and [`BusHandle`], the cheap cloneable
//!   handle senders use.
//! - [`transport`]: the [`Transport`] seam, and the transports that plug in
//!   there without touching senders: [`transport::socket`] (processes on one
//!   host), [`transport::amqp`] (hosts, through RabbitMQ) and
//!   [`transport::postgres`] (hosts, through the shared database).
//! - [`error`]: the typed errors of this crate.
//! - [`backoff`]: the waits of the loops that reconnect or retry.

pub mod address;
pub mod backoff;
pub mod envelope;
pub mod error;
pub mod router;
pub mod routes;
pub mod trace;
pub mod transport;

pub use address::Address;
pub use envelope::Deliver;
pub use envelope::{Envelope, PROTOCOL_VERSION};
pub use error::{AddressError, BusError, TransportError};
pub use router::{Bus, BusHandle, BusStats, Route, MAILBOX_BOUND};
pub use trace::TraceParent;
pub use transport::{Distance, Transport};
