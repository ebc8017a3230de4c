//! Typed errors of the bus.

use crate::address::Address;
pub use crate::address::AddressError;

/// Why the bus could not take a message or a registration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BusError {
    /// No local actor and no transport knows the address. The message is
    /// dropped; durable state in the database is what makes that harmless.
    #[error("no route to {0}")]
    NoRoute(Address),
    /// Another live actor already holds this address.
    #[error("address {0} is already registered")]
    AlreadyRegistered(Address),
    /// A transport accepted the route but failed to take the message.
    #[error("transport {transport} failed: {source}")]
    Transport {
        transport: &'static str,
        source: TransportError,
    },
    /// The bus actor is gone (its system is shutting down).
    #[error("the bus has stopped")]
    Stopped,
}

/// A transport's own failure to take a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    #[error("not connected to the peer")]
    Disconnected,
    #[error("message too large: {size} bytes, limit {limit}")]
    TooLarge { size: usize, limit: usize },
    #[error("could not encode the message: {0}")]
    Encode(String),
    #[error("{0}")]
    Other(String),
}
