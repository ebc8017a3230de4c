//! Group commit: many callers' writes of one kind in one transaction,
//! with no timer.
//!
//! The first caller to arrive while no flush is running *leads*: it writes
//! its own request and every request queued so far in one transaction.
//! Callers that arrive meanwhile queue. When the flush ends, each queued
//! caller gets its own outcome, and the lead passes to the oldest caller
//! still queued, which writes everything queued by then. So a lone caller
//! writes at once, exactly as without batching, and under load each flush
//! carries whatever arrived during the previous one: the batch grows with
//! the load, and no caller waits on a timer.
//!
//! Each caller writes at most one flush (the one with its own request), so
//! none is kept busy writing for others. A leader that goes away mid-flush
//! (its future dropped) still passes the lead on, so the queue never
//! stalls; the callers it carried hear a transient error, and their retry
//! writes again (each write is fenced, so a write that did land refuses
//! the second).
//!
//! A flush that fails for good (not a transient error) with more than one
//! request is written again one request at a time, so one bad request does
//! not fail its neighbours.
//!
//! The group holds a bounded number of requests (queued or in the flush
//! being written). A caller past the bound waits *before* its request is
//! taken, in arrival order (a fair semaphore), so an overload slows the
//! callers — an HTTP request waits, and with it its connection — instead of
//! growing a queue in memory. A request's room travels with it (queued, in
//! the lead, carried in a flush) and comes back only when the request is
//! written or dropped, so a caller that goes away while its request is
//! still queued does not free room the request still takes.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore};

use crate::error::{Error, Result};

/// A flush: the requests, this caller's first; one outcome per request in
/// order, or one error for the whole transaction.
pub(crate) type Flush<'a, R> = Pin<Box<dyn Future<Output = Result<Vec<Result<R>>>> + Send + 'a>>;

/// What a queued caller hears: its outcome, or the lead (with its request
/// back, to write).
enum Turn<T, R> {
    Done(Result<R>),
    Lead(T, OwnedSemaphorePermit),
}

struct Queued<T, R> {
    request: T,
    /// The request's place in the bound, given back when it is dropped.
    room: OwnedSemaphorePermit,
    reply: oneshot::Sender<Turn<T, R>>,
}

struct State<T, R> {
    flushing: bool,
    queue: VecDeque<Queued<T, R>>,
}

/// A group-commit point for requests `T` with outcomes `R`.
pub(crate) struct Group<T, R> {
    state: Mutex<State<T, R>>,
    /// The most requests one flush carries.
    max: usize,
    /// One permit per request the group may hold (queued or being written).
    room: Arc<Semaphore>,
    bound: usize,
}

impl<T, R> std::fmt::Debug for Group<T, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Group")
            .field("max", &self.max)
            .field("bound", &self.bound)
            .finish()
    }
}

impl<T, R> Group<T, R> {
    /// A group whose flushes carry at most `max` requests and which holds at
    /// most `bound` (at least `max`) at once.
    pub(crate) fn new(max: usize, bound: usize) -> Self {
        let max = max.max(1);
        let bound = bound.max(max);
        Group {
            state: Mutex::new(State {
                flushing: false,
                queue: VecDeque::new(),
            }),
            max,
            room: Arc::new(Semaphore::new(bound)),
            bound,
        }
    }

    /// Requests held now (queued or being written).
    pub(crate) fn held(&self) -> usize {
        self.bound - self.room.available_permits()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State<T, R>> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Passes the lead to the oldest caller still waiting, or ends the
    /// flushing.
    fn hand_off(&self) {
        let mut st = self.lock();
        while let Some(next) = st.queue.pop_front() {
            // A caller that went away cannot lead: its request goes
            // unwritten (nobody waits for it), and the next one leads.
            if next.reply.send(Turn::Lead(next.request, next.room)).is_ok() {
                return;
            }
        }
        st.flushing = false;
    }

    /// Writes `request` together with whatever else is queued, through
    /// `flush`; returns this request's outcome.
    pub(crate) async fn submit<F>(&self, request: T, flush: F) -> Result<R>
    where
        F: for<'a> Fn(&'a [T]) -> Flush<'a, R>,
    {
        // The semaphore is never closed, so acquiring only waits.
        let room = self
            .room
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| transient("the group is closed"))?;
        let waiting = {
            let mut st = self.lock();
            if st.flushing {
                let (tx, rx) = oneshot::channel();
                st.queue.push_back(Queued {
                    request,
                    room,
                    reply: tx,
                });
                Err(rx)
            } else {
                st.flushing = true;
                Ok((request, room))
            }
        };
        // Held until this flush is written.
        let (request, _room) = match waiting {
            Ok(lead) => lead,
            Err(rx) => match rx.await {
                Ok(Turn::Done(outcome)) => return outcome,
                Ok(Turn::Lead(request, room)) => (request, room),
                // The leader went away with this request.
                Err(_) => return Err(transient("the write it was part of was abandoned")),
            },
        };
        struct Lead<'g, T, R>(&'g Group<T, R>);
        impl<T, R> Drop for Lead<'_, T, R> {
            fn drop(&mut self) {
                self.0.hand_off();
            }
        }
        let _lead = Lead(self);
        let carried: Vec<Queued<T, R>> = {
            let mut st = self.lock();
            let n = st.queue.len().min(self.max - 1);
            st.queue.drain(..n).collect()
        };
        let mut requests = Vec::with_capacity(carried.len() + 1);
        requests.push(request);
        let mut replies = Vec::with_capacity(carried.len());
        // The carried requests' room, held until they are written.
        let mut _rooms = Vec::with_capacity(carried.len());
        for q in carried {
            requests.push(q.request);
            replies.push(q.reply);
            _rooms.push(q.room);
        }
        let mut outcomes = match flush(&requests).await {
            Ok(outcomes) => outcomes,
            Err(e) if requests.len() > 1 && !e.is_transient() => {
                // One at a time: only the request at fault fails.
                let mut each = Vec::with_capacity(requests.len());
                for r in &requests {
                    each.push(match flush(std::slice::from_ref(r)).await {
                        Ok(mut o) if o.len() == 1 => o.remove(0),
                        Ok(_) => Err(Error::Corrupt("a flush lost its outcome".into())),
                        Err(e) => Err(e),
                    });
                }
                each
            }
            Err(e) => {
                for reply in replies {
                    let _ = reply.send(Turn::Done(Err(transient(&e.to_string()))));
                }
                return Err(e);
            }
        };
        if outcomes.len() != requests.len() {
            outcomes.resize_with(requests.len(), || {
                Err(Error::Corrupt("a flush lost its outcome".into()))
            });
        }
        let mut outcomes = outcomes.into_iter();
        let own = outcomes.next().expect("one outcome per request");
        for (reply, outcome) in replies.into_iter().zip(outcomes) {
            let _ = reply.send(Turn::Done(outcome));
        }
        own
    }
}

/// A transient error for a caller whose request was in a flush that failed
/// (or was abandoned): its retry writes it again.
fn transient(message: &str) -> Error {
    Error::from(sqlx::Error::Io(std::io::Error::other(message.to_string())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    /// Requests are numbers; a flush records its size and returns each
    /// number doubled, or fails for 999.
    fn flush(sizes: Arc<Mutex<Vec<usize>>>, rs: &[u32]) -> Flush<'_, u32> {
        Box::pin(async move {
            sizes.lock().unwrap().push(rs.len());
            tokio::task::yield_now().await;
            if rs.contains(&999) {
                return Err(Error::Conflict("999".into()));
            }
            Ok(rs.iter().map(|r| Ok(r * 2)).collect())
        })
    }

    #[tokio::test]
    async fn a_lone_caller_writes_alone() {
        let g = Group::new(100, 100);
        let sizes = Arc::new(Mutex::new(Vec::new()));
        assert_eq!(g.submit(4, |rs| flush(sizes.clone(), rs)).await.unwrap(), 8);
        assert_eq!(*sizes.lock().unwrap(), vec![1]);
    }

    #[tokio::test]
    async fn callers_arriving_during_a_flush_share_the_next() {
        let g = Arc::new(Group::new(100, 100));
        let sizes = Arc::new(Mutex::new(Vec::new()));
        let local = tokio::task::LocalSet::new();
        let done = Arc::new(AtomicUsize::new(0));
        for i in 0..50u32 {
            let (g, sizes, done) = (g.clone(), sizes.clone(), done.clone());
            local.spawn_local(async move {
                let out = g.submit(i, |rs| flush(sizes.clone(), rs)).await.unwrap();
                assert_eq!(out, i * 2, "each caller gets its own outcome");
                done.fetch_add(1, Ordering::Relaxed);
            });
        }
        local.await;
        assert_eq!(done.load(Ordering::Relaxed), 50);
        let sizes = sizes.lock().unwrap().clone();
        assert_eq!(sizes.iter().sum::<usize>(), 50, "{sizes:?}");
        assert_eq!(sizes[0], 1, "the first caller does not wait: {sizes:?}");
        assert_eq!(sizes[1], 49, "the rest arrived during the first: {sizes:?}");
    }

    #[tokio::test]
    async fn a_bad_request_fails_alone() {
        let g = Arc::new(Group::new(100, 100));
        let sizes = Arc::new(Mutex::new(Vec::new()));
        let local = tokio::task::LocalSet::new();
        let outcomes = Arc::new(Mutex::new(Vec::new()));
        for i in [1u32, 2, 999, 4] {
            let (g, sizes, outcomes) = (g.clone(), sizes.clone(), outcomes.clone());
            local.spawn_local(async move {
                let out = g.submit(i, |rs| flush(sizes.clone(), rs)).await;
                outcomes.lock().unwrap().push((i, out.is_ok()));
            });
        }
        local.await;
        let mut outcomes = outcomes.lock().unwrap().clone();
        outcomes.sort();
        assert_eq!(
            outcomes,
            vec![(1, true), (2, true), (4, true), (999, false)]
        );
    }

    #[tokio::test]
    async fn a_flush_carries_at_most_max() {
        let g = Arc::new(Group::new(10, 1000));
        let sizes = Arc::new(Mutex::new(Vec::new()));
        let local = tokio::task::LocalSet::new();
        for i in 0..35u32 {
            let (g, sizes) = (g.clone(), sizes.clone());
            local.spawn_local(async move {
                g.submit(i, |rs| flush(sizes.clone(), rs)).await.unwrap();
            });
        }
        local.await;
        let sizes = sizes.lock().unwrap().clone();
        assert!(sizes.iter().all(|n| *n <= 10), "{sizes:?}");
        assert_eq!(sizes.iter().sum::<usize>(), 35);
    }

    #[tokio::test]
    async fn a_leader_that_goes_away_passes_the_lead_on() {
        let g = Arc::new(Group::<u32, u32>::new(100, 100));
        let local = tokio::task::LocalSet::new();
        // A leader whose flush never ends, dropped while others queue.
        let stuck = {
            let g = g.clone();
            local.spawn_local(async move {
                let _ = g.submit(0, |_| Box::pin(std::future::pending())).await;
            })
        };
        let sizes = Arc::new(Mutex::new(Vec::new()));
        let after = {
            let (g, sizes) = (g.clone(), sizes.clone());
            local.spawn_local(async move {
                tokio::task::yield_now().await;
                g.submit(7, |rs| flush(sizes.clone(), rs)).await
            })
        };
        local
            .run_until(async move {
                tokio::task::yield_now().await;
                tokio::task::yield_now().await;
                stuck.abort();
                assert_eq!(after.await.unwrap().unwrap(), 14);
            })
            .await;
    }

    #[tokio::test]
    async fn an_overload_waits_outside_the_bound() {
        // 5,000 callers at once against a group that may hold 64: every
        // flush sees at most 64 held, and every caller gets its own outcome.
        let g = Arc::new(Group::new(16, 64));
        let peak = Arc::new(AtomicUsize::new(0));
        let sizes = Arc::new(Mutex::new(Vec::new()));
        let local = tokio::task::LocalSet::new();
        let done = Arc::new(AtomicUsize::new(0));
        // (999 is the test flush's bad request: left out.)
        for i in (0..5_001u32).filter(|i| *i != 999) {
            let (g, peak, sizes, done) = (g.clone(), peak.clone(), sizes.clone(), done.clone());
            local.spawn_local(async move {
                let g2 = g.clone();
                let out = g
                    .submit(i, |rs| {
                        peak.fetch_max(g2.held(), Ordering::Relaxed);
                        flush(sizes.clone(), rs)
                    })
                    .await
                    .unwrap();
                assert_eq!(out, i * 2);
                done.fetch_add(1, Ordering::Relaxed);
            });
        }
        local.await;
        assert_eq!(done.load(Ordering::Relaxed), 5_000);
        assert_eq!(g.held(), 0, "nothing is held once all are answered");
        let peak = peak.load(Ordering::Relaxed);
        assert!(peak <= 64, "held {peak} > 64");
        assert!(peak > 16, "the queue did fill past one flush: {peak}");
        let sizes = sizes.lock().unwrap().clone();
        assert_eq!(sizes.iter().sum::<usize>(), 5_000);
        assert!(sizes.iter().all(|n| *n <= 16), "{sizes:?}");
    }

    #[tokio::test]
    async fn a_caller_past_the_bound_is_not_queued_until_there_is_room() {
        let g = Arc::new(Group::<u32, u32>::new(2, 2));
        let local = tokio::task::LocalSet::new();
        let release = Arc::new(tokio::sync::Notify::new());
        let mut handles = Vec::new();
        for i in 0..3u32 {
            let (g, release) = (g.clone(), release.clone());
            handles.push(local.spawn_local(async move {
                g.submit(i, move |rs| {
                    let release = release.clone();
                    Box::pin(async move {
                        release.notified().await;
                        Ok(rs.iter().map(|r| Ok(r + 1)).collect())
                    })
                })
                .await
            }));
        }
        local
            .run_until(async move {
                for _ in 0..10 {
                    tokio::task::yield_now().await;
                }
                // The leader writes 0, 1 queues; 2 waits outside.
                assert_eq!(g.held(), 2);
                assert_eq!(g.lock().queue.len(), 1);
                for _ in 0..3 {
                    release.notify_one();
                    for _ in 0..10 {
                        tokio::task::yield_now().await;
                    }
                }
                let mut outs = Vec::new();
                for h in handles {
                    outs.push(h.await.unwrap().unwrap());
                }
                assert_eq!(outs, vec![1, 2, 3]);
                assert_eq!(g.held(), 0);
            })
            .await;
    }
    #[tokio::test]
    async fn a_queued_request_keeps_its_room_when_its_caller_goes_away() {
        let g = Arc::new(Group::<u32, u32>::new(2, 2));
        let local = tokio::task::LocalSet::new();
        let release = Arc::new(tokio::sync::Notify::new());
        let written = Arc::new(Mutex::new(Vec::new()));
        let submit = |i: u32| {
            let (g, release, written) = (g.clone(), release.clone(), written.clone());
            local.spawn_local(async move {
                g.submit(i, move |rs| {
                    let (release, written) = (release.clone(), written.clone());
                    Box::pin(async move {
                        release.notified().await;
                        written.lock().unwrap().extend_from_slice(rs);
                        Ok(rs.iter().map(|r| Ok(r + 1)).collect())
                    })
                })
                .await
            })
        };
        let lead = submit(0);
        let queued = submit(1);
        let (g, release, written) = (g.clone(), release.clone(), written.clone());
        local
            .run_until(async move {
                for _ in 0..10 {
                    tokio::task::yield_now().await;
                }
                assert_eq!(g.held(), 2);
                // The queued caller goes away: its request is still in the
                // queue, so it still takes its room.
                queued.abort();
                for _ in 0..10 {
                    tokio::task::yield_now().await;
                }
                assert_eq!(g.lock().queue.len(), 1);
                assert_eq!(
                    g.held(),
                    2,
                    "a dropped caller's queued request still counts"
                );
                release.notify_one();
                assert_eq!(lead.await.unwrap().unwrap(), 1);
                // Nobody waits for the abandoned request: not written, and
                // its room is back.
                assert_eq!(g.held(), 0);
                assert_eq!(*written.lock().unwrap(), vec![0]);
            })
            .await;
    }
}
