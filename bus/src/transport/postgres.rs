//! The PostgreSQL transport: nodes on many hosts through the database they
//! already share, with no broker.
//!
//! # Tables (migration `0007_bus.sql` of courier's store)
//!
//! | table | what |
//! |-------|------|
//! | `bus_messages` | one row per envelope in flight: `channel` is `pool/<queue>` (competing consumers) or `node/<node>` (one node's messages), `body` the envelope's JSON, `taken_until` while a pool message is offered to a consumer |
//! | `bus_nodes` | the nodes that listen now (`seen_at`, refreshed every few seconds): a `task/…` or `executor/…` envelope is written once for each of them, as AMQP's fanout exchange would |
//!
//! # Wake-ups and polling
//!
//! A send inserts its rows and, in the same statement, `NOTIFY`s one channel
//! per target (`cb_` and the md5 of the schema and the target): the
//! notification carries nothing, since a payload is limited to 8,000 bytes
//! and lost when nobody listens. The row is the message. A receiver
//! `LISTEN`s on its node's channel and on each pool it consumes, reads its
//! rows when woken, and reads them anyway every [`POLL`]: a notification
//! lost with a dropped connection or a listener that restarted costs one
//! poll interval, never a message.
//!
//! # Delivery
//!
//! A node's messages are deleted as they are read and handed to the bus
//! (`DELETE … RETURNING`, the same at-least-once promise as AMQP's node
//! queues, which are acknowledged on hand-over). A pool message is *taken*
//! (`FOR UPDATE SKIP LOCKED`, `taken_until` 30 s on) by one consumer, which
//! holds it until its receiver settles it: accepted ones are deleted in
//! batches, refused ones or those not settled in time are offered again.
//! A consumer takes at most `PREFETCH` unsettled pool messages at once.
//! Messages nobody will read (for nodes that are gone) are deleted after
//! `KEEP`, so the table stays small.

use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::Serialize;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions};
use tokio::sync::mpsc;

use super::{Advertisement, Distance, Transport};
use crate::address::Address;
use crate::backoff::Backoff;
use crate::envelope::Envelope;
use crate::error::TransportError;
use crate::router::BusHandle;

/// Messages waiting to be written while the database is slow or away.
const OUTBOX: usize = 8192;
/// The most envelopes one write carries.
const BATCH: usize = 256;
/// Unsettled pool messages a consumer holds at once.
const PREFETCH: usize = 64;
/// How often a receiver reads its rows even if no notification came.
pub const POLL: Duration = Duration::from_millis(500);
/// How long a taken pool message waits to be settled before it is offered
/// again.
const SETTLE_WITHIN: Duration = Duration::from_secs(30);
/// How often a node records that it listens.
const NODE_BEAT: Duration = Duration::from_secs(5);
/// A node silent this long gets no broadcast rows.
const NODE_GONE: &str = "30 seconds";
/// Rows older than this are deleted unread (their reader is gone; every
/// message courier sends is a hint the store backs).
const KEEP: &str = "10 minutes";
/// How often some node vacuums `bus_messages`. Every message is a row
/// inserted and deleted, and autovacuum wakes once a minute at best: left
/// to it the table grew by 318 MiB through 1,000,000 messages (45,000 a
/// second) with never more than 4,000 rows alive. Vacuumed this often it
/// stays at what a few seconds of traffic need.
const VACUUM_EVERY: Duration = Duration::from_secs(2);
/// The advisory lock that makes one node at a time vacuum ("courierb").
const VACUUM_LOCK: i64 = 0x636f_7572_6965_7262;

/// Settings of the PostgreSQL transport.
#[derive(Clone, Debug)]
pub struct PostgresConfig {
    /// How to reach the database (with its schema in `search_path`, if any):
    /// the store's own options.
    pub connect: PgConnectOptions,
}

struct State {
    connected: bool,
    /// Pools this node consumes (what it advertises).
    pools: Vec<String>,
    /// Nodes that listen now, as last read (for `peers`).
    nodes: Vec<String>,
    /// Pool messages handed to the bus and not yet settled: envelope id →
    /// row id and when it was taken.
    unsettled: HashMap<uuid::Uuid, (i64, Instant)>,
    /// Row ids of settled pool messages: accepted (to delete) and refused
    /// (to offer again).
    accepted: Vec<i64>,
    refused: Vec<i64>,
}

struct Shared {
    node: String,
    state: Mutex<State>,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// What the writer task is asked to do.
enum Out {
    /// Write `body` to `channel` (`pool/<q>` or `node/<n>`), or to every
    /// listening node (`None`).
    Send {
        channel: Option<String>,
        body: String,
    },
}

/// The transport; add it to a bus with
/// [`BusHandle::add_transport`](crate::BusHandle::add_transport).
pub struct PostgresTransport<B> {
    shared: Arc<Shared>,
    outbox: mpsc::Sender<Out>,
    /// Tells the receiver that the pools to consume changed.
    pools_changed: mpsc::UnboundedSender<()>,
    _body: PhantomData<fn(B) -> B>,
}

/// The channel a target's rows are written to.
fn channel_of(to: &Address) -> Option<String> {
    match to {
        Address::Pool(q) => Some(format!("pool/{q}")),
        Address::Web { node, .. } => Some(format!("node/{node}")),
        Address::Task(_) | Address::Executor(_) => None,
    }
}

/// The `NOTIFY` channel of a row channel, spelled the same in SQL.
const NOTIFY_NAME: &str = "'cb_' || md5(current_schema() || '/' || c)";

impl<B> PostgresTransport<B>
where
    B: Serialize + DeserializeOwned + Send + 'static,
{
    /// Starts the writer and the listener. Returns at once; the transport
    /// reaches its peers from the first successful connection on.
    pub fn start(config: PostgresConfig, node: &str, bus: BusHandle<B>) -> PostgresTransport<B> {
        let shared = Arc::new(Shared {
            node: node.to_string(),
            state: Mutex::new(State {
                connected: false,
                pools: Vec::new(),
                nodes: Vec::new(),
                unsettled: HashMap::new(),
                accepted: Vec::new(),
                refused: Vec::new(),
            }),
        });
        // A pool of its own: bus traffic never waits behind the store's
        // queries, nor they behind it. One connection listens, one writes,
        // one reads.
        let pool = PgPoolOptions::new()
            .max_connections(3)
            .acquire_timeout(Duration::from_secs(10))
            .connect_lazy_with(
                // A message is a hint the store backs: its row need not wait
                // for the disk. (A crash of PostgreSQL may lose the last
                // fraction of a second of rows; a restart loses none.) This
                // halves a hop: each one is two commits.
                // Deadlines, as the store's (ARCHITECTURE.md, "Every
                // database call has a deadline"): no statement runs for
                // more than 30 s, and the server drops a session whose
                // client stopped answering within about 10 s.
                config.connect.options([
                    ("synchronous_commit", "off"),
                    ("statement_timeout", "30000"),
                    ("idle_in_transaction_session_timeout", "2000"),
                    ("tcp_keepalives_idle", "5"),
                    ("tcp_keepalives_interval", "2"),
                    ("tcp_keepalives_count", "3"),
                    ("tcp_user_timeout", "10000"),
                ]),
            );
        let (tx, rx) = mpsc::channel(OUTBOX);
        let (pools_tx, pools_rx) = mpsc::unbounded_channel();
        // Its own thread and runtime: the bus's arbiter may be torn down
        // with database calls in flight, and a sqlx connection dropped
        // outside a runtime panics. Here the tasks end when the transport
        // is dropped (its channels close), and the runtime goes with them.
        let s = shared.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("courier-bus-pg-{node}"))
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        tracing::error!(error = %e, "cannot start the PostgreSQL bus runtime");
                        return;
                    }
                };
                rt.block_on(async move {
                    let writer = tokio::spawn(write(s.clone(), pool.clone(), rx));
                    receive(s, pool, bus, pools_rx).await;
                    let _ = writer.await;
                });
            });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start the PostgreSQL bus thread");
        }
        PostgresTransport {
            shared,
            outbox: tx,
            pools_changed: pools_tx,
            _body: PhantomData,
        }
    }
}

/// The writer: batches what the bus sends into one statement per kind of
/// target, each with its `NOTIFY`s.
async fn write(shared: Arc<Shared>, pool: PgPool, mut outbox: mpsc::Receiver<Out>) {
    let direct = format!(
        "WITH ins AS (INSERT INTO bus_messages (channel, body) \
                      SELECT * FROM UNNEST($1::text[], $2::text[]) RETURNING channel) \
         SELECT pg_notify({NOTIFY_NAME}, '') FROM (SELECT DISTINCT channel FROM ins) d(c)"
    );
    let fanout = format!(
        "WITH ins AS (INSERT INTO bus_messages (channel, body) \
                      SELECT 'node/' || n.node, b.body FROM UNNEST($1::text[]) AS b(body) \
                      CROSS JOIN bus_nodes n \
                      WHERE n.seen_at > now() - interval '{NODE_GONE}' AND n.node <> $2 \
                      RETURNING channel) \
         SELECT pg_notify({NOTIFY_NAME}, '') FROM (SELECT DISTINCT channel FROM ins) d(c)"
    );
    let mut batch = Vec::with_capacity(BATCH);
    while outbox.recv_many(&mut batch, BATCH).await > 0 {
        let (mut channels, mut bodies, mut everyone) = (Vec::new(), Vec::new(), Vec::new());
        for out in batch.drain(..) {
            match out {
                Out::Send {
                    channel: Some(c),
                    body,
                } => {
                    channels.push(c);
                    bodies.push(body);
                }
                Out::Send {
                    channel: None,
                    body,
                } => everyone.push(body),
            }
        }
        if !bodies.is_empty() {
            if let Err(e) = sqlx::query(&direct)
                .bind(&channels)
                .bind(&bodies)
                .execute(&pool)
                .await
            {
                // Hints lost with the database: the store backs each one.
                tracing::warn!(error = %e, n = bodies.len(), "could not write bus messages");
            }
        }
        if !everyone.is_empty() {
            if let Err(e) = sqlx::query(&fanout)
                .bind(&everyone)
                .bind(&shared.node)
                .execute(&pool)
                .await
            {
                tracing::warn!(error = %e, n = everyone.len(), "could not write bus messages");
            }
        }
    }
}

/// The receiver: listens, reads its node's rows and its pools' rows when
/// woken or every [`POLL`], settles pool messages, keeps its node row
/// fresh and the tables small. Reconnects on its own; ends when the
/// transport is dropped.
async fn receive<B>(
    shared: Arc<Shared>,
    pool: PgPool,
    bus: BusHandle<B>,
    mut pools_changed: mpsc::UnboundedReceiver<()>,
) where
    B: Serialize + DeserializeOwned + Send + 'static,
{
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
    loop {
        match session(&shared, &pool, &bus, &mut pools_changed).await {
            Ok(()) => {
                pool.close().await;
                return;
            }
            Err(e) => {
                let was_connected = std::mem::replace(&mut shared.state().connected, false);
                let delay = backoff.after_session(was_connected);
                tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "PostgreSQL bus connection lost");
                tokio::time::sleep(delay).await;
            }
        }
    }
}

/// The `NOTIFY` channel name of row channel `c`.
async fn notify_name(pool: &PgPool, c: &str) -> sqlx::Result<String> {
    let sql = format!("SELECT {NOTIFY_NAME} FROM (SELECT $1::text) x(c)");
    let (name,): (String,) = sqlx::query_as(&sql).bind(c).fetch_one(pool).await?;
    Ok(name)
}

async fn session<B>(
    shared: &Arc<Shared>,
    pool: &PgPool,
    bus: &BusHandle<B>,
    pools_changed: &mut mpsc::UnboundedReceiver<()>,
) -> sqlx::Result<()>
where
    B: Serialize + DeserializeOwned + Send + 'static,
{
    let mut listener = PgListener::connect_with(pool).await?;
    let node_channel = format!("node/{}", shared.node);
    // Notify name → row channel, for what this node listens to.
    let mut listening: HashMap<String, String> = HashMap::new();
    let name = notify_name(pool, &node_channel).await?;
    listener.listen(&name).await?;
    listening.insert(name, node_channel.clone());
    beat(shared, pool).await?;
    // Pool messages taken before a reconnect were offered again by then
    // (or will be when their time runs out).
    shared.state().unsettled.clear();
    shared.state().connected = true;
    tracing::info!(node = %shared.node, "PostgreSQL bus listening");
    let mut poll = tokio::time::interval(POLL);
    let connected_at = Instant::now();
    let mut last_beat = Instant::now();
    let mut last_sweep = Instant::now();
    let mut last_vacuum = Instant::now();
    let mut consumed: Vec<String> = Vec::new();
    loop {
        // What to read now: every channel on a poll, the woken one otherwise.
        let due: Vec<String> = tokio::select! {
            n = listener.try_recv() => match n? {
                Some(n) => match listening.get(n.channel()) {
                    Some(c) => vec![c.clone()],
                    None => continue,
                },
                // The connection was lost and made again: what was notified
                // meanwhile is only in the tables.
                None => listening.values().cloned().collect(),
            },
            _ = poll.tick() => {
                // Often at first, so that peers starting together see each
                // other at once; then every NODE_BEAT.
                if last_beat.elapsed() >= NODE_BEAT || connected_at.elapsed() < NODE_BEAT {
                    beat(shared, pool).await?;
                    last_beat = Instant::now();
                }
                if last_sweep.elapsed() >= Duration::from_secs(30) {
                    sweep(pool).await?;
                    last_sweep = Instant::now();
                }
                if last_vacuum.elapsed() >= VACUUM_EVERY {
                    vacuum(pool).await?;
                    last_vacuum = Instant::now();
                }
                reoffer_stale(shared);
                listening.values().cloned().collect()
            }
            changed = pools_changed.recv() => {
                if changed.is_none() {
                    // The transport was dropped.
                    return Ok(());
                }
                let want = shared.state().pools.clone();
                for q in consumed.iter().filter(|q| !want.contains(q)) {
                    let c = format!("pool/{q}");
                    if let Some(name) = listening.iter().find(|(_, v)| **v == c).map(|(k, _)| k.clone()) {
                        listener.unlisten(&name).await?;
                        listening.remove(&name);
                    }
                }
                let mut fresh = Vec::new();
                for q in want.iter().filter(|q| !consumed.contains(q)) {
                    let c = format!("pool/{q}");
                    let name = notify_name(pool, &c).await?;
                    listener.listen(&name).await?;
                    listening.insert(name, c.clone());
                    fresh.push(c);
                }
                consumed = want;
                fresh
            }
        };
        settle_rows(shared, pool).await?;
        for c in due {
            if c == node_channel {
                read_node(pool, bus, &c).await?;
            } else {
                read_pool(shared, pool, bus, &c).await?;
            }
        }
    }
}

/// Records that this node listens, and reads who else does.
async fn beat(shared: &Shared, pool: &PgPool) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO bus_nodes (node, seen_at) VALUES ($1, now()) \
         ON CONFLICT (node) DO UPDATE SET seen_at = now()",
    )
    .bind(&shared.node)
    .execute(pool)
    .await?;
    let nodes: Vec<(String,)> = sqlx::query_as(&format!(
        "SELECT node FROM bus_nodes WHERE seen_at > now() - interval '{NODE_GONE}' ORDER BY node"
    ))
    .fetch_all(pool)
    .await?;
    shared.state().nodes = nodes.into_iter().map(|n| n.0).collect();
    Ok(())
}

/// Deletes rows nobody will read, and nodes long gone, in bounded batches.
async fn sweep(pool: &PgPool) -> sqlx::Result<()> {
    sqlx::query(&format!(
        "DELETE FROM bus_messages WHERE id IN (SELECT id FROM bus_messages \
         WHERE created_at < now() - interval '{KEEP}' ORDER BY id LIMIT 5000)"
    ))
    .execute(pool)
    .await?;
    sqlx::query("DELETE FROM bus_nodes WHERE seen_at < now() - interval '1 day'")
        .execute(pool)
        .await?;
    Ok(())
}

/// Vacuums `bus_messages` unless another node is at it: space freed by
/// delivered rows is reused before the table grows.
async fn vacuum(pool: &PgPool) -> sqlx::Result<()> {
    let mut conn = pool.acquire().await?;
    let (got,): (bool,) = sqlx::query_as("SELECT pg_try_advisory_lock($1)")
        .bind(VACUUM_LOCK)
        .fetch_one(&mut *conn)
        .await?;
    if got {
        let done = sqlx::query("VACUUM bus_messages").execute(&mut *conn).await;
        sqlx::query("SELECT pg_advisory_unlock($1)")
            .bind(VACUUM_LOCK)
            .execute(&mut *conn)
            .await?;
        done?;
    }
    Ok(())
}

/// Reads (and deletes) this node's messages, oldest first.
async fn read_node<B>(pool: &PgPool, bus: &BusHandle<B>, channel: &str) -> sqlx::Result<()>
where
    B: Serialize + DeserializeOwned + Send + 'static,
{
    loop {
        let rows: Vec<(i64, String)> = sqlx::query_as(
            "DELETE FROM bus_messages WHERE id IN (SELECT id FROM bus_messages WHERE channel = $1 \
             ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED) RETURNING id, body",
        )
        .bind(channel)
        .bind(BATCH as i64)
        .fetch_all(pool)
        .await?;
        let n = rows.len();
        let mut rows = rows;
        rows.sort_by_key(|r| r.0);
        for (_, body) in rows {
            if let Some(env) = decode::<B>(channel, &body) {
                bus.inbound(env);
            }
        }
        if n < BATCH {
            return Ok(());
        }
    }
}

/// Takes up to the free prefetch of pool messages and hands them to the
/// bus, to be settled by their receivers.
async fn read_pool<B>(
    shared: &Shared,
    pool: &PgPool,
    bus: &BusHandle<B>,
    channel: &str,
) -> sqlx::Result<()>
where
    B: Serialize + DeserializeOwned + Send + 'static,
{
    let room = PREFETCH.saturating_sub(shared.state().unsettled.len());
    if room == 0 {
        return Ok(());
    }
    let sql = format!(
        "UPDATE bus_messages SET taken_until = now() + interval '{} seconds' \
         WHERE id IN (SELECT id FROM bus_messages WHERE channel = $1 \
                        AND (taken_until IS NULL OR taken_until < now()) \
                      ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED) \
         RETURNING id, body",
        SETTLE_WITHIN.as_secs()
    );
    let mut rows: Vec<(i64, String)> = sqlx::query_as(&sql)
        .bind(channel)
        .bind(room as i64)
        .fetch_all(pool)
        .await?;
    rows.sort_by_key(|r| r.0);
    for (id, body) in rows {
        match decode::<B>(channel, &body) {
            Some(env) => {
                shared
                    .state()
                    .unsettled
                    .insert(env.id, (id, Instant::now()));
                bus.inbound(env);
            }
            // Nobody can read it: drop it rather than offer it forever.
            None => shared.state().accepted.push(id),
        }
    }
    Ok(())
}

/// Deletes accepted pool messages and offers refused ones again.
async fn settle_rows(shared: &Shared, pool: &PgPool) -> sqlx::Result<()> {
    let (accepted, refused) = {
        let mut st = shared.state();
        (
            std::mem::take(&mut st.accepted),
            std::mem::take(&mut st.refused),
        )
    };
    if !accepted.is_empty() {
        sqlx::query("DELETE FROM bus_messages WHERE id = ANY($1)")
            .bind(&accepted)
            .execute(pool)
            .await?;
    }
    if !refused.is_empty() {
        sqlx::query("UPDATE bus_messages SET taken_until = NULL WHERE id = ANY($1)")
            .bind(&refused)
            .execute(pool)
            .await?;
    }
    Ok(())
}

/// Pool messages nobody settled in time (their receiver vanished) are
/// offered again.
fn reoffer_stale(shared: &Shared) {
    let mut st = shared.state();
    let stale: Vec<uuid::Uuid> = st
        .unsettled
        .iter()
        .filter(|(_, (_, at))| at.elapsed() > SETTLE_WITHIN)
        .map(|(id, _)| *id)
        .collect();
    for id in stale {
        if let Some((row, _)) = st.unsettled.remove(&id) {
            tracing::warn!("a pool message was not settled in time; offering it again");
            st.refused.push(row);
        }
    }
}

fn decode<B: DeserializeOwned>(channel: &str, body: &str) -> Option<Envelope<B>> {
    match serde_json::from_str::<Envelope<B>>(body) {
        Ok(env) if env.is_supported() => Some(env),
        Ok(env) => {
            tracing::error!(%channel, v = env.v, "envelope of an unsupported version; dropped");
            None
        }
        Err(e) => {
            tracing::error!(%channel, error = %e, "undecodable bus message; dropped");
            None
        }
    }
}

impl<B> Transport<B> for PostgresTransport<B>
where
    B: Serialize + DeserializeOwned + Send + 'static,
{
    fn name(&self) -> &'static str {
        "postgres"
    }

    fn distance(&self) -> Distance {
        Distance::Network
    }

    fn reaches(&self, to: &Address) -> bool {
        super::network_reaches(self.shared.state().connected, &self.shared.node, to)
    }

    fn send(&mut self, envelope: Envelope<B>) -> Result<(), TransportError> {
        let body =
            serde_json::to_string(&envelope).map_err(|e| TransportError::Encode(e.to_string()))?;
        self.outbox
            .try_send(Out::Send {
                channel: channel_of(&envelope.to),
                body,
            })
            .map_err(|_| TransportError::Other("PostgreSQL bus outbox full".into()))
    }

    fn advertise(&mut self, ads: &Advertisement) {
        let mut st = self.shared.state();
        if st.pools != ads.pools {
            st.pools = ads.pools.clone();
            let _ = self.pools_changed.send(());
        }
    }

    fn settle(&mut self, id: uuid::Uuid, accept: bool) {
        let mut st = self.shared.state();
        if let Some((row, _)) = st.unsettled.remove(&id) {
            if accept {
                st.accepted.push(row);
            } else {
                st.refused.push(row);
            }
        }
    }

    fn peers(&self) -> Vec<String> {
        let st = self.shared.state();
        if st.connected {
            st.nodes
                .iter()
                .filter(|n| **n != self.shared.node)
                .cloned()
                .collect()
        } else {
            Vec::new()
        }
    }
}
