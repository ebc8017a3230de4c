//! The records courier keeps: tasks, their events and history, executors.
//!
//! These types cross the API boundary (the HTTP API serializes them), so they
//! derive `Serialize`; the JSON field names are part of the public contract.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, SubsecRound, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::types::Json;
use uuid::Uuid;

/// The current time as the store keeps it (UTC, microsecond precision, which
/// is what PostgreSQL stores; SQLite gets the same value).
pub fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

/// Where a task is in its life.
///
/// ```text
/// pending ──claim──▶ running ◀──────▶ suspended
///    │                 │                  │
///    │                 ├─▶ succeeded      │
///    │                 ├─▶ failed    ◀────┤ (cancel, takeover)
///    └──cancel──▶ cancelled ◀─────────────┘
/// running/suspended ──executor lost──▶ pending
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskState {
    /// Committed, waiting for an executor to claim it.
    Pending,
    /// Claimed by an executor and running there.
    Running,
    /// Owned by an executor, waiting for an event or sub-tasks; holds no thread.
    Suspended,
    /// Finished with an output.
    Succeeded,
    /// Finished with an error.
    Failed,
    /// Finished because cancellation was requested.
    Cancelled,
}

impl TaskState {
    pub const ALL: [TaskState; 6] = [
        TaskState::Pending,
        TaskState::Running,
        TaskState::Suspended,
        TaskState::Succeeded,
        TaskState::Failed,
        TaskState::Cancelled,
    ];

    /// The name used in the database and on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::Pending => "pending",
            TaskState::Running => "running",
            TaskState::Suspended => "suspended",
            TaskState::Succeeded => "succeeded",
            TaskState::Failed => "failed",
            TaskState::Cancelled => "cancelled",
        }
    }

    /// True for the three end states; a final task never changes again.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            TaskState::Succeeded | TaskState::Failed | TaskState::Cancelled
        )
    }

    /// True when the state is held by an executor (it owns the task).
    pub fn is_owned(self) -> bool {
        matches!(self, TaskState::Running | TaskState::Suspended)
    }

    /// Whether the state machine allows `self → to`.
    pub fn can_become(self, to: TaskState) -> bool {
        use TaskState::*;
        matches!(
            (self, to),
            (Pending, Running)
                | (Pending, Cancelled)
                | (Running, Suspended)
                | (Suspended, Running)
                | (Running | Suspended, Succeeded | Failed | Cancelled)
                | (Running | Suspended, Pending)
        )
    }
}

impl fmt::Display for TaskState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A state name that is not one of the six.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown task state {0:?} (expected pending, running, suspended, succeeded, failed or cancelled)")]
pub struct UnknownState(pub String);

impl TryFrom<String> for TaskState {
    type Error = UnknownState;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl FromStr for TaskState {
    type Err = UnknownState;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        TaskState::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| UnknownState(s.to_string()))
    }
}

/// A task as stored, and as the API shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, sqlx::FromRow)]
pub struct Task {
    pub id: Uuid,
    pub kind: String,
    #[sqlx(try_from = "String")]
    pub state: TaskState,
    #[sqlx(json)]
    pub input: Value,
    #[sqlx(json(nullable))]
    pub output: Option<Value>,
    pub error: Option<String>,
    /// The last progress value the run recorded, if any.
    #[sqlx(json(nullable))]
    pub progress: Option<Value>,
    pub parent_id: Option<Uuid>,
    /// The executor that owns the task now, or that ran it last.
    pub executor_id: Option<String>,
    /// Fencing epoch of the current ownership; internal.
    #[serde(skip, default)]
    pub epoch: i64,
    /// How many times an executor claimed it (1 on a first run).
    pub attempts: i32,
    pub cancel_requested: bool,
    /// Someone follows every state change of this task; internal.
    #[serde(skip, default)]
    pub watched: bool,
    pub idempotency_key: Option<String>,
    /// Trace id (32 hex digits) shared by the task, its messages and its sub-tasks.
    pub trace_id: String,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
}

/// What it takes to create a task.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct NewTask {
    pub kind: String,
    #[serde(default)]
    pub input: Value,
    /// A caller-chosen key: creating again with the same key returns the first task.
    #[serde(default)]
    pub idempotency_key: Option<String>,
    /// Join this trace (32 hex digits, e.g. from an incoming W3C
    /// `traceparent`) instead of starting a new one.
    #[serde(skip)]
    pub trace_id: Option<String>,
}

impl NewTask {
    pub fn new(kind: impl Into<String>, input: Value) -> Self {
        NewTask {
            kind: kind.into(),
            input,
            idempotency_key: None,
            trace_id: None,
        }
    }

    pub fn idempotency_key(mut self, key: impl Into<String>) -> Self {
        self.idempotency_key = Some(key.into());
        self
    }
}

/// An event in a task's durable inbox.
#[derive(Clone, Debug, PartialEq, Serialize, sqlx::FromRow)]
pub struct TaskEvent {
    /// Position in the inbox; events of one task are delivered in this order.
    pub seq: i64,
    pub task_id: Uuid,
    pub name: String,
    #[serde(serialize_with = "ser_json")]
    pub payload: Json<Value>,
    pub created_at: DateTime<Utc>,
    pub delivered_at: Option<DateTime<Utc>>,
}

fn ser_json<S: serde::Serializer>(v: &Json<Value>, s: S) -> Result<S::Ok, S::Error> {
    v.0.serialize(s)
}

/// One line of a task's state history.
#[derive(Clone, Debug, PartialEq, Serialize, sqlx::FromRow)]
pub struct HistoryEntry {
    pub id: i64,
    pub task_id: Uuid,
    pub from_state: Option<String>,
    pub to_state: String,
    /// The executor or node that made the change.
    pub changed_by: Option<String>,
    /// The executor that held the task before the change: on a takeover,
    /// the dead one (`changed_by` is the one that took over).
    pub owner: Option<String>,
    pub attempt: i32,
    pub at: DateTime<Utc>,
}

/// Liveness of an executor as the store records it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExecutorState {
    Alive,
    Stopped,
    Dead,
}

/// An executor state name that is not one of the three.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown executor state {0:?} (expected alive, stopped or dead)")]
pub struct UnknownExecutorState(pub String);

impl TryFrom<String> for ExecutorState {
    type Error = UnknownExecutorState;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        match s.as_str() {
            "alive" => Ok(ExecutorState::Alive),
            "stopped" => Ok(ExecutorState::Stopped),
            "dead" => Ok(ExecutorState::Dead),
            _ => Err(UnknownExecutorState(s)),
        }
    }
}

impl ExecutorState {
    pub fn as_str(self) -> &'static str {
        match self {
            ExecutorState::Alive => "alive",
            ExecutorState::Stopped => "stopped",
            ExecutorState::Dead => "dead",
        }
    }
}

/// An executor as registered, and as the API shows it.
#[derive(Clone, Debug, PartialEq, Serialize, sqlx::FromRow)]
pub struct ExecutorInfo {
    pub id: String,
    pub node: String,
    pub host: String,
    pub pid: i32,
    #[sqlx(try_from = "String")]
    pub state: ExecutorState,
    #[sqlx(json)]
    pub kinds: Vec<String>,
    pub capacity: i32,
    pub running: i32,
    pub started_at: DateTime<Utc>,
    pub last_seen_at: DateTime<Utc>,
    /// When it stopped or was declared dead.
    pub ended_at: Option<DateTime<Utc>>,
    /// The executor that declared it dead and took its tasks over.
    pub ended_by: Option<String>,
}

/// Filters and paging for listing tasks. Lists are newest first; `after` is
/// the id of the last task of the previous page.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TaskFilter {
    pub state: Option<TaskState>,
    pub kind: Option<String>,
    pub parent_id: Option<Uuid>,
    pub after: Option<Uuid>,
    pub limit: u32,
}

/// Checks that a kind name can be used in addresses (`pool/<kind>`): 1 to
/// 128 ASCII letters, digits, `-`, `_`, `.` or `:`.
pub fn validate_kind_name(name: &str) -> Result<(), crate::error::Error> {
    courier_bus::Address::pool(name).map(|_| ()).map_err(|_| {
        crate::error::Error::Invalid(format!(
            "kind {name:?} must be 1 to 128 ASCII letters, digits, '-', '_', '.' or ':'"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_names_round_trip() {
        for s in TaskState::ALL {
            assert_eq!(s.as_str().parse::<TaskState>().unwrap(), s);
            assert_eq!(
                serde_json::to_value(s).unwrap(),
                serde_json::json!(s.as_str())
            );
        }
        assert!("done".parse::<TaskState>().is_err());
    }

    #[test]
    fn state_machine_allows_only_the_drawn_transitions() {
        use TaskState::*;
        let allowed = [
            (Pending, Running),
            (Pending, Cancelled),
            (Running, Suspended),
            (Suspended, Running),
            (Running, Succeeded),
            (Running, Failed),
            (Running, Cancelled),
            (Suspended, Succeeded),
            (Suspended, Failed),
            (Suspended, Cancelled),
            (Running, Pending),
            (Suspended, Pending),
        ];
        for from in TaskState::ALL {
            for to in TaskState::ALL {
                assert_eq!(
                    from.can_become(to),
                    allowed.contains(&(from, to)),
                    "{from} -> {to}"
                );
            }
        }
        for s in TaskState::ALL {
            if s.is_final() {
                assert!(TaskState::ALL.iter().all(|t| !s.can_become(*t)));
            }
        }
    }
}
