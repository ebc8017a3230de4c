//! Typed errors of the bus.

use crate::address::Address;

/// An address string that does not name anything the bus can route to.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AddressError {
    #[error("address {0:?} has no kind prefix (expected executor/, task/, web/ or pool/)")]
    MissingKind(String),
    #[error("address {0:?} has an unknown kind (expected executor/, task/, web/ or pool/)")]
    UnknownKind(String),
    #[error("address {0:?} has an invalid segment: {1}")]
    InvalidSegment(String, &'static str),
    #[error("address {0:?} is not a task address: {1}")]
    InvalidTaskId(String, String),
}

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
