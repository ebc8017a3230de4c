//! The catalogue of the store's SQL: every statement the store sends is
//! produced here, under a name, and nowhere else.
//!
//! A statement whose text is fixed is a `const`; one whose text depends on
//! the dialect, or on a shape (how many kinds, queues or rows it binds,
//! which filters a list applies), is a small function of those. The files
//! beside this one (a file per table) take their SQL from here and bind
//! their values; they spell no SQL of their own (transaction control
//! aside: `BEGIN`, `BEGIN IMMEDIATE`).
//!
//! [`catalogue`] lists every statement for a dialect, each variable one
//! in representative shapes (an arity of 1 and of 3), under the name it
//! has here (`tasks::get()`, `queues::running(3)`). `tests/statements.rs`
//! prepares each of them on both databases after the migrations, so a
//! statement that no longer parses, or names a column that is gone, fails
//! a test rather than a deployment; it also checks that no SQL is left
//! outside this file, and that every statement here is in the catalogue.
//!
//! The fragments statements are built from come first (the columns of a
//! task, states as literals, the fence of a write, the few places where
//! the dialects differ), then a module per file of `sql/`.

use super::Dialect;
use crate::model::{ExecutorState, TaskState};

/// The columns of a task, in `Task` order.
pub(crate) const TASK_COLS: &str = "id, kind, state, input, output, error, progress, parent_id, executor_id, \
     epoch, attempts, cancel_requested, watched, idempotency_key, trace_id, created_at, started_at, \
     finished_at, updated_at, queue, priority, run_at, max_attempts, backoff_ms, timeout_ms, errors, \
     parent_attempt, waiting, schedule, timeout_at";

/// [`TASK_COLS`] of the table aliased `alias`.
pub(crate) fn qualified(alias: &str) -> String {
    TASK_COLS
        .split(", ")
        .map(|c| format!("{alias}.{}", c.trim()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A task state as an SQL literal (`'pending'`): statements name states
/// through [`TaskState`], never by spelling them out.
#[derive(Clone, Copy)]
pub(crate) struct St(pub(crate) TaskState);

impl std::fmt::Display for St {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "'{}'", self.0.as_str())
    }
}

/// The task states that pass a test, as an SQL list (`('a','b')`).
#[derive(Clone, Copy)]
pub(crate) struct States(pub(crate) fn(TaskState) -> bool);

impl std::fmt::Display for States {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<String> = TaskState::ALL
            .into_iter()
            .filter(|s| (self.0)(*s))
            .map(|s| St(s).to_string())
            .collect();
        write!(f, "({})", names.join(","))
    }
}

pub(crate) const SCHEDULED: St = St(TaskState::Scheduled);
pub(crate) const PENDING: St = St(TaskState::Pending);
pub(crate) const RUNNING: St = St(TaskState::Running);
pub(crate) const SUSPENDED: St = St(TaskState::Suspended);
pub(crate) const FAILED: St = St(TaskState::Failed);
pub(crate) const CANCELLED: St = St(TaskState::Cancelled);
/// `succeeded`, `failed`, `cancelled`.
pub(crate) const FINAL: States = States(TaskState::is_final);
/// `running`, `suspended`: held by an executor.
pub(crate) const HELD: States = States(TaskState::is_owned);

/// An executor state as an SQL literal (`'alive'`): statements name
/// executor states through [`ExecutorState`], as task states through
/// [`TaskState`], never by spelling them out.
#[derive(Clone, Copy)]
pub(crate) struct Ex(pub(crate) ExecutorState);

impl std::fmt::Display for Ex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "'{}'", self.0.as_str())
    }
}

pub(crate) const ALIVE: Ex = Ex(ExecutorState::Alive);
pub(crate) const STOPPED: Ex = Ex(ExecutorState::Stopped);
pub(crate) const DEAD: Ex = Ex(ExecutorState::Dead);

/// The fence of a declared death, the one spelling of it: true while the
/// executor whose id is the SQL expression `.0` (`$2`, `u.u_exec`,
/// `tasks.executor_id`) has not been declared dead. The declaration is
/// the fence: nothing an executor writes under an id declared dead lands.
#[derive(Clone, Copy)]
pub(crate) struct NotDead(pub(crate) &'static str);

impl std::fmt::Display for NotDead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "NOT EXISTS (SELECT 1 FROM executors e WHERE e.id = {} AND e.state = {DEAD})",
            self.0
        )
    }
}

/// The `WHERE` clause of a fenced write, with `$2` the executor and `$3` the
/// epoch of the [`Fence`].
pub(crate) struct Owned;

impl std::fmt::Display for Owned {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "executor_id = $2 AND epoch = $3 AND state IN {HELD} AND {}",
            NotDead("$2")
        )
    }
}
pub(crate) const OWNED: Owned = Owned;

/// How a flush of runs' ends begins on PostgreSQL: every statement in it
/// reads tasks, inboxes and watchers by key, and the planner is told so.
/// Its statistics lag behind a young task table that grows by thousands a
/// second: under `cargo bench --bench http` it joined a flush of 80 ends
/// to a sequential scan of 13,500 tasks (9.5 of 13.5 ms), and under the
/// throughput bench it walked an owner's held tasks for every end. One
/// simple-protocol round trip, as the plain `BEGIN` was; the settings end
/// with the transaction, and the history trigger keeps its own (migration
/// 0010).
pub(crate) const KEYED_BEGIN: &str = "BEGIN; SET LOCAL enable_seqscan = off; \
     SET LOCAL enable_hashjoin = off; SET LOCAL enable_mergejoin = off";

/// `$start, $start+1, …` for an `IN (…)` list of `n` values.
pub(crate) fn placeholders(start: usize, n: usize) -> String {
    (start..start + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The columns a new task sets, in the order `creates::bind_insert`
/// binds them from `$1`.
pub(crate) const INSERT_COLS: &str = "id, kind, state, input, idempotency_key, trace_id, changed_by, \
     created_at, updated_at, queue, priority, run_at, max_attempts, backoff_ms, timeout_ms, schedule";
pub(crate) const INSERT_VALUES: &str =
    "$1, $2, $3, $4, $5, $6, $7, $8, $8, $9, $10, $11, $12, $13, $14, $15";

/// A subquery yielding the task ids of parameter `$n`, bound as
/// `ids_json`: one SQL text whatever the number of ids (so one
/// prepared statement), where an `IN ($1, $2, …)` list would make one
/// per count.
pub(crate) fn id_set(d: Dialect, n: usize) -> String {
    match d {
        Dialect::Sqlite => {
            format!("(SELECT unhex(replace(value, '-', '')) FROM json_each(${n}))")
        }
        Dialect::Postgres => format!("(SELECT jsonb_array_elements_text(${n}::jsonb)::uuid)"),
    }
}

/// A table read from the JSON array of objects bound as `$n`, named
/// `alias`, with `columns` (name, PostgreSQL type): `jsonb_to_recordset`
/// on PostgreSQL, `json_each` on SQLite (where a `uuid` column is read
/// from its text form into the blob the tables hold). One SQL text,
/// one prepared statement, whatever the number of rows.
pub(crate) fn recordset(d: Dialect, n: usize, alias: &str, columns: &[(&str, &str)]) -> String {
    let list = |f: &dyn Fn(&str, &str) -> String| {
        columns
            .iter()
            .map(|(c, t)| f(c, t))
            .collect::<Vec<_>>()
            .join(", ")
    };
    match d {
        Dialect::Postgres => format!(
            "jsonb_to_recordset(${n}::jsonb) AS {alias}({})",
            list(&|c, t| format!("{c} {t}"))
        ),
        Dialect::Sqlite => format!(
            "(SELECT {} FROM json_each(${n})) AS {alias}",
            list(&|c, t| match t {
                "uuid" => format!("unhex(replace(json_extract(value, '$.{c}'), '-', '')) AS {c}"),
                _ => format!("json_extract(value, '$.{c}') AS {c}"),
            })
        ),
    }
}

/// `column`, spelled so that no planner picks an index on it (SQLite's
/// unary `+`, PostgreSQL's `|| ''`, both on text columns): for the
/// statements whose plans a planner got wrong when its statistics lag
/// behind a table that grows and churns fast (see the callers).
pub(crate) fn unindexed(d: Dialect, column: &str) -> String {
    match d {
        Dialect::Postgres => format!("({column} || '')"),
        Dialect::Sqlite => format!("+{column}"),
    }
}

/// The cast that turns JSON text into the JSON column type.
pub(crate) fn json_cast(d: Dialect) -> &'static str {
    match d {
        Dialect::Postgres => "::jsonb",
        Dialect::Sqlite => "",
    }
}

/// The row lock a transaction takes on a task it reads before deciding
/// something another transaction's finish could change. PostgreSQL
/// (read committed) needs `FOR SHARE` so the two serialize on the row;
/// SQLite write transactions (`BEGIN IMMEDIATE`) are serial already.
pub(crate) fn share_lock(d: Dialect) -> &'static str {
    match d {
        Dialect::Sqlite => "",
        Dialect::Postgres => "FOR SHARE",
    }
}

/// The lock a transaction takes on a task row it may change after it
/// looked: `FOR UPDATE` on PostgreSQL; nothing on SQLite, whose write
/// transactions are serial.
pub(crate) fn row_lock(d: Dialect) -> &'static str {
    match d {
        Dialect::Sqlite => "",
        Dialect::Postgres => "FOR UPDATE",
    }
}

/// `col` is one of the ids the CTE `cte` picked, as a condition that
/// reads `tasks` by key whatever the planner believes: on PostgreSQL
/// `col = ANY(ARRAY(SELECT id FROM cte))`, an array built once (an
/// InitPlan) and probed through the primary key, where `IN (SELECT …)`
/// let a generic plan, whose statistics said "nothing pending", turn
/// the update into a nested loop of every pending task against the
/// picked ids (1.29 million comparisons, 290 ms a claim, after a quiet
/// spell). SQLite plans `IN (SELECT …)` as a lookup by key already.
pub(crate) fn in_set(d: Dialect, col: &str, cte: &str) -> String {
    match d {
        Dialect::Sqlite => format!("{col} IN (SELECT id FROM {cte})"),
        Dialect::Postgres => format!("{col} = ANY(ARRAY(SELECT id FROM {cte}))"),
    }
}

/// `col` is one of the ids of the JSON array bound as `$n`, as a
/// condition that reads `tasks` by key whatever the planner believes
/// (see [`in_set`]): `IN (SELECT jsonb_array_elements…)`
/// beside a `parent_id` let generic plans after a quiet spell walk
/// 50,000 to 180,000 rows for a fan-out's 1,000 sub-tasks
/// (`tests/plans.rs`).
pub(crate) fn key_in(d: Dialect, col: &str, n: usize) -> String {
    match d {
        Dialect::Sqlite => format!("{col} IN {}", id_set(d, n)),
        Dialect::Postgres => {
            format!("{col} = ANY(ARRAY(SELECT jsonb_array_elements_text(${n}::jsonb)::uuid))")
        }
    }
}

/// [`TASK_COLS`] with `input` and `output` left unread (JSON `null`
/// in their place).
pub(crate) fn cols_without_bodies(d: Dialect) -> String {
    let (input, output) = match d {
        Dialect::Sqlite => ("'null' AS input", "NULL AS output"),
        Dialect::Postgres => ("'null'::jsonb AS input", "NULL::jsonb AS output"),
    };
    TASK_COLS
        .split(", ")
        .map(|c| match c.trim() {
            "input" => input.to_string(),
            "output" => output.to_string(),
            other => other.to_string(),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// `mod.rs`: the store's own.
pub(crate) mod store {
    /// A trivial query, for health checks.
    pub(crate) const PING: &str = "SELECT 1";
    /// PostgreSQL: no statement timeout on the connection that migrates.
    pub(crate) const NO_STATEMENT_TIMEOUT: &str = "SET statement_timeout = 0";
    /// PostgreSQL: the statement timeout back to the connection's own.
    pub(crate) const RESET_STATEMENT_TIMEOUT: &str = "RESET statement_timeout";
}

/// `tasks.rs`.
pub(crate) mod tasks {
    use super::*;
    use crate::model::TaskFilter;

    pub(crate) fn get() -> String {
        format!("SELECT {TASK_COLS} FROM tasks WHERE id = $1")
    }

    /// A page of tasks under the filters `f` sets (their values bound in
    /// this order: state, kind, queue, parent, schedule, the id prefix's
    /// two ends, after, then the limit).
    pub(crate) fn list(d: Dialect, f: &TaskFilter) -> String {
        let mut conds: Vec<String> = Vec::new();
        let mut n = 0;
        let mut next = || {
            n += 1;
            format!("${n}")
        };
        if f.state.is_some() {
            conds.push(format!("state = {}", next()));
        }
        if f.kind.is_some() {
            conds.push(format!("kind = {}", next()));
        }
        if f.queue.is_some() {
            conds.push(format!("queue = {}", next()));
        }
        if f.parent_id.is_some() {
            conds.push(format!("parent_id = {}", next()));
        }
        if f.schedule.is_some() {
            conds.push(format!("schedule = {}", next()));
        }
        if f.id_prefix.is_some() {
            // A range of the primary key: UUIDv7 ids compare by their bytes.
            conds.push(format!("id BETWEEN {} AND {}", next(), next()));
        }
        if f.after.is_some() {
            conds.push(format!("id < {}", next()));
        }
        let limit = next();
        let filter = if conds.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", conds.join(" AND "))
        };
        let cols = if f.without_bodies {
            cols_without_bodies(d)
        } else {
            TASK_COLS.to_string()
        };
        format!("SELECT {cols} FROM tasks {filter} ORDER BY id DESC LIMIT {limit}")
    }

    pub(crate) fn children_page(d: Dialect, bodies: bool) -> String {
        let cols = if bodies {
            TASK_COLS.to_string()
        } else {
            cols_without_bodies(d)
        };
        format!(
            "SELECT {cols} FROM tasks WHERE parent_id = $1 AND ($2 IS NULL OR \
               (parent_attempt, spawn_seq) > (SELECT parent_attempt, spawn_seq FROM tasks WHERE id = $2)) \
             ORDER BY parent_attempt, spawn_seq LIMIT $3"
        )
    }

    pub(crate) const HISTORY_PAGE: &str =
        "SELECT id, task_id, from_state, to_state, changed_by, owner, attempt, at \
             FROM task_history WHERE task_id = $1 AND id > $2 ORDER BY id LIMIT $3";

    pub(crate) fn children() -> String {
        format!(
            "SELECT {TASK_COLS} FROM tasks WHERE parent_id = $1 ORDER BY parent_attempt, spawn_seq"
        )
    }

    pub(crate) fn open_descendants() -> String {
        format!(
            "WITH RECURSIVE d(id) AS ( \
                 SELECT id FROM tasks WHERE parent_id = $1 \
                 UNION ALL SELECT t.id FROM tasks t JOIN d ON t.parent_id = d.id) \
             SELECT {TASK_COLS} FROM tasks WHERE id IN (SELECT id FROM d) AND state NOT IN {FINAL}"
        )
    }

    pub(crate) fn set_owned_state() -> String {
        format!(
            "UPDATE tasks SET state = $4, updated_at = $5, changed_by = $2 \
             WHERE id = $1 AND {OWNED} \
             RETURNING {TASK_COLS}"
        )
    }

    pub(crate) fn set_progress() -> String {
        format!("UPDATE tasks SET progress = $4, updated_at = $5 WHERE id = $1 AND {OWNED}")
    }

    pub(crate) fn request_cancel() -> String {
        let woken = format!("state = {SUSPENDED} AND executor_id IS NULL");
        format!(
            "UPDATE tasks SET cancel_requested = TRUE, \
                 run_at = CASE WHEN {woken} THEN NULL ELSE run_at END, \
                 waiting = CASE WHEN {woken} THEN NULL ELSE waiting END, \
                 changed_by = CASE WHEN {woken} THEN 'cancel' ELSE changed_by END, \
                 state = CASE WHEN {woken} THEN {PENDING} ELSE state END \
             WHERE id = $1 AND state NOT IN {FINAL}"
        )
    }

    /// In SET, `state` and `attempts` are the row's values before it.
    /// `resume = FALSE`: the new attempt is a fresh run, never a replay
    /// (a task woken from a suspension and cancelled before its claim is
    /// still marked to resume, and a replay keeps its attempt count and
    /// its old deadline).
    pub(crate) fn retry_now() -> String {
        format!(
            "UPDATE tasks SET state = {PENDING}, run_at = NULL, waiting = NULL, \
                 finished_at = NULL, output = NULL, cancel_requested = FALSE, \
                 resume = FALSE, timeout_at = NULL, \
                 max_attempts = CASE WHEN state IN ({FAILED}, {CANCELLED}) AND max_attempts <= attempts \
                                     THEN attempts + 1 ELSE max_attempts END, \
                 updated_at = $2, changed_by = $3 \
             WHERE id = $1 AND (state = {SCHEDULED} \
                                OR (state IN ({FAILED}, {CANCELLED}) AND parent_id IS NULL)) \
             RETURNING {TASK_COLS}"
        )
    }

    pub(crate) fn cancel_unclaimed() -> String {
        format!(
            "UPDATE tasks SET state = {CANCELLED}, cancel_requested = TRUE, run_at = NULL, \
                 error = CASE WHEN attempts > 0 THEN 'cancelled while waiting to be retried' \
                              ELSE 'cancelled before it started' END, \
                 finished_at = $3, updated_at = $3, changed_by = $2 \
             WHERE id = $1 AND state IN ({SCHEDULED}, {PENDING}) RETURNING {TASK_COLS}"
        )
    }

    pub(crate) const HISTORY: &str =
        "SELECT id, task_id, from_state, to_state, changed_by, owner, attempt, at \
             FROM task_history WHERE task_id = $1 ORDER BY id";

    pub(crate) fn cancel_requested_owned() -> String {
        format!(
            "SELECT id, trace_id FROM tasks WHERE executor_id = $1 AND state IN {HELD} \
               AND cancel_requested = TRUE LIMIT 1000"
        )
    }

    pub(crate) fn release_orphans() -> String {
        let died = format!(
            "(CASE WHEN {} THEN 0 ELSE 1 END)",
            NotDead("tasks.executor_id")
        );
        let poison = format!("(takeovers + {died} >= $3)");
        format!(
            "UPDATE tasks SET \
                 takeovers = takeovers + {died}, \
                 state = CASE WHEN {poison} THEN {FAILED} ELSE {PENDING} END, \
                 error = CASE WHEN {poison} THEN $4 ELSE error END, \
                 finished_at = CASE WHEN {poison} THEN $2 ELSE finished_at END, \
                 executor_id = CASE WHEN {poison} THEN executor_id ELSE NULL END, \
                 attempts = CASE WHEN {poison} THEN attempts ELSE attempts - 1 END, \
                 updated_at = $2, changed_by = $1 \
             WHERE state IN {HELD} AND executor_id IS NOT NULL \
               AND NOT EXISTS (SELECT 1 FROM executors e WHERE e.id = tasks.executor_id AND e.state = {ALIVE}) \
             RETURNING {TASK_COLS}"
        )
    }

    pub(crate) fn by_id(d: Dialect) -> String {
        format!("SELECT {TASK_COLS} FROM tasks WHERE id IN {}", id_set(d, 1))
    }

    pub(crate) fn pending_of(d: Dialect) -> String {
        format!(
            "SELECT id FROM tasks WHERE id IN {} AND state = {PENDING}",
            id_set(d, 1)
        )
    }
}

/// `watchers.rs`.
pub(crate) mod watchers {
    use super::*;

    /// The task, locked against its finish: `stream` watchers lock it for
    /// update (they update it after), others share the lock.
    pub(crate) fn watch_task(d: Dialect, stream: bool) -> String {
        // A stream watcher also updates the task row: lock it for update
        // from the start, or two watchers holding share locks would
        // deadlock on PostgreSQL.
        let lock = match (d, stream) {
            (Dialect::Postgres, true) => "FOR UPDATE",
            _ => share_lock(d),
        };
        format!("SELECT {TASK_COLS} FROM tasks WHERE id = $1 {lock}")
    }

    pub(crate) const WATCH: &str = "INSERT INTO task_watchers (task_id, address, created_at, stream) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING";
    pub(crate) const MARK_WATCHED: &str =
        "UPDATE tasks SET watched = TRUE WHERE id = $1 AND watched = FALSE";
    pub(crate) const STREAM_WATCHERS: &str =
        "SELECT address FROM task_watchers WHERE task_id = $1 AND stream = TRUE";
    pub(crate) const ADD: &str = "INSERT INTO task_watchers (task_id, address, created_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING";
    pub(crate) const REMOVE: &str = "DELETE FROM task_watchers WHERE task_id = $1 AND address = $2";
    pub(crate) const TAKE: &str = "DELETE FROM task_watchers WHERE task_id = $1 RETURNING address";
}

/// `workers.rs`.
pub(crate) mod workers {
    pub(crate) const LABEL: &str = "UPDATE executors SET language = $2, name = $3 WHERE id = $1";
}

/// `events.rs`.
pub(crate) mod events {
    use super::*;

    /// The task's row is locked first: a run suspending at the same time
    /// either sees this event or is woken by it (see `journal`).
    pub(crate) fn add(d: Dialect) -> String {
        format!(
            "INSERT INTO task_events (task_id, name, payload, created_at) \
             SELECT $1, $2, $3, $4 FROM tasks WHERE id = $1 AND state NOT IN {FINAL} {lock} \
             RETURNING seq, task_id, name, payload, created_at, delivered_at",
            lock = row_lock(d)
        )
    }

    pub(crate) fn wake() -> String {
        format!(
            "UPDATE tasks SET state = {PENDING}, run_at = NULL, waiting = NULL, updated_at = $2, changed_by = 'event' \
             WHERE id = $1 AND state = {SUSPENDED} AND executor_id IS NULL AND wake_event = $3 \
             RETURNING {TASK_COLS}"
        )
    }

    /// The inboxes of the tasks of the requests bound as `$1` (a JSON
    /// array of `{r_id, r_after}`). The requests are the outer side, each
    /// an index range of its task's inbox past its `seq`: SQLite keeps a
    /// `CROSS JOIN`'s order; PostgreSQL is made to by a `LATERAL` subquery
    /// it cannot flatten (its `ORDER BY`), since it guesses 100 rows for
    /// the recordset and, on an inbox table of few tasks, would hash it
    /// against a scan of the whole table (as it did for `task_id IN (…)`).
    pub(crate) fn inboxes_after(d: Dialect) -> String {
        let requests = recordset(d, 1, "r", &[("r_id", "uuid"), ("r_after", "bigint")]);
        match d {
            Dialect::Sqlite => format!(
                "SELECT e.seq, e.task_id, e.name, e.payload, e.created_at, e.delivered_at \
                 FROM {requests} CROSS JOIN task_events e \
                 WHERE e.task_id = r.r_id AND e.seq > r.r_after ORDER BY e.seq"
            ),
            Dialect::Postgres => format!(
                "SELECT e.seq, e.task_id, e.name, e.payload, e.created_at, e.delivered_at \
                 FROM {requests} CROSS JOIN LATERAL (\
                     SELECT seq, task_id, name, payload, created_at, delivered_at FROM task_events \
                     WHERE task_id = r.r_id AND seq > r.r_after ORDER BY seq) AS e \
                 ORDER BY e.seq"
            ),
        }
    }

    pub(crate) const MARK_DELIVERED: &str = "UPDATE task_events SET delivered_at = $3 WHERE task_id = $1 AND seq = $2 AND delivered_at IS NULL";
    pub(crate) const MARK_DELIVERED_BETWEEN: &str = "UPDATE task_events SET delivered_at = $4 WHERE task_id = $1 AND seq > $2 AND seq <= $3 AND delivered_at IS NULL";

    pub(crate) fn undelivered() -> String {
        format!(
            "SELECT e.seq, e.task_id, e.name, e.payload, e.created_at, e.delivered_at, t.trace_id \
             FROM task_events e JOIN tasks t ON t.id = e.task_id \
             WHERE e.delivered_at IS NULL AND e.created_at < $2 AND t.executor_id = $1 \
               AND t.state IN {HELD} ORDER BY e.seq LIMIT 1000"
        )
    }

    pub(crate) const AFTER: &str =
        "SELECT seq, task_id, name, payload, created_at, delivered_at FROM task_events \
             WHERE task_id = $1 AND seq > $2 ORDER BY seq";
    pub(crate) const PAGE: &str =
        "SELECT seq, task_id, name, payload, created_at, delivered_at FROM task_events \
             WHERE task_id = $1 AND seq > $2 ORDER BY seq LIMIT $3";
}

/// `executors.rs`.
pub(crate) mod executors {
    use super::*;

    /// The columns of an `ExecutorInfo`.
    const EXECUTOR_COLS: &str = "id, node, host, pid, state, kinds, queues, capacity, running, \
     started_at, last_seen_at, ended_at, ended_by, language, name";

    pub(crate) fn register() -> String {
        format!(
            "INSERT INTO executors (id, node, host, pid, pid_space, pid_start, state, kinds, capacity, running, started_at, last_seen_at, \
                 queues, kind_options) \
             VALUES ($1, $2, $3, $4, $5, $6, {ALIVE}, $7, $8, 0, $9, COALESCE($10, CURRENT_TIMESTAMP), $11, $12)"
        )
    }

    pub(crate) fn heartbeat() -> String {
        format!(
            "UPDATE executors SET last_seen_at = COALESCE($2, CURRENT_TIMESTAMP), running = $3 WHERE id = $1 AND state = {ALIVE}"
        )
    }

    pub(crate) fn stop() -> String {
        format!(
            "UPDATE executors SET state = {STOPPED}, running = 0, ended_at = $2 WHERE id = $1 AND state = {ALIVE}"
        )
    }

    /// Staleness is read on the clock the heartbeats were written with
    /// (see `seen_now`): the database's on PostgreSQL (`$2` seconds), the
    /// writer's on SQLite (`$2` a time).
    pub(crate) fn stale(d: Dialect) -> String {
        let cols = EXECUTOR_COLS;
        match d {
            Dialect::Postgres => format!(
                "SELECT {cols} FROM executors WHERE state = {ALIVE} AND id <> $1 \
                   AND last_seen_at < CURRENT_TIMESTAMP - make_interval(secs => $2)"
            ),
            Dialect::Sqlite => format!(
                "SELECT {cols} FROM executors WHERE state = {ALIVE} AND id <> $1 AND last_seen_at < $2"
            ),
        }
    }

    pub(crate) fn alive_in_space() -> String {
        format!(
            "SELECT id, pid, pid_start FROM executors \
             WHERE state = {ALIVE} AND id <> $1 AND pid_space = $2"
        )
    }

    pub(crate) fn declare_dead() -> String {
        format!(
            "UPDATE executors SET state = {DEAD}, ended_at = $3, ended_by = $2, running = 0 \
             WHERE id = $1 AND state = {ALIVE}"
        )
    }

    pub(crate) fn all() -> String {
        format!("SELECT {EXECUTOR_COLS} FROM executors ORDER BY started_at DESC")
    }

    pub(crate) fn page() -> String {
        format!(
            "SELECT {EXECUTOR_COLS} FROM executors WHERE $1 IS NULL OR \
               (started_at, id) < (SELECT started_at, id FROM executors WHERE id = $1) \
             ORDER BY started_at DESC, id DESC LIMIT $2"
        )
    }

    pub(crate) fn get() -> String {
        format!("SELECT {EXECUTOR_COLS} FROM executors WHERE id = $1")
    }

    pub(crate) fn kind_defaults() -> String {
        format!(
            "SELECT kinds, kind_options FROM executors WHERE state = {ALIVE} OR language IS NOT NULL \
                 ORDER BY state = {ALIVE} DESC, started_at DESC"
        )
    }
}

/// `stats.rs`.
pub(crate) mod stats {
    use super::*;

    /// The database's current minute (Unix time / 60, rounded down), as SQL.
    /// PostgreSQL's `EXTRACT(EPOCH …)` is a fraction: cast to an integer it
    /// would round to the nearest second, and put the last half-second of a
    /// minute in the next.
    fn minute_now(d: Dialect) -> &'static str {
        match d {
            Dialect::Sqlite => "(unixepoch() / 60)",
            Dialect::Postgres => "(floor(EXTRACT(EPOCH FROM now()) / 60)::bigint)",
        }
    }

    /// `SELECT queue, state, n` over `task_throughput`'s rows that `filter`
    /// keeps: each minute's finishes as one row per final state (SQLite).
    fn finished_in_minutes(filter: &str) -> String {
        format!(
            "SELECT queue, 'succeeded' AS state, succeeded AS n FROM task_throughput {filter} \
             UNION ALL SELECT queue, 'failed', failed FROM task_throughput {filter} \
             UNION ALL SELECT queue, 'cancelled', cancelled FROM task_throughput {filter}"
        )
    }

    /// `SELECT queue, state, n`: the tasks of each queue in each state,
    /// pairs with none left out; `active` keeps the unfinished states only,
    /// and `$1` (NULL for all) one queue.
    pub(crate) fn counts(d: Dialect, active: bool) -> String {
        let from_counters = |states: &str| {
            format!(
                "SELECT queue, state, CAST(SUM(n) AS BIGINT) AS n FROM task_counts \
                 WHERE {states} ($1 IS NULL OR queue = $1) \
                 GROUP BY queue, state HAVING SUM(n) <> 0"
            )
        };
        let unfinished = format!("state IN ({SCHEDULED}, {PENDING}, {RUNNING}, {SUSPENDED})");
        match (d, active) {
            (_, true) => from_counters(&format!("{unfinished} AND")),
            (Dialect::Postgres, false) => from_counters(""),
            (Dialect::Sqlite, false) => format!(
                "SELECT queue, state, SUM(n) AS n FROM ( \
                     SELECT queue, state, n FROM task_counts UNION ALL {}) f \
                 WHERE $1 IS NULL OR queue = $1 \
                 GROUP BY queue, state HAVING SUM(n) <> 0",
                finished_in_minutes("")
            ),
        }
    }

    pub(crate) fn by_queue(d: Dialect) -> String {
        format!(
            "SELECT queue, state, n FROM ({}) c ORDER BY queue, state",
            counts(d, false)
        )
    }

    pub(crate) fn minute(d: Dialect) -> String {
        format!("SELECT {}", minute_now(d))
    }

    pub(crate) const THROUGHPUT: &str =
        "SELECT minute, CAST(SUM(succeeded) AS BIGINT), CAST(SUM(failed) AS BIGINT), \
                    CAST(SUM(cancelled) AS BIGINT) \
             FROM task_throughput WHERE minute >= $1 GROUP BY minute";

    /// SQLite: the first minute kept, `$1` minutes back.
    pub(crate) fn cutoff() -> String {
        format!("SELECT {} - $1", minute_now(Dialect::Sqlite))
    }

    /// SQLite: the finishes of the minutes before `$1` into `task_counts`.
    pub(crate) fn fold_minutes() -> String {
        format!(
            "INSERT INTO task_counts (queue, state, shard, n) \
                     SELECT queue, state, 0, SUM(n) FROM ({}) f \
                     GROUP BY queue, state \
                     ON CONFLICT (queue, state, shard) DO UPDATE SET n = n + excluded.n",
            finished_in_minutes("WHERE minute < $1")
        )
    }

    /// SQLite: the minutes before `$1` dropped.
    pub(crate) const DROP_MINUTES: &str = "DELETE FROM task_throughput WHERE minute < $1";

    /// PostgreSQL: the minutes older than `$1` minutes dropped.
    pub(crate) fn drop_old_minutes() -> String {
        format!(
            "DELETE FROM task_throughput WHERE minute < {} - $1",
            minute_now(Dialect::Postgres)
        )
    }

    /// PostgreSQL: the counter shards of sessions gone folded into shard 0.
    pub(crate) const FOLD_COUNTS: &str = "WITH gone AS ( \
                         DELETE FROM task_counts WHERE shard <> 0 \
                         AND shard NOT IN (SELECT pid FROM pg_stat_activity) \
                         RETURNING queue, state, n) \
                     INSERT INTO task_counts AS c (queue, state, shard, n) \
                     SELECT queue, state, 0, SUM(n) FROM gone \
                     GROUP BY queue, state ORDER BY queue, state \
                     ON CONFLICT (queue, state, shard) DO UPDATE SET n = c.n + excluded.n";

    /// PostgreSQL: the throughput shards of sessions gone folded into
    /// shard 0.
    pub(crate) const FOLD_THROUGHPUT: &str = "WITH gone AS ( \
                         DELETE FROM task_throughput WHERE shard <> 0 \
                         AND shard NOT IN (SELECT pid FROM pg_stat_activity) \
                         RETURNING minute, queue, succeeded, failed, cancelled) \
                     INSERT INTO task_throughput AS t \
                         (minute, queue, shard, succeeded, failed, cancelled) \
                     SELECT minute, queue, 0, SUM(succeeded), SUM(failed), SUM(cancelled) \
                     FROM gone GROUP BY minute, queue ORDER BY minute, queue \
                     ON CONFLICT (minute, queue, shard) DO UPDATE SET \
                         succeeded = t.succeeded + excluded.succeeded, \
                         failed = t.failed + excluded.failed, \
                         cancelled = t.cancelled + excluded.cancelled";
}

/// `retention.rs`.
pub(crate) mod retention {
    use super::*;

    pub(crate) fn delete_executors() -> String {
        format!(
            "DELETE FROM executors WHERE id IN (SELECT id FROM executors \
             WHERE state IN ({DEAD}, {STOPPED}) AND ended_at < $1 LIMIT $2)"
        )
    }

    pub(crate) const DUE_ROOTS: &str =
        "SELECT id FROM tasks WHERE parent_id IS NULL AND state = $1 AND finished_at < $2 \
                 ORDER BY finished_at LIMIT $3";

    /// Every task of the trees of the `n` roots bound, with its depth and
    /// state. The state rides along in the recursion: a join back to
    /// `tasks` after it was planned, on PostgreSQL at a million rows, as a
    /// hash join over the whole table (0.6 s a batch).
    pub(crate) fn trees(n: usize) -> String {
        format!(
            "WITH RECURSIVE tree(root, id, depth, state) AS ( \
                     SELECT id, id, 0, state FROM tasks WHERE id IN ({}) \
                     UNION ALL SELECT tree.root, t.id, tree.depth + 1, t.state \
                     FROM tasks t JOIN tree ON t.parent_id = tree.id) \
                 SELECT root, id, depth, state FROM tree",
            placeholders(1, n)
        )
    }

    /// The tables whose rows belong to a task, deleted before it.
    pub(crate) const MEMBER_TABLES: [&str; 4] =
        ["task_history", "task_events", "task_watchers", "task_steps"];

    /// The rows of `table` (one of [`MEMBER_TABLES`]) of the `n` tasks
    /// bound.
    pub(crate) fn delete_rows_of(table: &str, n: usize) -> String {
        format!(
            "DELETE FROM {table} WHERE task_id IN ({})",
            placeholders(1, n)
        )
    }

    pub(crate) fn delete_tasks(n: usize) -> String {
        format!(
            "DELETE FROM tasks WHERE id IN ({}) RETURNING state",
            placeholders(1, n)
        )
    }
}

/// `schedules.rs`.
pub(crate) mod schedules {
    use super::*;

    const SCHEDULE_COLS: &str =
        "name, cron, kind, input, options, catch_up, enabled, next_run_at, \
     last_run_at, last_task_id, created_at, updated_at";

    pub(crate) fn existing(d: Dialect) -> String {
        format!(
            "SELECT cron, enabled, next_run_at FROM schedules WHERE name = $1 {}",
            row_lock(d)
        )
    }

    pub(crate) fn insert() -> String {
        format!(
            "INSERT INTO schedules ({SCHEDULE_COLS}) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, NULL, NULL, $9, $9) RETURNING {SCHEDULE_COLS}"
        )
    }

    pub(crate) fn update() -> String {
        format!(
            "UPDATE schedules SET cron = $2, kind = $3, input = $4, options = $5, catch_up = $6, \
                 enabled = $7, next_run_at = $8, updated_at = $9 \
             WHERE name = $1 RETURNING {SCHEDULE_COLS}"
        )
    }

    pub(crate) fn get() -> String {
        format!("SELECT {SCHEDULE_COLS} FROM schedules WHERE name = $1")
    }

    pub(crate) fn all() -> String {
        format!("SELECT {SCHEDULE_COLS} FROM schedules ORDER BY name")
    }

    pub(crate) const REMOVE: &str = "DELETE FROM schedules WHERE name = $1";

    pub(crate) fn due() -> String {
        format!(
            "SELECT {SCHEDULE_COLS} FROM schedules WHERE enabled AND next_run_at <= $1 \
             ORDER BY next_run_at LIMIT $2"
        )
    }

    pub(crate) const NEXT_DUE: &str =
        "SELECT next_run_at FROM schedules WHERE enabled AND next_run_at IS NOT NULL \
             ORDER BY next_run_at LIMIT 1";

    pub(crate) fn advance() -> String {
        format!(
            "UPDATE schedules SET next_run_at = $2, updated_at = $3 \
             WHERE name = $1 AND enabled AND next_run_at = $4 RETURNING {SCHEDULE_COLS}"
        )
    }

    pub(crate) fn last() -> String {
        format!(
            "UPDATE schedules SET last_run_at = $2, last_task_id = $3 WHERE name = $1 \
             RETURNING {SCHEDULE_COLS}"
        )
    }
}

/// `journal.rs`: the journal, suspensions, and `wake_parents!`.
pub(crate) mod journal {
    use super::*;

    /// `wake_parents!`'s lock of the parents (`$1`, a JSON array of ids),
    /// in the order of their ids: PostgreSQL only (SQLite's writes are
    /// serial).
    pub(crate) fn lock_parents() -> String {
        format!(
            "SELECT id FROM tasks WHERE {ids} ORDER BY id FOR NO KEY UPDATE",
            ids = key_in(Dialect::Postgres, "id", 1)
        )
    }

    /// `wake_parents!`'s `task_awaits` rows of the sub-tasks `$1` (a JSON
    /// array of ids) taken away, giving the parent of each.
    pub(crate) fn take_awaits(d: Dialect) -> String {
        format!(
            "DELETE FROM task_awaits WHERE {ids} RETURNING parent_id",
            ids = key_in(d, "child_id", 1)
        )
    }

    /// `wake_parents!`'s count: each suspended parent of `$1` (what
    /// `count_by_parent` made) has its awaited sub-tasks that ended taken
    /// off. By key whatever the planner believes (no join with the
    /// recordset, which a transaction without `KEYED_BEGIN` may hash
    /// against a scan of `tasks`).
    pub(crate) fn wake_count(d: Dialect) -> String {
        let counts = recordset(d, 1, "c", &[("p", "uuid"), ("n", "int")]);
        let parents = match d {
            Dialect::Postgres => format!("tasks.id = ANY(ARRAY(SELECT c.p FROM {counts}))"),
            Dialect::Sqlite => format!("tasks.id IN (SELECT c.p FROM {counts})"),
        };
        format!(
            "UPDATE tasks SET awaiting = tasks.awaiting - (SELECT c.n FROM {counts} WHERE c.p = tasks.id) \
         WHERE {parents} AND tasks.state = {SUSPENDED} AND tasks.executor_id IS NULL \
         RETURNING tasks.id, tasks.awaiting"
        )
    }

    /// `wake_parents!`'s wake: the parent whose count reached zero made
    /// `pending` (the count is exact: a suspension sets it to the rows it
    /// wrote, under the lock every end takes first).
    pub(crate) fn wake_parent() -> String {
        format!(
            "UPDATE tasks SET state = {PENDING}, run_at = NULL, waiting = NULL, updated_at = $2, changed_by = $3 \
         WHERE id = $1 AND state = {SUSPENDED} AND executor_id IS NULL \
         RETURNING {TASK_COLS}"
        )
    }

    pub(crate) const STEPS: &str =
        "SELECT name, attempt, state, output, error, started_at, finished_at FROM task_steps \
             WHERE task_id = $1 ORDER BY finished_at, name";

    /// One statement: the task's row is its source, so only the owner
    /// writes, and on PostgreSQL the row's lock orders it against a
    /// takeover. (SQLite needs the `WHERE` to tell ON CONFLICT apart.)
    pub(crate) fn record_step(d: Dialect) -> String {
        format!(
            "INSERT INTO task_steps (task_id, name, attempt, state, output, error, started_at, finished_at) \
             SELECT id, $4, attempts, $5, $6, $7, $8, $9 FROM tasks WHERE id = $1 AND {OWNED} {lock} \
             ON CONFLICT (task_id, name) DO UPDATE SET attempt = excluded.attempt, state = excluded.state, \
                 output = excluded.output, error = excluded.error, started_at = excluded.started_at, \
                 finished_at = excluded.finished_at",
            lock = share_lock(d)
        )
    }

    pub(crate) fn touch() -> String {
        format!(
            "UPDATE tasks SET updated_at = $4 WHERE id = $1 AND {OWNED} RETURNING cancel_requested"
        )
    }

    pub(crate) fn park() -> String {
        format!(
            "UPDATE tasks SET state = {SUSPENDED}, executor_id = NULL, resume = TRUE, run_at = $2, \
                 waiting = $3, updated_at = $4, changed_by = $5, wake_event = $6, timeout_at = $7, \
                 awaiting = $8 \
             WHERE id = $1 RETURNING {TASK_COLS}"
        )
    }

    pub(crate) const FORGET_AWAITS: &str = "DELETE FROM task_awaits WHERE parent_id = $1";

    pub(crate) fn awaits(d: Dialect) -> String {
        format!(
            "INSERT INTO task_awaits (child_id, parent_id) \
             SELECT id, parent_id FROM tasks \
             WHERE {children} AND parent_id = $1 AND {state} NOT IN {FINAL}",
            children = key_in(d, "id", 2),
            state = unindexed(d, "state")
        )
    }

    pub(crate) const EVENTS_PAST: &str =
        "SELECT COUNT(*) FROM task_events WHERE task_id = $1 AND seq > $2 AND name = $3";
}

/// `queues.rs`: the claim, promotion, and the queues' settings.
pub(crate) mod queues {
    use super::*;

    /// The settings of the limited queues among the `n` names bound from
    /// `$1`, in name order: executors serving overlapping sets of limited
    /// queues never wait for each other in a circle. `locked`: their rows
    /// locked (PostgreSQL's `FOR UPDATE`), for the claim's transaction.
    pub(crate) fn limits(d: Dialect, n: usize, locked: bool) -> String {
        let (lock, clock) = match d {
            Dialect::Postgres => ("FOR UPDATE", "clock_timestamp()"),
            Dialect::Sqlite => ("", "NULL"),
        };
        let lock = if locked { lock } else { "" };
        format!(
            "SELECT name, concurrency, rate_per_s, paused, tokens, tokens_at, {clock} AS clock \
                 FROM queues WHERE name IN ({}) \
                   AND (concurrency IS NOT NULL OR rate_per_s IS NOT NULL OR paused) \
                 ORDER BY name {lock}",
            placeholders(1, n)
        )
    }

    /// The running tasks of each of the `n` queues bound from `$1`.
    pub(crate) fn running(n: usize) -> String {
        format!(
            "SELECT queue, COUNT(*) FROM tasks WHERE state = {RUNNING} AND queue IN ({}) GROUP BY queue",
            placeholders(1, n)
        )
    }

    pub(crate) const TOKENS: &str = "UPDATE queues SET tokens = $2, tokens_at = $3 WHERE name = $1";

    /// The claim: `$1` executor, `$2` now, `$3` the free slots, then the
    /// `kinds`, then a name and a share per queue, one queue for each of
    /// `unlimited` (whether it had no limits when the claim looked). One
    /// sub-select per queue walks that queue's ready index (priority, then
    /// age) no further than its share; the union is cut to the free slots
    /// by priority. The pick is a MATERIALIZED CTE, evaluated once: as a
    /// plain `IN (SELECT … FOR UPDATE SKIP LOCKED)` PostgreSQL may evaluate
    /// it again (a recheck after a concurrent update) and claim more than
    /// the free slots.
    ///
    /// A queue that had no limits when the claim looked is guarded: should
    /// a limit or a pause have been committed since, the statement (whose
    /// snapshot is newer) takes nothing from it, and the next claim takes
    /// the limited way.
    ///
    /// The picked rows are found by key ([`in_set`]); the update's own
    /// check spells the state column unindexed ([`unindexed`]), so that it
    /// cannot make the pending tasks' partial index a way to the picked
    /// ids. Spelled plainly, it did: statistics taken while nothing was
    /// pending make that index look empty, and a generic plan looked each
    /// claim's ids up by walking all of it (a backlog of 100,000: 21 ms of
    /// a claim's 40, drain 5,611 → 1,550 tasks/s).
    pub(crate) fn claim(d: Dialect, kinds: usize, unlimited: &[bool]) -> String {
        let skip = match d {
            Dialect::Postgres => "FOR UPDATE SKIP LOCKED",
            Dialect::Sqlite => "",
        };
        let keyed = in_set(d, "id", "picked");
        let state = unindexed(d, "state");
        let kinds_in = placeholders(4, kinds);
        let mut n = 4 + kinds;
        let picks: Vec<String> = unlimited
            .iter()
            .enumerate()
            .map(|(i, unlimited)| {
                let (q, l) = (n, n + 1);
                n += 2;
                let guard = if *unlimited {
                    format!(
                        " AND NOT EXISTS (SELECT 1 FROM queues g WHERE g.name = ${q} \
                           AND (g.concurrency IS NOT NULL OR g.rate_per_s IS NOT NULL OR g.paused))"
                    )
                } else {
                    String::new()
                };
                format!(
                    "SELECT id, priority FROM (SELECT id, priority FROM tasks \
                         WHERE state = {PENDING} AND queue = ${q} AND kind IN ({kinds_in}){guard} \
                         ORDER BY priority DESC, id LIMIT ${l} {skip}) AS q{i}"
                )
            })
            .collect();
        // `pending_since = updated_at` keeps the time the task became
        // pending (SET reads the row as it was; every move to pending sets
        // `updated_at`), for the queue-wait histogram.
        // The claim's time, and never before the row's last change: `$2`
        // is read before the statement waits for a connection, and a task
        // promoted at its due time meanwhile must not show a start before
        // it (nor a history line before the promotion's).
        let at = "(CASE WHEN updated_at > $2 THEN updated_at ELSE $2 END)";
        format!(
            "WITH picked AS MATERIALIZED (SELECT id FROM ({}) AS c ORDER BY priority DESC, id LIMIT $3) \
             UPDATE tasks SET state = {RUNNING}, executor_id = $1, epoch = epoch + 1, \
                 attempts = attempts + CASE WHEN resume THEN 0 ELSE 1 END, \
                 timeout_at = CASE WHEN resume THEN timeout_at ELSE NULL END, resume = FALSE, started_at = COALESCE(started_at, {at}), pending_since = updated_at, updated_at = {at}, changed_by = $1 \
             WHERE {keyed} \
               AND {state} = {PENDING} \
               AND EXISTS (SELECT 1 FROM executors e WHERE e.id = $1 AND e.state = {ALIVE}) \
             RETURNING {TASK_COLS}, pending_since",
            picks.join(" UNION ALL ")
        )
    }

    /// `state` is spelled so that no planner picks the state index for a
    /// timer query: with many tasks `suspended` that index reads them all
    /// (and sorts), where `tasks_due` reads only those due. Measured with
    /// 100,000 timers pending: SQLite's timer lag p50 went from 2.6 to 70
    /// ms; PostgreSQL, whose statistics lag behind a fast-growing table,
    /// bitmap-ANDed the two indexes (6 ms a promotion, 0.2 ms without).
    pub(crate) fn promote_due(d: Dialect) -> String {
        let skip = match d {
            Dialect::Postgres => "FOR UPDATE SKIP LOCKED",
            Dialect::Sqlite => "",
        };
        let state = unindexed(d, "state");
        let keyed = in_set(d, "id", "due");
        format!(
            "WITH due AS MATERIALIZED (SELECT id FROM tasks WHERE run_at <= $1 AND {state} IN ({SCHEDULED}, {SUSPENDED}) \
                                       ORDER BY run_at LIMIT $3 {skip}) \
             UPDATE tasks SET state = {PENDING}, run_at = NULL, waiting = NULL, updated_at = $1, changed_by = $2 \
             WHERE {keyed} AND {state} IN ({SCHEDULED}, {SUSPENDED}) AND run_at <= $1 \
             RETURNING {TASK_COLS}"
        )
    }

    /// `state` unindexed as in [`promote_due`].
    pub(crate) fn next_due(d: Dialect) -> String {
        let state = unindexed(d, "state");
        format!(
            "SELECT run_at FROM tasks WHERE run_at IS NOT NULL AND {state} IN ({SCHEDULED}, {SUSPENDED}) \
             ORDER BY run_at LIMIT 1"
        )
    }

    pub(crate) const SETTINGS: &str =
        "SELECT name, concurrency, rate_per_s, paused FROM queues WHERE $1 IS NULL OR name = $1";

    pub(crate) fn settings_of(d: Dialect) -> String {
        format!(
            "SELECT concurrency, rate_per_s, paused FROM queues WHERE name = $1 {}",
            match d {
                Dialect::Postgres => "FOR UPDATE",
                Dialect::Sqlite => "",
            }
        )
    }

    pub(crate) const UPSERT: &str = "INSERT INTO queues (name, concurrency, rate_per_s, paused, tokens, tokens_at, updated_at) \
                      VALUES ($1, $2, $3, $4, $5, NULL, $6) \
                      ON CONFLICT (name) DO UPDATE SET concurrency = $2, rate_per_s = $3, paused = $4, \
                          tokens = CASE WHEN queues.rate_per_s IS NOT DISTINCT FROM $3 THEN queues.tokens ELSE $5 END, \
                          tokens_at = CASE WHEN queues.rate_per_s IS NOT DISTINCT FROM $3 THEN queues.tokens_at ELSE NULL END, \
                          updated_at = $6";
}

/// `creates.rs`: new tasks and sub-tasks.
pub(crate) mod creates {
    use super::*;

    /// The tasks to insert as a recordset (`$1`, rows made by
    /// `insert_row`) with the columns of [`INSERT_COLS`] as `u_…`, and
    /// `extra` columns after them.
    fn insert_recordset(d: Dialect, extra: &[(&str, &str)]) -> String {
        let mut columns = vec![
            ("u_id", "uuid"),
            ("u_kind", "text"),
            ("u_state", "text"),
            ("u_input", "text"),
            ("u_key", "text"),
            ("u_trace", "text"),
            ("u_by", "text"),
            ("u_queue", "text"),
            ("u_priority", "int"),
            ("u_run_at", "timestamptz"),
            ("u_max_attempts", "int"),
            ("u_backoff_ms", "bigint"),
            ("u_timeout_ms", "bigint"),
            ("u_schedule", "text"),
            ("u_created", "timestamptz"),
        ];
        columns.extend_from_slice(extra);
        recordset(d, 1, "u", &columns)
    }

    /// The values of [`INSERT_COLS`], in order, from a row of
    /// [`insert_recordset`].
    fn insert_values_from_recordset(d: Dialect) -> String {
        format!(
            "u_id, u_kind, u_state, u_input{}, u_key, u_trace, u_by, u_created, u_created, u_queue, \
             u_priority, u_run_at, u_max_attempts, u_backoff_ms, u_timeout_ms, u_schedule",
            json_cast(d)
        )
    }

    /// `INSERT INTO tasks` of every row of a recordset of new tasks (`$1`),
    /// then `tail` (the conflict rule and what it returns).
    fn insert_from_recordset(d: Dialect, tail: &str) -> String {
        format!(
            "INSERT INTO tasks ({INSERT_COLS}) SELECT {} FROM {} {tail}",
            insert_values_from_recordset(d),
            insert_recordset(d, &[])
        )
    }

    /// A batch of tasks, some with an idempotency key or a watcher: the
    /// ids of those inserted.
    pub(crate) fn batch_keyed(d: Dialect) -> String {
        insert_from_recordset(d, "WHERE true ON CONFLICT DO NOTHING RETURNING id")
    }

    /// A batch of tasks with neither key nor watcher: the ids inserted.
    pub(crate) fn batch_plain(d: Dialect) -> String {
        insert_from_recordset(d, "RETURNING id")
    }

    /// The watchers of a batch, a recordset bound as `$1`.
    pub(crate) fn watch_batch(d: Dialect) -> String {
        format!(
            "INSERT INTO task_watchers (task_id, address, created_at) SELECT w_id, w_address, $2 FROM {} \
             WHERE true ON CONFLICT DO NOTHING",
            recordset(d, 1, "w", &[("w_id", "uuid"), ("w_address", "text")])
        )
    }

    /// The task an idempotency key names.
    pub(crate) fn by_key(d: Dialect) -> String {
        format!(
            "SELECT {TASK_COLS} FROM tasks WHERE idempotency_key = $1 AND schedule IS NULL {}",
            share_lock(d)
        )
    }

    pub(crate) fn insert_plain() -> String {
        format!("INSERT INTO tasks ({INSERT_COLS}) VALUES ({INSERT_VALUES}) RETURNING id")
    }

    /// A lone task claimed for `$16` in its own insert when the claim's
    /// rules allow, with its watcher `$17` (PostgreSQL: one statement;
    /// SQLite: the watcher is [`WATCH_STARTED`], in the transaction).
    /// The claim's guards, as `claim_unlimited`'s: the executor alive, the
    /// queue unlimited and not paused, and nothing pending ahead in it
    /// (the ready index, one probe).
    pub(crate) fn insert_started(d: Dialect) -> String {
        let ok = format!(
            "SELECT (EXISTS (SELECT 1 FROM executors e WHERE e.id = $16 AND e.state = {ALIVE}) \
               AND NOT EXISTS (SELECT 1 FROM queues g WHERE g.name = $9 \
                   AND (g.concurrency IS NOT NULL OR g.rate_per_s IS NOT NULL OR g.paused)) \
               AND NOT EXISTS (SELECT 1 FROM tasks p WHERE p.state = {PENDING} AND p.queue = $9 \
                   AND p.priority >= $10)) AS ok"
        );
        let insert = format!(
            "INSERT INTO tasks ({INSERT_COLS}, executor_id, epoch, attempts, started_at, pending_since) \
             SELECT $1, $2, CASE WHEN ok THEN {RUNNING} ELSE $3 END, $4, $5, $6, $7, $8, $8, $9, $10, \
                    $11, $12, $13, $14, $15, CASE WHEN ok THEN $16 END, CASE WHEN ok THEN 1 ELSE 0 END, \
                    CASE WHEN ok THEN 1 ELSE 0 END, CASE WHEN ok THEN $8 END, CASE WHEN ok THEN $8 END \
             FROM ok WHERE true ON CONFLICT DO NOTHING RETURNING {TASK_COLS}, pending_since"
        );
        match d {
            Dialect::Postgres => format!(
                "WITH ok AS ({ok}), t AS ({insert}), \
                          w AS (INSERT INTO task_watchers (task_id, address, created_at) \
                                SELECT id, $17, $8 FROM t WHERE $17 IS NOT NULL) \
                     SELECT * FROM t"
            ),
            Dialect::Sqlite => format!("WITH ok AS ({ok}) {insert}"),
        }
    }

    /// SQLite: the watcher of a task [`insert_started`] inserted.
    pub(crate) const WATCH_STARTED: &str =
        "INSERT INTO task_watchers (task_id, address, created_at) VALUES ($1, $2, $3)";

    /// PostgreSQL: a lone task with its watcher `$16` and no idempotency
    /// key in one statement (a data-modifying CTE).
    pub(crate) fn insert_watched() -> String {
        format!(
            "WITH t AS (INSERT INTO tasks ({INSERT_COLS}) VALUES ({INSERT_VALUES}) \
                        ON CONFLICT DO NOTHING RETURNING {TASK_COLS}), \
                  w AS (INSERT INTO task_watchers (task_id, address, created_at) SELECT id, $16, $8 FROM t) \
             SELECT * FROM t"
        )
    }

    pub(crate) fn insert_keyed() -> String {
        format!(
            "INSERT INTO tasks ({INSERT_COLS}) VALUES ({INSERT_VALUES}) \
             ON CONFLICT DO NOTHING RETURNING {TASK_COLS}"
        )
    }

    /// The parent's row is the source of the insert: it must be held by
    /// the fence, and it gives the attempt. (SQLite needs the `WHERE` of
    /// INSERT … SELECT to tell ON CONFLICT apart from a join constraint.)
    pub(crate) fn spawn_child() -> String {
        format!(
            "INSERT INTO tasks ({INSERT_COLS}, parent_id, spawn_seq, parent_attempt) \
             SELECT {INSERT_VALUES}, p.id, $16, p.attempts FROM tasks p \
             WHERE p.id = $17 AND p.executor_id = $19 AND p.epoch = $18 AND p.state IN {HELD} \
               AND {alive} \
             ON CONFLICT DO NOTHING RETURNING {TASK_COLS}",
            alive = NotDead("$19")
        )
    }

    pub(crate) fn spawn_children(d: Dialect) -> String {
        let recordset = insert_recordset(d, &[("u_seq", "int")]);
        let values = insert_values_from_recordset(d);
        format!(
            "INSERT INTO tasks ({INSERT_COLS}, parent_id, spawn_seq, parent_attempt) \
             SELECT {values}, p.id, u_seq, p.attempts \
             FROM {recordset} JOIN tasks p ON p.id = $2 \
             WHERE p.executor_id = $4 AND p.epoch = $3 AND p.state IN {HELD} \
               AND {alive} \
             ON CONFLICT DO NOTHING RETURNING id, parent_attempt",
            alive = NotDead("$4")
        )
    }

    pub(crate) fn children_numbered() -> String {
        let cols = qualified("c");
        format!(
            "SELECT {cols}, c.spawn_seq FROM tasks c JOIN tasks p ON p.id = c.parent_id \
             WHERE c.parent_id = $1 AND c.parent_attempt = p.attempts \
               AND c.spawn_seq >= $2 AND c.spawn_seq < $3"
        )
    }
}

/// `ends.rs`: runs' ends, retries later, hand-backs.
pub(crate) mod ends {
    use super::*;

    /// One fenced UPDATE for every end: the ends travel as one JSON array
    /// parameter (`$1`; `u_output` and `u_errors` as JSON text, so that a
    /// `null` output stays JSON `null`), and each row changes only if its
    /// own executor still holds it at its own epoch and has not been
    /// declared dead.
    ///
    /// The owner and state are kept out of index selection, so that the
    /// plan walks the ends and finds each task by its key. With them, on
    /// SQLite the plan walked every running task for every end through
    /// the state index (5,908 → 2,896 tasks/s); PostgreSQL, its
    /// statistics taken when few tasks were held, walked the owner's
    /// held tasks for every end through `tasks_executor` (auto_explain:
    /// a flush of 264 ends read 132 tasks an end, 22 of its 28 ms).
    pub(crate) fn ends(d: Dialect) -> String {
        let ends_sql = recordset(
            d,
            1,
            "u",
            &[
                ("u_id", "uuid"),
                ("u_exec", "text"),
                ("u_epoch", "bigint"),
                ("u_state", "text"),
                ("u_output", "text"),
                ("u_error", "text"),
                ("u_errors", "text"),
            ],
        );
        let json = json_cast(d);
        let owner = unindexed(d, "tasks.executor_id");
        let state = unindexed(d, "tasks.state");
        format!(
            "UPDATE tasks SET state = u.u_state, output = u.u_output{json}, error = u.u_error, \
                 finished_at = $2, updated_at = $2, changed_by = u.u_exec, \
                 errors = COALESCE(u.u_errors{json}, errors), waiting = NULL \
             FROM {ends_sql} \
             WHERE tasks.id = u.u_id AND {owner} = u.u_exec AND tasks.epoch = u.u_epoch \
               AND {state} IN {HELD} \
               AND {alive} \
             RETURNING id, parent_id",
            alive = NotDead("u.u_exec")
        )
    }

    /// A lone end, by key.
    pub(crate) fn one() -> String {
        format!(
            "UPDATE tasks SET state = $4, output = $5, error = $6, finished_at = $7, updated_at = $7, changed_by = $2, \
                 errors = COALESCE($8, errors), waiting = NULL \
             WHERE id = $1 AND {OWNED} \
             RETURNING {TASK_COLS}"
        )
    }

    /// PostgreSQL: a lone end with its inbox closed and its watchers taken
    /// in the same statement.
    pub(crate) fn lone_in_one() -> String {
        format!(
            "WITH u AS ({one}), \
                  c AS (UPDATE task_events SET delivered_at = $7 \
                        WHERE task_id = $1 AND delivered_at IS NULL AND EXISTS (SELECT 1 FROM u)), \
                  w AS (DELETE FROM task_watchers WHERE task_id = $1 AND EXISTS (SELECT 1 FROM u) \
                        RETURNING address) \
             SELECT u.*, (SELECT COALESCE(json_agg(address), '[]')::text FROM w) AS watchers FROM u",
            one = one()
        )
    }

    pub(crate) fn close_inboxes(d: Dialect) -> String {
        format!(
            "UPDATE task_events SET delivered_at = $2 WHERE task_id IN {} AND delivered_at IS NULL",
            id_set(d, 1)
        )
    }

    pub(crate) fn take_watchers(d: Dialect) -> String {
        format!(
            "DELETE FROM task_watchers WHERE task_id IN {} RETURNING task_id, address",
            id_set(d, 1)
        )
    }

    pub(crate) fn read(d: Dialect) -> String {
        format!("SELECT {TASK_COLS} FROM tasks WHERE id IN {}", id_set(d, 1))
    }

    /// PostgreSQL's data-modifying CTEs: [`ends`], the inboxes closed and
    /// the watchers taken, in one statement.
    pub(crate) fn all_in_one() -> String {
        format!(
            "WITH u AS ({sql}), \
                  c AS (UPDATE task_events SET delivered_at = $2 \
                        WHERE task_id IN (SELECT id FROM u) AND delivered_at IS NULL), \
                  w AS (DELETE FROM task_watchers WHERE task_id IN (SELECT id FROM u) \
                        RETURNING task_id, address) \
             SELECT id, parent_id, NULL::text FROM u \
             UNION ALL SELECT task_id, NULL::uuid, address FROM w",
            sql = ends(Dialect::Postgres)
        )
    }

    pub(crate) fn retry_later() -> String {
        format!(
            "UPDATE tasks SET state = {SCHEDULED}, run_at = $4, error = $5, errors = $6, executor_id = NULL, \
                 updated_at = $7, changed_by = $2 \
             WHERE id = $1 AND {OWNED} \
             RETURNING {TASK_COLS}"
        )
    }

    pub(crate) fn hand_back() -> String {
        format!(
            "UPDATE tasks SET state = {PENDING}, executor_id = NULL, attempts = attempts - 1, \
                 updated_at = $4, changed_by = $2 \
             WHERE id = $1 AND {OWNED}"
        )
    }
}

/// Every statement of this file for dialect `d`, named by the item that
/// produces it and, for a function, the shape it is called with
/// (`tasks::list(d, &every_filter)`): each variable arity as 1 and as 3,
/// each filter or option off and on. The statements of one dialect only
/// are listed for it alone.
pub(crate) fn catalogue(d: Dialect) -> Vec<(&'static str, String)> {
    use crate::model::TaskFilter;
    let mut out: Vec<(&'static str, String)> = Vec::new();
    macro_rules! entry {
        ($($e:tt)*) => {
            out.push((stringify!($($e)*), String::from($($e)*)))
        };
    }
    // mod.rs
    entry!(store::PING);
    if d == Dialect::Postgres {
        entry!(store::NO_STATEMENT_TIMEOUT);
        entry!(store::RESET_STATEMENT_TIMEOUT);
    }
    // tasks.rs
    let every_filter = TaskFilter {
        state: Some(TaskState::Pending),
        kind: Some("k".into()),
        queue: Some("q".into()),
        parent_id: Some(uuid::Uuid::nil()),
        schedule: Some("s".into()),
        id_prefix: "01a2".parse().ok(),
        after: Some(uuid::Uuid::nil()),
        limit: 1,
        without_bodies: true,
    };
    entry!(tasks::get());
    entry!(tasks::list(d, &TaskFilter::default()));
    entry!(tasks::list(d, &every_filter));
    entry!(tasks::children_page(d, true));
    entry!(tasks::children_page(d, false));
    entry!(tasks::HISTORY_PAGE);
    entry!(tasks::children());
    entry!(tasks::open_descendants());
    entry!(tasks::set_owned_state());
    entry!(tasks::set_progress());
    entry!(tasks::request_cancel());
    entry!(tasks::retry_now());
    entry!(tasks::cancel_unclaimed());
    entry!(tasks::HISTORY);
    entry!(tasks::cancel_requested_owned());
    entry!(tasks::release_orphans());
    entry!(tasks::by_id(d));
    entry!(tasks::pending_of(d));
    // watchers.rs
    entry!(watchers::watch_task(d, false));
    entry!(watchers::watch_task(d, true));
    entry!(watchers::WATCH);
    entry!(watchers::MARK_WATCHED);
    entry!(watchers::STREAM_WATCHERS);
    entry!(watchers::ADD);
    entry!(watchers::REMOVE);
    entry!(watchers::TAKE);
    // workers.rs
    entry!(workers::LABEL);
    // events.rs
    entry!(events::add(d));
    entry!(events::wake());
    entry!(events::inboxes_after(d));
    entry!(events::MARK_DELIVERED);
    entry!(events::MARK_DELIVERED_BETWEEN);
    entry!(events::undelivered());
    entry!(events::AFTER);
    entry!(events::PAGE);
    // executors.rs
    entry!(executors::register());
    entry!(executors::heartbeat());
    entry!(executors::stop());
    entry!(executors::stale(d));
    entry!(executors::alive_in_space());
    entry!(executors::declare_dead());
    entry!(executors::all());
    entry!(executors::page());
    entry!(executors::get());
    entry!(executors::kind_defaults());
    // stats.rs
    entry!(stats::counts(d, true));
    entry!(stats::counts(d, false));
    entry!(stats::by_queue(d));
    entry!(stats::minute(d));
    entry!(stats::THROUGHPUT);
    match d {
        Dialect::Sqlite => {
            entry!(stats::cutoff());
            entry!(stats::fold_minutes());
            entry!(stats::DROP_MINUTES);
        }
        Dialect::Postgres => {
            entry!(stats::drop_old_minutes());
            entry!(stats::FOLD_COUNTS);
            entry!(stats::FOLD_THROUGHPUT);
        }
    }
    // retention.rs
    entry!(retention::delete_executors());
    entry!(retention::DUE_ROOTS);
    entry!(retention::trees(1));
    entry!(retention::trees(3));
    entry!(retention::delete_rows_of("task_history", 1));
    entry!(retention::delete_rows_of("task_history", 3));
    entry!(retention::delete_rows_of("task_events", 3));
    entry!(retention::delete_rows_of("task_watchers", 3));
    entry!(retention::delete_rows_of("task_steps", 3));
    entry!(retention::delete_tasks(1));
    entry!(retention::delete_tasks(3));
    // schedules.rs
    entry!(schedules::existing(d));
    entry!(schedules::insert());
    entry!(schedules::update());
    entry!(schedules::get());
    entry!(schedules::all());
    entry!(schedules::REMOVE);
    entry!(schedules::due());
    entry!(schedules::NEXT_DUE);
    entry!(schedules::advance());
    entry!(schedules::last());
    // journal.rs
    if d == Dialect::Postgres {
        entry!(journal::lock_parents());
    }
    entry!(journal::take_awaits(d));
    entry!(journal::wake_count(d));
    entry!(journal::wake_parent());
    entry!(journal::STEPS);
    entry!(journal::record_step(d));
    entry!(journal::touch());
    entry!(journal::park());
    entry!(journal::FORGET_AWAITS);
    entry!(journal::awaits(d));
    entry!(journal::EVENTS_PAST);
    // queues.rs
    entry!(queues::limits(d, 1, false));
    entry!(queues::limits(d, 3, false));
    entry!(queues::limits(d, 1, true));
    entry!(queues::limits(d, 3, true));
    entry!(queues::running(1));
    entry!(queues::running(3));
    entry!(queues::TOKENS);
    entry!(queues::claim(d, 1, &[true]));
    entry!(queues::claim(d, 1, &[false]));
    entry!(queues::claim(d, 3, &[true, false, true]));
    entry!(queues::promote_due(d));
    entry!(queues::next_due(d));
    entry!(queues::SETTINGS);
    entry!(queues::settings_of(d));
    entry!(queues::UPSERT);
    // creates.rs
    entry!(creates::batch_keyed(d));
    entry!(creates::batch_plain(d));
    entry!(creates::watch_batch(d));
    entry!(creates::by_key(d));
    entry!(creates::insert_plain());
    entry!(creates::insert_started(d));
    match d {
        Dialect::Sqlite => entry!(creates::WATCH_STARTED),
        Dialect::Postgres => entry!(creates::insert_watched()),
    }
    entry!(creates::insert_keyed());
    entry!(creates::spawn_child());
    entry!(creates::spawn_children(d));
    entry!(creates::children_numbered());
    // ends.rs
    entry!(ends::ends(d));
    entry!(ends::one());
    if d == Dialect::Postgres {
        entry!(ends::lone_in_one());
        entry!(ends::all_in_one());
    }
    entry!(ends::close_inboxes(d));
    entry!(ends::take_watchers(d));
    entry!(ends::read(d));
    entry!(ends::retry_later());
    entry!(ends::hand_back());
    out
}
