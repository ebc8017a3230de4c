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

use crate::options::TaskOptions;

/// The current time as the store keeps it (UTC, microsecond precision, which
/// is what PostgreSQL stores; SQLite gets the same value).
pub fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

/// Where a task is in its life.
///
/// ```text
/// scheduled ──due──▶ pending ──claim──▶ running ◀──────▶ suspended
///    ▲   │              │                 │                  │
///    │   │              │                 ├─▶ succeeded      │
///    │   │              │                 ├─▶ failed    ◀────┤ (cancel, takeover)
///    │   └──cancel──────┴──cancel──▶ cancelled ◀─────────────┘
///    └──── a failed attempt with attempts left (running/suspended) ─┘
/// running/suspended ──executor lost, or a clean stop──▶ pending
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum TaskState {
    /// Not before its `run_at`: a delayed start, or a retry waiting out its
    /// backoff. Becomes `pending` when due.
    Scheduled,
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
    pub const ALL: [TaskState; 7] = [
        TaskState::Scheduled,
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
            TaskState::Scheduled => "scheduled",
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
            (Scheduled, Pending | Cancelled)
                | (Pending, Running)
                | (Pending, Cancelled)
                | (Running, Suspended)
                | (Suspended, Running)
                | (Running | Suspended, Succeeded | Failed | Cancelled)
                | (Running | Suspended, Pending)
                | (Running | Suspended, Scheduled)
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
#[error("unknown task state {0:?} (expected scheduled, pending, running, suspended, succeeded, failed or cancelled)")]
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

/// A durable task. All times are RFC 3339, UTC.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, sqlx::FromRow)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Task {
    pub id: Uuid,
    /// A task kind: 1 to 128 characters of `[A-Za-z0-9._:-]`.
    #[cfg_attr(
        feature = "openapi",
        schema(min_length = 1, max_length = 128, pattern = "^[A-Za-z0-9._:-]{1,128}$")
    )]
    pub kind: String,
    #[sqlx(try_from = "String")]
    pub state: TaskState,
    /// The task's input: any JSON value (null when none was given).
    #[sqlx(json)]
    pub input: Value,
    /// The task's output: any JSON value, or null while it has none.
    #[sqlx(json(nullable))]
    pub output: Option<Value>,
    /// Why the task failed (its last attempt's error) or was cancelled.
    pub error: Option<String>,
    /// The last progress value the run recorded, if any.
    #[sqlx(json(nullable))]
    pub progress: Option<Value>,
    /// The task that spawned this one; null for a top-level task.
    pub parent_id: Option<Uuid>,
    /// The executor that owns the task now, or that ran it last.
    pub executor_id: Option<String>,
    /// Fencing epoch of the current ownership; internal.
    #[serde(skip, default)]
    pub epoch: i64,
    /// The attempt it is on: 1 on the first, one more for each retry. A run
    /// repeated after its executor died or stopped is the same attempt.
    #[cfg_attr(feature = "openapi", schema(minimum = 0))]
    pub attempts: i32,
    /// Whether cancellation has been requested.
    pub cancel_requested: bool,
    /// Someone follows every state change of this task; internal.
    #[serde(skip, default)]
    pub watched: bool,
    pub idempotency_key: Option<String>,
    /// Trace id (32 hex digits) shared by the task, its messages and its sub-tasks.
    #[cfg_attr(feature = "openapi", schema(pattern = "^[0-9a-f]{32}$"))]
    pub trace_id: String,
    pub created_at: DateTime<Utc>,
    /// When an executor first started the task.
    pub started_at: Option<DateTime<Utc>>,
    /// When the task reached a final state.
    pub finished_at: Option<DateTime<Utc>>,
    /// When the task last changed.
    pub updated_at: DateTime<Utc>,
    /// The queue it waits in and runs from.
    #[cfg_attr(feature = "openapi", schema(pattern = "^[a-z0-9_.-]{1,64}$"))]
    pub queue: String,
    /// Within its queue, a higher priority starts first (-100 to 100).
    #[cfg_attr(feature = "openapi", schema(minimum = -100, maximum = 100))]
    pub priority: i32,
    /// Not before this time (`scheduled`); `None` once it may start.
    pub run_at: Option<DateTime<Utc>>,
    /// Attempts allowed: a failed attempt with attempts left is retried.
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 100))]
    pub max_attempts: i32,
    /// The base of the retry backoff, in milliseconds.
    #[cfg_attr(feature = "openapi", schema(minimum = 0))]
    pub backoff_ms: i64,
    /// An attempt running longer is aborted and fails with code `timeout`.
    #[cfg_attr(feature = "openapi", schema(minimum = 1))]
    pub timeout_ms: Option<i64>,
    /// One entry per failed attempt, oldest first.
    #[sqlx(json)]
    pub errors: Vec<AttemptError>,
    /// For a sub-task: the attempt of its parent that spawned it.
    pub parent_attempt: Option<i32>,
    /// What a `suspended` task waits for (`event booted`, `2 sub-tasks`,
    /// `timer`, or several of these); `None` in other states.
    #[serde(default)]
    pub waiting: Option<String>,
    /// The schedule that created it, if one did.
    #[serde(default)]
    pub schedule: Option<String>,
    /// When the current attempt's `timeout_ms` runs out, once its run has
    /// suspended (a replay keeps the attempt's deadline).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_at: Option<DateTime<Utc>>,
    /// On a task just claimed: when it had become pending (created due,
    /// promoted at its `run_at`, woken, handed back). `None` elsewhere;
    /// internal (it measures the time spent waiting in the queue).
    #[serde(skip, default)]
    #[sqlx(default)]
    #[cfg_attr(feature = "openapi", schema(ignore))]
    pub pending_since: Option<DateTime<Utc>>,
}

/// How one attempt failed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AttemptError {
    pub attempt: i32,
    pub error: String,
    pub at: DateTime<Utc>,
    /// `error` (the run returned an error), `panic` or `timeout`.
    #[cfg_attr(feature = "openapi", schema(examples("error", "panic", "timeout")))]
    pub code: String,
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
    /// Queue, priority, delay, retries and timeout; unset ones come from the
    /// kind's defaults, then the global ones.
    #[serde(flatten)]
    pub options: TaskOptions,
}

impl NewTask {
    pub fn new(kind: impl Into<String>, input: Value) -> Self {
        NewTask {
            kind: kind.into(),
            input,
            idempotency_key: None,
            trace_id: None,
            options: TaskOptions::default(),
        }
    }

    pub fn idempotency_key(mut self, key: impl Into<String>) -> Self {
        self.idempotency_key = Some(key.into());
        self
    }

    /// Sets every option at once.
    pub fn options(mut self, options: TaskOptions) -> Self {
        self.options = options;
        self
    }

    /// The queue to run from (default `default`).
    pub fn queue(mut self, queue: impl Into<String>) -> Self {
        self.options = self.options.queue(queue);
        self
    }

    /// Priority within the queue, −100 to 100 (default 0).
    pub fn priority(mut self, priority: i32) -> Self {
        self.options = self.options.priority(priority);
        self
    }

    /// Not before this time.
    pub fn run_at(mut self, at: DateTime<Utc>) -> Self {
        self.options = self.options.run_at(at);
        self
    }

    /// Not before this long from now.
    pub fn delay(mut self, delay: std::time::Duration) -> Self {
        self.options = self.options.delay(delay);
        self
    }

    /// Attempts allowed, 1 to 100.
    pub fn max_attempts(mut self, n: u32) -> Self {
        self.options = self.options.max_attempts(n);
        self
    }

    /// The base of the retry backoff.
    pub fn backoff(mut self, base: std::time::Duration) -> Self {
        self.options = self.options.backoff(base);
        self
    }

    /// The longest an attempt may run.
    pub fn timeout(mut self, limit: std::time::Duration) -> Self {
        self.options = self.options.timeout(limit);
        self
    }
}

/// An event in a task's durable inbox.
#[derive(Clone, Debug, PartialEq, Serialize, sqlx::FromRow)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TaskEvent {
    /// Position in the inbox; events of one task are delivered in this order.
    pub seq: i64,
    pub task_id: Uuid,
    pub name: String,
    /// Any JSON value.
    #[serde(serialize_with = "ser_json")]
    #[cfg_attr(feature = "openapi", schema(value_type = Value))]
    pub payload: Json<Value>,
    pub created_at: DateTime<Utc>,
    /// When a run of the task first took it.
    pub delivered_at: Option<DateTime<Utc>>,
}

fn ser_json<S: serde::Serializer>(v: &Json<Value>, s: S) -> Result<S::Ok, S::Error> {
    v.0.serialize(s)
}

/// One line of a task's state history.
#[derive(Clone, Debug, PartialEq, Serialize, sqlx::FromRow)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HistoryEntry {
    pub id: i64,
    pub task_id: Uuid,
    /// The state before; null for the creation.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<TaskState>))]
    pub from_state: Option<String>,
    #[cfg_attr(feature = "openapi", schema(value_type = TaskState))]
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
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(as = Executor))]
pub struct ExecutorInfo {
    pub id: String,
    pub node: String,
    pub host: String,
    pub pid: i32,
    #[sqlx(try_from = "String")]
    pub state: ExecutorState,
    /// The kinds it runs.
    #[sqlx(json)]
    pub kinds: Vec<String>,
    /// The queues it serves.
    #[sqlx(json)]
    pub queues: Vec<String>,
    /// How many tasks it runs at once.
    #[cfg_attr(feature = "openapi", schema(minimum = 0))]
    pub capacity: i32,
    /// How many tasks it is running now.
    #[cfg_attr(feature = "openapi", schema(minimum = 0))]
    pub running: i32,
    pub started_at: DateTime<Utc>,
    pub last_seen_at: DateTime<Utc>,
    /// When it stopped or was declared dead.
    pub ended_at: Option<DateTime<Utc>>,
    /// The executor that declared it dead and took its tasks over.
    pub ended_by: Option<String>,
    /// A worker's language (`python`, ...); null for a Rust executor.
    pub language: Option<String>,
    /// A worker's name, as it registered; null for a Rust executor.
    pub name: Option<String>,
}

/// Filters and paging for listing tasks. Lists are newest first; `after` is
/// the id of the last task of the previous page.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TaskFilter {
    pub state: Option<TaskState>,
    pub kind: Option<String>,
    pub queue: Option<String>,
    pub parent_id: Option<Uuid>,
    /// Only tasks created by this schedule.
    pub schedule: Option<String>,
    /// Only tasks whose id starts with this prefix ([`IdPrefix`]).
    pub id_prefix: Option<IdPrefix>,
    pub after: Option<Uuid>,
    pub limit: u32,
    /// Leave `input` and `output` unread (`null` in the rows): a page of
    /// a thousand tasks with inputs of a megabyte each is a gigabyte.
    pub without_bodies: bool,
}

/// The start of a task id, as an operator types it: 1 to 32 hex digits,
/// dashes anywhere ignored (`01a24e90-81e2` and `01a24e9081e2` are one
/// prefix). As ids are UUIDv7 (time first), a prefix is a range of ids,
/// read through the primary key: [`IdPrefix::range`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdPrefix(String);

impl std::str::FromStr for IdPrefix {
    type Err = crate::error::Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let hex: String = s
            .chars()
            .filter(|c| *c != '-')
            .map(|c| c.to_ascii_lowercase())
            .collect();
        if hex.is_empty() || hex.len() > 32 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(crate::error::Error::invalid_field(
                "id",
                format!("id {s:?} must be 1 to 32 hex digits (dashes allowed): an id or its start"),
            ));
        }
        Ok(IdPrefix(hex))
    }
}

impl IdPrefix {
    /// The lowest and highest id with this prefix.
    pub fn range(&self) -> (Uuid, Uuid) {
        let pad = |c: char| {
            let mut s = self.0.clone();
            s.extend(std::iter::repeat_n(c, 32 - self.0.len()));
            Uuid::from_u128(u128::from_str_radix(&s, 16).expect("32 hex digits"))
        };
        (pad('0'), pad('f'))
    }
}

/// A queue: its deployment-wide settings and how many of its tasks wait
/// and run now.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(as = Queue))]
pub struct QueueInfo {
    /// A queue name: 1 to 64 characters of `[a-z0-9_.-]`.
    #[cfg_attr(feature = "openapi", schema(pattern = "^[a-z0-9_.-]{1,64}$"))]
    pub name: String,
    /// At most this many of its tasks run at once in the whole deployment
    /// (suspended ones do not count); null: no limit.
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 1_000_000))]
    pub concurrency: Option<i32>,
    /// At most this many starts per second in the whole deployment (bursts
    /// up to max(1, rate_per_s)); null: no limit.
    #[cfg_attr(feature = "openapi", schema(minimum = 0.001, maximum = 1_000_000))]
    pub rate_per_s: Option<f64>,
    /// No task of the queue starts while it is paused (running ones go on).
    pub paused: bool,
    /// Its tasks waiting for their run_at.
    #[cfg_attr(feature = "openapi", schema(minimum = 0))]
    pub scheduled: i64,
    /// Its tasks due, waiting for a claim.
    #[cfg_attr(feature = "openapi", schema(minimum = 0))]
    pub pending: i64,
    /// Its tasks running.
    #[cfg_attr(feature = "openapi", schema(minimum = 0))]
    pub running: i64,
    /// Its tasks suspended.
    #[cfg_attr(feature = "openapi", schema(minimum = 0))]
    pub suspended: i64,
    /// Live executors (and workers) that serve it: with 0, its tasks wait
    /// until one starts.
    #[cfg_attr(feature = "openapi", schema(minimum = 0))]
    pub executors: i64,
}

/// A change to a queue's settings: `None` keeps a setting, `Some(None)`
/// clears a limit.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct QueueUpdate {
    /// At most this many of its tasks run at once in the whole deployment,
    /// 1 to 1000000; null lifts the limit (use paused to stop every start).
    #[serde(default, deserialize_with = "present")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<i64>, minimum = 1, maximum = 1_000_000))]
    pub concurrency: Option<Option<i64>>,
    /// At most this many starts per second in the whole deployment, from
    /// 0.001 (one start every 1000 s) to 1000000 (0.5 is one start every
    /// 2 s); null lifts the limit.
    #[serde(default, deserialize_with = "present")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<f64>, minimum = 0.001, maximum = 1_000_000))]
    pub rate_per_s: Option<Option<f64>>,
    /// true: none of its tasks start (running ones go on); false: they
    /// start again; null or left out: keep the value.
    #[serde(default)]
    pub paused: Option<bool>,
}

/// A field that is present (even as `null`) is `Some`; an absent one
/// stays `None` through `#[serde(default)]`.
fn present<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

impl QueueUpdate {
    /// Sets the concurrency limit (`None` lifts it).
    pub fn concurrency(mut self, n: impl Into<Option<i64>>) -> Self {
        self.concurrency = Some(n.into());
        self
    }

    /// Sets the rate limit in starts per second (`None` lifts it).
    pub fn rate_per_s(mut self, x: impl Into<Option<f64>>) -> Self {
        self.rate_per_s = Some(x.into());
        self
    }

    /// Pauses (`true`) or resumes the queue.
    pub fn paused(mut self, paused: bool) -> Self {
        self.paused = Some(paused);
        self
    }

    /// The largest concurrency limit accepted.
    pub const MAX_CONCURRENCY: i64 = 1_000_000;
    /// The largest rate limit accepted (starts per second).
    pub const MAX_RATE: f64 = 1_000_000.0;
    /// The lowest `rate_per_s`: one start every 1000 s. Lower is no rate a
    /// person means (1e-300 is a start after the universe), and a bucket
    /// refilled that slowly rounds to never.
    pub const MIN_RATE: f64 = 0.001;

    /// Checks the values; a bad one is [`Error::InvalidField`](crate::Error::InvalidField).
    pub fn validate(&self) -> Result<(), crate::error::Error> {
        use crate::error::Error;
        if let Some(Some(n)) = self.concurrency {
            if !(1..=Self::MAX_CONCURRENCY).contains(&n) {
                return Err(Error::invalid_field(
                    "concurrency",
                    format!(
                        "concurrency must be a whole number from 1 to {} or null (use paused to stop every start)",
                        Self::MAX_CONCURRENCY
                    ),
                ));
            }
        }
        if let Some(Some(r)) = self.rate_per_s {
            if !(r.is_finite() && (Self::MIN_RATE..=Self::MAX_RATE).contains(&r)) {
                return Err(Error::invalid_field(
                    "rate_per_s",
                    format!(
                        "rate_per_s must be from {} (one start every {} s) to {} starts per second, or null",
                        Self::MIN_RATE,
                        1.0 / Self::MIN_RATE,
                        Self::MAX_RATE
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// Refuses a string with U+0000 (NUL) as the value of `field`: PostgreSQL
/// cannot store one (not in `text`, not in `jsonb`), so SQLite refuses it
/// too and both databases take the same requests.
pub fn refuse_nul_text(field: &str, s: &str) -> Result<(), crate::error::Error> {
    if s.contains('\0') {
        return Err(crate::error::Error::invalid_field(
            field,
            format!("{field} holds the character U+0000 (NUL), which cannot be stored"),
        ));
    }
    Ok(())
}

/// Refuses a JSON value with U+0000 (NUL) in any string or object key
/// inside it, as `field` (see [`refuse_nul_text`]).
pub fn refuse_nul(field: &str, v: &Value) -> Result<(), crate::error::Error> {
    let mut stack = vec![v];
    while let Some(v) = stack.pop() {
        match v {
            Value::String(s) => refuse_nul_text(field, s)?,
            Value::Array(a) => stack.extend(a),
            Value::Object(o) => {
                for (k, v) in o {
                    refuse_nul_text(field, k)?;
                    stack.push(v);
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// Checks that a kind name can be used in addresses (`pool/<kind>`): 1 to
/// 128 ASCII letters, digits, `-`, `_`, `.` or `:`.
pub fn validate_kind_name(name: &str) -> Result<(), crate::error::Error> {
    courier_bus::Address::pool(name).map(|_| ()).map_err(|_| {
        crate::error::Error::invalid_field(
            "kind",
            format!("kind {name:?} must be 1 to 128 ASCII letters, digits, '-', '_', '.' or ':'"),
        )
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
            (Scheduled, Pending),
            (Scheduled, Cancelled),
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
            (Running, Scheduled),
            (Suspended, Scheduled),
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

/// One step of a task's journal: the last run of `ctx.step(name, …)`.
/// Names starting with `courier.` are courier's own: `courier.sleep.N` (a
/// durable sleep; its output is the wake time) and `courier.deadline.N`
/// (the deadline of a wait for an event).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, sqlx::FromRow)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Step {
    /// Unique within a run of the task.
    pub name: String,
    /// The attempt that ran it last.
    #[cfg_attr(feature = "openapi", schema(minimum = 1))]
    pub attempt: i32,
    /// `succeeded` (its output is replayed from now on) or `failed` (the
    /// next attempt runs it again).
    #[cfg_attr(feature = "openapi", schema(pattern = "^(succeeded|failed)$"))]
    pub state: String,
    /// What it returned (any JSON value), or null when it failed.
    #[sqlx(json(nullable))]
    pub output: Option<Value>,
    /// Why it failed.
    pub error: Option<String>,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
}

impl Step {
    pub const SUCCEEDED: &'static str = "succeeded";
    pub const FAILED: &'static str = "failed";

    /// Whether a replay returns its output instead of running it.
    pub fn succeeded(&self) -> bool {
        self.state == Self::SUCCEEDED
    }
}

/// What a schedule does with slots missed while no process ran (a slot is
/// missed once it is more than `schedule::MISSED_AFTER` (courier-actors) late).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum CatchUp {
    /// Creates no task for them.
    #[default]
    Skip,
    /// Creates one task for all of them.
    One,
    /// Creates one task per missed slot (at most
    /// `schedule::MAX_CATCH_UP` (courier-actors), the latest).
    All,
}

impl CatchUp {
    pub fn as_str(self) -> &'static str {
        match self {
            CatchUp::Skip => "skip",
            CatchUp::One => "one",
            CatchUp::All => "all",
        }
    }
}

impl std::str::FromStr for CatchUp {
    type Err = crate::error::Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "skip" => Ok(CatchUp::Skip),
            "one" => Ok(CatchUp::One),
            "all" => Ok(CatchUp::All),
            _ => Err(crate::error::Error::invalid_field(
                "catch_up",
                format!("catch_up {s:?} must be skip, one or all"),
            )),
        }
    }
}

/// A schedule as its owner gives it: the cron expression, the task each
/// slot creates, and the missed-slot policy.
#[derive(Clone, Debug, PartialEq)]
pub struct ScheduleSpec {
    /// 5 fields (minute hour day-of-month month day-of-week) or 6 with
    /// seconds first; UTC.
    pub cron: String,
    pub kind: String,
    pub input: Value,
    /// The queue options of its tasks (`run_at` has no place here; a
    /// `delay_ms` delays each task from its slot).
    pub options: crate::options::TaskOptions,
    pub catch_up: CatchUp,
    pub enabled: bool,
}

impl ScheduleSpec {
    pub fn new(cron: impl Into<String>, kind: impl Into<String>, input: Value) -> Self {
        ScheduleSpec {
            cron: cron.into(),
            kind: kind.into(),
            input,
            options: Default::default(),
            catch_up: CatchUp::Skip,
            enabled: true,
        }
    }

    pub fn catch_up(mut self, c: CatchUp) -> Self {
        self.catch_up = c;
        self
    }

    pub fn options(mut self, o: crate::options::TaskOptions) -> Self {
        self.options = o;
        self
    }

    pub fn enabled(mut self, on: bool) -> Self {
        self.enabled = on;
        self
    }
}

/// A schedule as stored and shown (the API's JSON: the queue options are
/// fields of their own, null when not set).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Schedule {
    /// A schedule name: 1 to 64 characters of `[a-z0-9_.-]`.
    #[cfg_attr(feature = "openapi", schema(pattern = "^[a-z0-9_.-]{1,64}$"))]
    pub name: String,
    /// When it creates a task, in UTC: 5 fields (minute hour day-of-month
    /// month day-of-week) or 6 (seconds first).
    pub cron: String,
    pub kind: String,
    /// The input of every task it creates.
    pub input: Value,
    pub queue: Option<String>,
    pub priority: Option<i32>,
    pub max_attempts: Option<u32>,
    pub backoff_ms: Option<u64>,
    pub timeout_ms: Option<u64>,
    pub delay_ms: Option<u64>,
    pub catch_up: CatchUp,
    pub enabled: bool,
    /// The next slot; `None` while disabled (or if the expression has no
    /// future slot).
    pub next_run_at: Option<DateTime<Utc>>,
    /// Up to five slots from `next_run_at` on.
    #[serde(default)]
    pub next_runs: Vec<DateTime<Utc>>,
    /// The latest slot that created a task, and that task.
    pub last_run_at: Option<DateTime<Utc>>,
    pub last_task_id: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Schedule {
    /// The task options its tasks are created with.
    pub fn options(&self) -> crate::options::TaskOptions {
        crate::options::TaskOptions {
            queue: self.queue.clone(),
            priority: self.priority,
            run_at: None,
            delay_ms: self.delay_ms,
            max_attempts: self.max_attempts,
            backoff_ms: self.backoff_ms,
            timeout_ms: self.timeout_ms,
        }
    }

    /// The queue its tasks go to.
    pub fn queue(&self) -> &str {
        self.queue
            .as_deref()
            .unwrap_or(crate::options::DEFAULT_QUEUE)
    }
}
