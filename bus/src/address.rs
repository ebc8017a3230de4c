//! Addresses: the names actors are reached by.
//!
//! An address is written `kind/rest`:
//!
//! | address                  | who receives                                        |
//! |--------------------------|-----------------------------------------------------|
//! | `executor/<id>`          | one executor                                        |
//! | `task/<uuid>`            | the actor running that task, wherever it runs now   |
//! | `web/<node>/<session>`   | one web session (e.g. a request waiting for a task) |
//! | `pool/<name>`            | any one member of a pool (competing consumers)      |
//!
//! Segments are 1 to 128 characters of ASCII letters, digits, `-`, `_`, `.`
//! and `:`. That keeps every address usable as a socket file name, an AMQP
//! routing key and a PostgreSQL channel suffix.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Where a bus message goes.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub enum Address {
    /// One executor, by id.
    Executor(String),
    /// The actor running one task, wherever its executor is.
    Task(Uuid),
    /// One web session on one web node.
    Web { node: String, session: String },
    /// Any one member of a named pool of consumers.
    Pool(String),
}

const MAX_SEGMENT: usize = 128;

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

fn check_segment(whole: &str, seg: &str) -> Result<(), AddressError> {
    if seg.is_empty() {
        return Err(AddressError::InvalidSegment(whole.into(), "empty segment"));
    }
    if seg.len() > MAX_SEGMENT {
        return Err(AddressError::InvalidSegment(
            whole.into(),
            "segment longer than 128 characters",
        ));
    }
    if !seg
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
    {
        return Err(AddressError::InvalidSegment(
            whole.into(),
            "only ASCII letters, digits, '-', '_', '.' and ':' are allowed",
        ));
    }
    Ok(())
}

impl Address {
    /// `executor/<id>`, validated.
    pub fn executor(id: impl Into<String>) -> Result<Self, AddressError> {
        let id = id.into();
        check_segment(&id, &id)?;
        Ok(Address::Executor(id))
    }

    /// `task/<uuid>`; every UUID is valid.
    pub fn task(id: Uuid) -> Self {
        Address::Task(id)
    }

    /// `web/<node>/<session>`, validated.
    pub fn web(node: impl Into<String>, session: impl Into<String>) -> Result<Self, AddressError> {
        let (node, session) = (node.into(), session.into());
        check_segment(&node, &node)?;
        check_segment(&session, &session)?;
        Ok(Address::Web { node, session })
    }

    /// `pool/<name>`, validated.
    pub fn pool(name: impl Into<String>) -> Result<Self, AddressError> {
        let name = name.into();
        check_segment(&name, &name)?;
        Ok(Address::Pool(name))
    }

    /// True for `pool/…` addresses, which are delivered to one member of many.
    pub fn is_pool(&self) -> bool {
        matches!(self, Address::Pool(_))
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Executor(id) => write!(f, "executor/{id}"),
            Address::Task(id) => write!(f, "task/{id}"),
            Address::Web { node, session } => write!(f, "web/{node}/{session}"),
            Address::Pool(name) => write!(f, "pool/{name}"),
        }
    }
}

impl FromStr for Address {
    type Err = AddressError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (kind, rest) = s
            .split_once('/')
            .ok_or_else(|| AddressError::MissingKind(s.into()))?;
        match kind {
            "executor" => {
                check_segment(s, rest)?;
                Ok(Address::Executor(rest.into()))
            }
            "task" => Uuid::try_parse(rest)
                .map(Address::Task)
                .map_err(|e| AddressError::InvalidTaskId(s.into(), e.to_string())),
            "web" => {
                let (node, session) = rest.split_once('/').ok_or(AddressError::InvalidSegment(
                    s.into(),
                    "web addresses are web/<node>/<session>",
                ))?;
                check_segment(s, node)?;
                check_segment(s, session)?;
                Ok(Address::Web {
                    node: node.into(),
                    session: session.into(),
                })
            }
            "pool" => {
                check_segment(s, rest)?;
                Ok(Address::Pool(rest.into()))
            }
            _ => Err(AddressError::UnknownKind(s.into())),
        }
    }
}

impl From<Address> for String {
    fn from(a: Address) -> String {
        a.to_string()
    }
}

impl TryFrom<String> for Address {
    type Error = AddressError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_every_kind() {
        let id = Uuid::now_v7();
        for a in [
            Address::executor("host-1.exec:7").unwrap(),
            Address::task(id),
            Address::web("web-1", "s42").unwrap(),
            Address::pool("demo.echo").unwrap(),
        ] {
            let s = a.to_string();
            assert_eq!(s.parse::<Address>().unwrap(), a, "{s}");
            let json = serde_json::to_string(&a).unwrap();
            assert_eq!(json, format!("\"{s}\""));
            assert_eq!(serde_json::from_str::<Address>(&json).unwrap(), a);
        }
    }

    #[test]
    fn rejects_malformed_addresses() {
        for bad in [
            "",
            "executor",
            "executor/",
            "teapot/x",
            "task/not-a-uuid",
            "web/node-only",
            "web//s",
            "pool/has space",
            "pool/a/b",
            "executor/ünïcode",
        ] {
            assert!(bad.parse::<Address>().is_err(), "{bad:?} parsed");
        }
        let long = format!("pool/{}", "x".repeat(129));
        assert!(long.parse::<Address>().is_err());
        assert!(serde_json::from_str::<Address>("\"teapot/x\"").is_err());
    }

    #[test]
    fn constructors_validate() {
        assert!(Address::executor("a/b").is_err());
        assert!(Address::web("n", "").is_err());
        assert!(Address::pool("ok-name_1.2").is_ok());
        assert!(Address::pool("ok").unwrap().is_pool());
    }
}
