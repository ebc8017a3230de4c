//! Retention: deleting finished task trees, with their history, events
//! and watchers, once their root has been final longer than its state's
//! retention. A tree goes as a whole, and only when every task in it is
//! final, so nothing still running loses its parent.

use super::statements::retention as st;
use super::Store;
use crate::error::Result;
use crate::model::{now, TaskState};
use std::time::Duration;
use uuid::Uuid;

use std::str::FromStr;

/// How long finished tasks are kept, per final state; `None` keeps them
/// forever. Written `succeeded=7d,cancelled=7d,failed=30d` (units `s`, `m`,
/// `h`, `d`; `0` keeps forever).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Retention {
    pub succeeded: Option<Duration>,
    pub failed: Option<Duration>,
    pub cancelled: Option<Duration>,
    /// How long a dead or stopped executor's row is kept (every start and
    /// every re-registration adds one).
    pub executors: Option<Duration>,
}

impl Default for Retention {
    /// `succeeded=7d,cancelled=7d,failed=30d,executors=7d`.
    fn default() -> Self {
        const DAY: u64 = 24 * 3600;
        Retention {
            succeeded: Some(Duration::from_secs(7 * DAY)),
            failed: Some(Duration::from_secs(30 * DAY)),
            cancelled: Some(Duration::from_secs(7 * DAY)),
            executors: Some(Duration::from_secs(7 * DAY)),
        }
    }
}

impl Retention {
    /// Keeps every finished task forever.
    pub fn forever() -> Self {
        Retention {
            succeeded: None,
            failed: None,
            cancelled: None,
            executors: None,
        }
    }

    /// The retention of a final state.
    pub fn of(&self, state: TaskState) -> Option<Duration> {
        match state {
            TaskState::Succeeded => self.succeeded,
            TaskState::Failed => self.failed,
            TaskState::Cancelled => self.cancelled,
            _ => None,
        }
    }

    /// True when no task is ever deleted.
    pub fn keeps_all(&self) -> bool {
        self.succeeded.is_none() && self.failed.is_none() && self.cancelled.is_none()
    }
}

/// Why a retention text was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid retention {text:?}: {why} (expected e.g. succeeded=7d,cancelled=7d,failed=30d,executors=7d; units s, m, h, d; 0 keeps forever)")]
pub struct BadRetention {
    text: String,
    why: String,
}

impl FromStr for Retention {
    type Err = BadRetention;

    /// Parses `state=N[smhd],…`; states not named keep their default.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |why: String| BadRetention {
            text: s.to_string(),
            why,
        };
        let mut r = Retention::default();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (state, value) = part
                .split_once('=')
                .ok_or_else(|| bad(format!("{part:?} has no '='")))?;
            let keep = parse_span(value.trim()).map_err(bad)?;
            match state.trim() {
                "succeeded" => r.succeeded = keep,
                "failed" => r.failed = keep,
                "cancelled" => r.cancelled = keep,
                "executors" => r.executors = keep,
                other => {
                    return Err(bad(format!(
                        "{other:?} is neither a final state (succeeded, failed, cancelled) nor executors"
                    )))
                }
            }
        }
        Ok(r)
    }
}

/// `7d`, `12h`, `30m`, `45s`, or `0` (forever).
fn parse_span(v: &str) -> std::result::Result<Option<Duration>, String> {
    if v == "0" {
        return Ok(None);
    }
    let (n, unit) = v.split_at(v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len()));
    let n: u64 = n
        .parse()
        .map_err(|_| format!("{v:?} does not start with a whole number"))?;
    let secs = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "" => return Err(format!("{v:?} has no unit")),
        u => return Err(format!("unknown unit {u:?}")),
    };
    if n == 0 {
        return Ok(None);
    }
    n.checked_mul(secs)
        .filter(|s| *s <= 100 * 365 * 86_400)
        .map(|s| Some(Duration::from_secs(s)))
        .ok_or_else(|| format!("{v:?} is longer than a hundred years"))
}

/// How many ids one `IN (…)` list binds.
const CHUNK: usize = 500;

impl Store {
    /// Deletes the rows of executors dead or stopped for longer than
    /// `keep` (at most `limit` a call): how many. Nothing refers to them
    /// by key (a task's history names its executors as text).
    pub async fn delete_expired_executors(&self, keep: Duration, limit: u32) -> Result<u64> {
        let before = now() - chrono::Duration::from_std(keep).unwrap_or(chrono::Duration::MAX);
        let n = on_pool_write!(self, p => sqlx::query(&st::delete_executors())
            .bind(before).bind(i64::from(limit)).execute(p).await.map(|r| r.rows_affected()))?;
        Ok(n)
    }

    /// Deletes up to `roots` expired task trees (per final state, the
    /// longest finished first) and returns how many tasks of each state
    /// went. One transaction per call: call it again while it deletes
    /// anything. Trees with a task that is not final are left for later.
    pub async fn delete_expired(&self, r: &Retention, roots: u32) -> Result<Vec<(TaskState, u64)>> {
        let mut due: Vec<Uuid> = Vec::new();
        for state in [
            TaskState::Succeeded,
            TaskState::Failed,
            TaskState::Cancelled,
        ] {
            let Some(keep) = r.of(state) else { continue };
            let before = now() - chrono::Duration::from_std(keep).unwrap_or(chrono::Duration::MAX);
            let ids: Vec<(Uuid,)> = on_pool!(self, p => sqlx::query_as(st::DUE_ROOTS)
                .bind(state.as_str()).bind(before).bind(i64::from(roots))
                .fetch_all(p).await)?;
            due.extend(ids.into_iter().map(|r| r.0));
        }
        if due.is_empty() {
            return Ok(Vec::new());
        }
        // Every task of those trees, with its depth and state.
        let mut members: Vec<(Uuid, Uuid, i32, String)> = Vec::new();
        for chunk in due.chunks(CHUNK) {
            let sql = st::trees(chunk.len());
            let rows: Vec<(Uuid, Uuid, i32, String)> = on_pool!(self, p => {
                let mut q = sqlx::query_as(&sql);
                for id in chunk {
                    q = q.bind(id);
                }
                q.fetch_all(p).await
            })?;
            members.extend(rows);
        }
        let open: std::collections::HashSet<Uuid> = members
            .iter()
            .filter(|m| !m.3.parse::<TaskState>().is_ok_and(TaskState::is_final))
            .map(|m| m.0)
            .collect();
        let mut doomed: Vec<(Uuid, i32)> = members
            .into_iter()
            .filter(|m| !open.contains(&m.0))
            .map(|m| (m.1, m.2))
            .collect();
        // Deepest first: no statement deletes a parent before its children.
        doomed.sort_by_key(|d| std::cmp::Reverse(d.1));
        let ids: Vec<Uuid> = doomed.into_iter().map(|d| d.0).collect();
        let deleted: Vec<(String,)> = on_pool_tx!(self, p, begin => {
            let mut tx = p.begin_with(begin).await?;
            let mut deleted = Vec::with_capacity(ids.len());
            for chunk in ids.chunks(CHUNK) {
                for table in st::MEMBER_TABLES {
                    let sql = st::delete_rows_of(table, chunk.len());
                    let mut q = sqlx::query(&sql);
                    for id in chunk {
                        q = q.bind(id);
                    }
                    q.execute(&mut *tx).await?;
                }
                let sql = st::delete_tasks(chunk.len());
                let mut q = sqlx::query_as(&sql);
                for id in chunk {
                    q = q.bind(id);
                }
                let rows: Vec<(String,)> = q.fetch_all(&mut *tx).await?;
                deleted.extend(rows);
            }
            tx.commit().await?;
            deleted
        });
        let mut counts: Vec<(TaskState, u64)> = Vec::new();
        for (s,) in deleted {
            let Ok(state) = s.parse::<TaskState>() else {
                continue;
            };
            match counts.iter_mut().find(|c| c.0 == state) {
                Some(c) => c.1 += 1,
                None => counts.push((state, 1)),
            }
        }
        Ok(counts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retention_texts_parse_or_say_why_not() {
        let r: Retention = "succeeded=7d,cancelled=7d,failed=30d".parse().unwrap();
        assert_eq!(r, Retention::default());
        let r: Retention = "executors=1h".parse().unwrap();
        assert_eq!(r.executors, Some(Duration::from_secs(3600)));
        assert_eq!(r.succeeded, Retention::default().succeeded);
        let r: Retention = "succeeded=90s, failed=0".parse().unwrap();
        assert_eq!(r.succeeded, Some(Duration::from_secs(90)));
        assert_eq!(r.failed, None);
        assert_eq!(r.cancelled, Retention::default().cancelled);
        assert_eq!(
            "succeeded=12h".parse::<Retention>().unwrap().succeeded,
            Some(Duration::from_secs(12 * 3600))
        );
        for bad in [
            "succeeded",
            "running=1d",
            "failed=1w",
            "failed=d",
            "failed=10",
        ] {
            let e = bad.parse::<Retention>().unwrap_err().to_string();
            assert!(e.contains(bad), "{e}");
        }
        assert!("succeeded=0,failed=0,cancelled=0"
            .parse::<Retention>()
            .unwrap()
            .keeps_all());
    }
}
