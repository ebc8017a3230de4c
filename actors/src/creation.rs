//! What every way of creating a task shares (a client's submit, a batch, a
//! parent's spawn): checking the request, resolving its options against
//! the kind's defaults, and building the row to insert.

use std::collections::BTreeMap;

use serde_json::Value;
use uuid::Uuid;

use crate::error::{Error, Result};
use courier_store::TaskOptions;
use courier_store::{now, refuse_nul, refuse_nul_text, validate_kind_name};
use courier_store::{Store, TaskInsert};

/// The longest `idempotency_key` accepted.
pub const MAX_IDEMPOTENCY_KEY: usize = 256;

/// The kinds this process runs, with their default options: creating one
/// of those needs no lookup. Other kinds are looked up among the alive
/// executors' registrations (which carry their defaults too).
pub type LocalKinds = std::sync::Arc<BTreeMap<String, TaskOptions>>;

/// A task to create, before its options are resolved.
pub(crate) struct Request<'a> {
    pub kind: &'a str,
    pub input: Value,
    pub idempotency_key: Option<String>,
    pub trace_id: String,
    pub options: &'a TaskOptions,
    pub created_by: String,
}

/// Checks `r` and resolves its options: set on the task, else the kind's
/// default, else the global one. [`Error::UnknownKind`] when no executor
/// runs the kind; [`Error::InvalidField`] naming the first bad field.
pub(crate) async fn prepare(
    store: &Store,
    local: &LocalKinds,
    r: Request<'_>,
) -> Result<TaskInsert> {
    validate_kind_name(r.kind)?;
    refuse_nul("input", &r.input)?;
    if let Some(k) = &r.idempotency_key {
        refuse_nul_text("idempotency_key", k)?;
        if k.is_empty() || k.len() > MAX_IDEMPOTENCY_KEY {
            return Err(Error::invalid_field(
                "idempotency_key",
                format!("idempotency_key must be 1 to {MAX_IDEMPOTENCY_KEY} bytes"),
            ));
        }
    }
    r.options.validate()?;
    let defaults = match local.get(r.kind) {
        Some(d) => d.clone(),
        None => store
            .kind_defaults(r.kind)
            .await?
            .ok_or_else(|| Error::UnknownKind(r.kind.to_string()))?,
    };
    let at = now();
    Ok(TaskInsert {
        id: Uuid::now_v7(),
        kind: r.kind.to_string(),
        input: r.input,
        idempotency_key: r.idempotency_key,
        trace_id: r.trace_id,
        created_by: r.created_by,
        options: r.options.clone().or(&defaults).resolve(at),
        schedule: None,
        created_at: at,
    })
}
