//! The replay cache: what a run of a task read from the store, kept by its
//! executor while the task is suspended, so that the next run of the task
//! here reads only what it has not seen.
//!
//! A suspended task is in no executor's memory; when something wakes it, an
//! executor claims it and replays the run from the top. Without this cache
//! every replay read the whole inbox and the whole journal, so a task woken
//! k times read O(k²) rows. With it, a task claimed again by the executor
//! that suspended it reads the inbox past the highest `seq` it held, and no
//! journal at all: the entry holds every succeeded step, its own writes
//! included. (Temporal's *sticky execution* is the same idea: the worker
//! that ran a workflow task keeps the workflow's state, and is sent only
//! the history that is new to it.)
//!
//! **Only committed, append-only facts are kept, and each is validated:**
//!
//! - *Events* are immutable rows numbered in commit order (see
//!   [`Store::events_after`](courier_store::Store::events_after)), and every
//!   run of every attempt sees all of them: the events up to `max_seq` are
//!   valid whoever ran the task since, and the next run reads past it.
//! - *The journal* (succeeded steps; a failed step is run again, so the run
//!   never reads one) is written only by the task's owner, fenced by its
//!   epoch, and every claim (the only way to own a task) adds one to the
//!   epoch. An entry left by the run of epoch `e` is therefore whole for a
//!   claim of epoch `e + 1`: nobody owned the task in between, and every
//!   step written while this executor owned it is in the entry (written
//!   through once the store confirmed it). For any other epoch (another
//!   executor ran the task, or it was taken over) the journal part is
//!   dropped and the run reads the journal from the store. A step write
//!   whose outcome this executor does not know (a run dropped during the
//!   write, an error) makes the journal *torn*: it is not kept.
//!
//! An entry leaves the cache when its task is claimed here again (the run
//! holds it in memory while it runs, as it held what it read before this
//! cache existed) and comes back when the task suspends again or is
//! retried later. A task that ends leaves nothing behind.
//!
//! **Memory bound.** At most `entries` tasks and about `bytes` of their
//! events and steps (names and JSON text, plus a fixed overhead each),
//! least recently stored out first; an entry larger than `bytes` alone is
//! not kept. Runs in progress hold their own entries outside the bound
//! (at most the executor's capacity of them).

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use serde_json::Value;
use uuid::Uuid;

use courier_store::Step;

/// The replay cache's bounds (`entries: 0` turns it off).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReplayCacheConfig {
    /// The most suspended tasks kept.
    pub entries: usize,
    /// About the most bytes of their events and steps kept.
    pub bytes: usize,
}

impl ReplayCacheConfig {
    /// No cache: every replay reads the whole inbox and journal.
    pub const OFF: ReplayCacheConfig = ReplayCacheConfig {
        entries: 0,
        bytes: 0,
    };
}

impl Default for ReplayCacheConfig {
    /// 10,000 tasks, 64 MiB.
    fn default() -> Self {
        ReplayCacheConfig {
            entries: 10_000,
            bytes: 64 << 20,
        }
    }
}

/// What an entry costs beyond its text: per event or step, and per entry.
const ITEM_OVERHEAD: usize = 64;
const ENTRY_OVERHEAD: usize = 256;

/// About how many bytes `v` takes (its JSON text's length, roughly).
pub(crate) fn json_size(v: &Value) -> usize {
    match v {
        Value::Null | Value::Bool(_) => 5,
        Value::Number(_) => 20,
        Value::String(s) => s.len() + 2,
        Value::Array(a) => 2 + a.iter().map(|v| json_size(v) + 1).sum::<usize>(),
        Value::Object(o) => {
            2 + o
                .iter()
                .map(|(k, v)| k.len() + 4 + json_size(v))
                .sum::<usize>()
        }
    }
}

/// An event as the mailbox holds it: `seq`, name, payload.
pub(crate) type Event = (i64, String, Value);

/// The inbox as a task's runs read it: every event of the task up to
/// `max_seq`, in `seq` order.
#[derive(Debug, Default)]
pub(crate) struct Inbox {
    pub events: Vec<Event>,
    /// About the bytes of `events`.
    pub bytes: usize,
    /// Every event up to here is in `events`.
    pub max_seq: i64,
    /// Every event up to here is marked delivered in the store.
    pub delivered: i64,
}

/// The succeeded steps' outputs by name, as the journal's owner knows them.
#[derive(Debug, Default)]
pub(crate) struct Steps {
    pub done: HashMap<String, Value>,
    /// About the bytes of `done`.
    pub bytes: usize,
}

impl Steps {
    /// Records a step: a succeeded one is replayed from now on, a failed
    /// one is run again (so not kept).
    pub(crate) fn record(&mut self, name: &str, output: Option<&Value>) {
        match output {
            Some(v) => {
                let size = name.len() + json_size(v) + ITEM_OVERHEAD;
                if let Some(old) = self.done.insert(name.to_string(), v.clone()) {
                    self.bytes = self
                        .bytes
                        .saturating_sub(name.len() + json_size(&old) + ITEM_OVERHEAD);
                }
                self.bytes += size;
            }
            None => {
                if let Some(old) = self.done.remove(name) {
                    self.bytes = self
                        .bytes
                        .saturating_sub(name.len() + json_size(&old) + ITEM_OVERHEAD);
                }
            }
        }
    }

    /// Adds the journal read from the store; what this run wrote itself
    /// (already here) is newer and stays.
    pub(crate) fn fill(&mut self, steps: Vec<Step>) {
        for s in steps {
            if s.succeeded() && !self.done.contains_key(&s.name) {
                let v = s.output.unwrap_or(Value::Null);
                self.record(&s.name, Some(&v));
            }
        }
    }
}

/// The journal as a task actor and its runs share it.
#[derive(Debug, Default)]
pub(crate) struct Journal {
    pub steps: Steps,
    /// Whether `steps` holds the whole journal (read from the store, or
    /// from the replay cache), and not only this actor's own writes.
    pub loaded: bool,
    /// Step writes begun and not yet ended.
    pub writing: u32,
    /// A step write ended without this actor knowing whether it landed:
    /// the store may hold a step that `steps` lacks.
    pub torn: bool,
}

impl Journal {
    /// A new run starts: a torn journal, or one with a write of the
    /// previous run still in flight, is read again from the store.
    pub(crate) fn new_run(&mut self) {
        if self.torn || self.writing > 0 {
            self.steps = Steps::default();
            self.loaded = false;
            self.torn = false;
        }
    }

    /// The journal, if it is whole and known to be so: nothing in flight,
    /// nothing torn.
    pub(crate) fn take_whole(&mut self) -> Option<Steps> {
        if self.loaded && !self.torn && self.writing == 0 {
            self.loaded = false;
            Some(std::mem::take(&mut self.steps))
        } else {
            None
        }
    }
}

/// What a task's runs read, kept for its next run here.
#[derive(Debug, Default)]
pub(crate) struct Replay {
    pub inbox: Inbox,
    /// The journal as it stood when the run of this epoch left it.
    pub journal: Option<(i64, Steps)>,
}

impl Replay {
    fn bytes(&self) -> usize {
        ENTRY_OVERHEAD + self.inbox.bytes + self.journal.as_ref().map_or(0, |(_, s)| s.bytes)
    }
}

/// How the cache has fared, for tests and benchmarks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReplayCacheStats {
    /// Claims that found the task's inbox here.
    pub hits: u64,
    /// Of those, claims that found its journal too (the epoch matched).
    pub journal_hits: u64,
    /// Claims that found nothing.
    pub misses: u64,
    /// Entries dropped to stay within the bounds.
    pub evicted: u64,
    /// Entries and their bytes now.
    pub entries: usize,
    pub bytes: usize,
}

#[derive(Debug, Default)]
struct State {
    /// Each entry with the tick it was stored at.
    entries: HashMap<Uuid, (u64, Replay)>,
    /// Entries by tick: the oldest first out.
    order: BTreeMap<u64, Uuid>,
    tick: u64,
    bytes: usize,
    stats: ReplayCacheStats,
}

/// An executor's replay cache (see the module's documentation).
#[derive(Debug)]
pub struct ReplayCache {
    config: ReplayCacheConfig,
    state: Mutex<State>,
}

impl ReplayCache {
    pub fn new(config: ReplayCacheConfig) -> Self {
        ReplayCache {
            config,
            state: Mutex::new(State::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes what is kept for `task`, claimed now with `epoch`: its inbox,
    /// and its journal only if that was left by the run of `epoch - 1`.
    pub(crate) fn take(&self, task: Uuid, epoch: i64) -> Option<Replay> {
        let mut st = self.lock();
        let Some((tick, mut replay)) = st.entries.remove(&task) else {
            st.stats.misses += 1;
            return None;
        };
        st.order.remove(&tick);
        st.bytes = st.bytes.saturating_sub(replay.bytes());
        st.stats.hits += 1;
        match &replay.journal {
            Some((e, _)) if *e + 1 == epoch => st.stats.journal_hits += 1,
            _ => replay.journal = None,
        }
        Some(replay)
    }

    /// Keeps `replay` for `task`'s next run here, dropping the oldest
    /// entries beyond the bounds.
    pub(crate) fn put(&self, task: Uuid, replay: Replay) {
        let size = replay.bytes();
        if self.config.entries == 0 || size > self.config.bytes {
            return;
        }
        let mut st = self.lock();
        st.tick += 1;
        let tick = st.tick;
        if let Some((old_tick, old)) = st.entries.insert(task, (tick, replay)) {
            st.order.remove(&old_tick);
            st.bytes = st.bytes.saturating_sub(old.bytes());
        }
        st.order.insert(tick, task);
        st.bytes += size;
        while st.entries.len() > self.config.entries || st.bytes > self.config.bytes {
            let Some((_, oldest)) = st.order.pop_first() else {
                break;
            };
            if let Some((_, gone)) = st.entries.remove(&oldest) {
                st.bytes = st.bytes.saturating_sub(gone.bytes());
                st.stats.evicted += 1;
            }
        }
    }

    /// How the cache has fared so far.
    pub fn stats(&self) -> ReplayCacheStats {
        let st = self.lock();
        ReplayCacheStats {
            entries: st.entries.len(),
            bytes: st.bytes,
            ..st.stats
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn inbox(events: &[(i64, &str)]) -> Inbox {
        let mut i = Inbox::default();
        for (seq, name) in events {
            i.events.push((*seq, name.to_string(), json!(seq)));
            i.bytes += name.len() + ITEM_OVERHEAD;
            i.max_seq = *seq;
        }
        i.delivered = i.max_seq;
        i
    }

    fn steps(names: &[&str]) -> Steps {
        let mut s = Steps::default();
        for n in names {
            s.record(n, Some(&json!(n)));
        }
        s
    }

    fn cache(entries: usize, bytes: usize) -> ReplayCache {
        ReplayCache::new(ReplayCacheConfig { entries, bytes })
    }

    #[test]
    fn a_claim_of_the_next_epoch_finds_inbox_and_journal() {
        let c = cache(10, 1 << 20);
        let t = Uuid::new_v4();
        c.put(
            t,
            Replay {
                inbox: inbox(&[(1, "go"), (5, "go")]),
                journal: Some((3, steps(&["a", "b"]))),
            },
        );
        let r = c.take(t, 4).expect("kept");
        assert_eq!(r.inbox.max_seq, 5);
        assert_eq!(r.inbox.events.len(), 2);
        let (epoch, s) = r.journal.expect("the journal of epoch 3 serves epoch 4");
        assert_eq!(epoch, 3);
        assert_eq!(s.done.get("b"), Some(&json!("b")));
        // Taken: the run holds it now.
        assert!(c.take(t, 4).is_none());
        let st = c.stats();
        assert_eq!((st.hits, st.journal_hits, st.misses), (1, 1, 1));
        assert_eq!((st.entries, st.bytes), (0, 0));
    }

    #[test]
    fn another_owner_in_between_drops_the_journal_but_not_the_inbox() {
        let c = cache(10, 1 << 20);
        let t = Uuid::new_v4();
        for claimed in [3, 5, 9, 1] {
            c.put(
                t,
                Replay {
                    inbox: inbox(&[(7, "go")]),
                    journal: Some((3, steps(&["a"]))),
                },
            );
            let r = c.take(t, claimed).expect("the inbox is kept");
            assert_eq!(r.inbox.max_seq, 7, "events are facts for every epoch");
            assert!(
                r.journal.is_none(),
                "epoch {claimed}: someone else may have written steps since epoch 3"
            );
        }
        assert_eq!(c.stats().journal_hits, 0);
    }

    #[test]
    fn the_oldest_entries_go_first_beyond_the_count() {
        let c = cache(2, 1 << 20);
        let (a, b, d) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        for t in [a, b, d] {
            c.put(t, Replay::default());
        }
        assert!(c.take(a, 1).is_none(), "the oldest went");
        assert!(c.take(b, 1).is_some());
        assert!(c.take(d, 1).is_some());
        assert_eq!(c.stats().evicted, 1);
    }

    #[test]
    fn the_byte_bound_holds_and_a_huge_entry_is_not_kept() {
        let one = Replay {
            inbox: inbox(&[(1, "go")]),
            journal: None,
        }
        .bytes();
        let c = cache(100, 3 * one);
        let ids: Vec<Uuid> = (0..5).map(|_| Uuid::new_v4()).collect();
        for t in &ids {
            c.put(
                *t,
                Replay {
                    inbox: inbox(&[(1, "go")]),
                    journal: None,
                },
            );
            assert!(c.stats().bytes <= 3 * one);
        }
        let st = c.stats();
        assert_eq!((st.entries, st.evicted), (3, 2));
        assert!(c.take(ids[1], 1).is_none() && c.take(ids[4], 1).is_some());
        // Larger than the whole bound: not kept, nothing evicted for it.
        let big = Uuid::new_v4();
        let many: Vec<(i64, &str)> = (1..=20).map(|s| (s, "go")).collect();
        c.put(
            big,
            Replay {
                inbox: inbox(&many),
                journal: None,
            },
        );
        assert!(c.take(big, 1).is_none());
        assert_eq!(c.stats().entries, 2);
    }

    #[test]
    fn storing_a_task_again_replaces_its_entry() {
        let c = cache(10, 1 << 20);
        let t = Uuid::new_v4();
        c.put(t, Replay::default());
        c.put(
            t,
            Replay {
                inbox: inbox(&[(2, "x")]),
                journal: None,
            },
        );
        let st = c.stats();
        assert_eq!(st.entries, 1);
        assert_eq!(st.bytes, c.take(t, 1).unwrap().bytes());
        assert_eq!(c.stats().bytes, 0);
    }

    #[test]
    fn off_keeps_nothing() {
        let c = ReplayCache::new(ReplayCacheConfig::OFF);
        let t = Uuid::new_v4();
        c.put(t, Replay::default());
        assert!(c.take(t, 1).is_none());
    }

    #[test]
    fn a_torn_journal_or_one_still_written_is_not_whole() {
        let mut j = Journal {
            steps: steps(&["a"]),
            loaded: true,
            ..Journal::default()
        };
        j.writing = 1;
        assert!(j.take_whole().is_none(), "a write in flight");
        j.writing = 0;
        j.torn = true;
        assert!(j.take_whole().is_none(), "a write of unknown outcome");
        // The next run reads the journal again.
        j.new_run();
        assert!(!j.loaded && !j.torn && j.steps.done.is_empty());
        let mut j = Journal {
            steps: steps(&["a"]),
            loaded: true,
            ..Journal::default()
        };
        j.new_run();
        assert!(j.loaded, "a whole journal serves the next run");
        assert_eq!(j.take_whole().unwrap().done.len(), 1);
        assert!(j.take_whole().is_none(), "taken");
    }

    #[test]
    fn own_writes_win_over_the_journal_read() {
        let mut s = Steps::default();
        s.record("a", Some(&json!("mine")));
        let read = |name: &str, state: &str, out: Value| Step {
            name: name.into(),
            attempt: 1,
            state: state.into(),
            output: Some(out),
            error: None,
            started_at: courier_store::now(),
            finished_at: courier_store::now(),
        };
        s.fill(vec![
            read("a", Step::SUCCEEDED, json!("old")),
            read("b", Step::SUCCEEDED, json!("b")),
            read("c", Step::FAILED, json!(null)),
        ]);
        assert_eq!(s.done.get("a"), Some(&json!("mine")));
        assert_eq!(s.done.get("b"), Some(&json!("b")));
        assert!(!s.done.contains_key("c"), "a failed step is run again");
        let before = s.bytes;
        s.record("b", None);
        assert!(s.bytes < before);
    }
}
