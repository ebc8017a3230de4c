//! courier-web: the HTTP front end (actix-web): API v1, web session actors,
//! the dashboard and metrics.
//!
//! Not built yet: the embedded runtime comes first. Until then an embedding
//! program uses [`courier_actors::Client`] directly, which is what the HTTP
//! handlers will call.

pub use courier_actors::Client;
