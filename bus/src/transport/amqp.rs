//! The AMQP transport: nodes on many hosts through RabbitMQ (lapin).
//!
//! # Topology (names start with a configurable prefix, `courier` by default)
//!
//! | name | kind | what |
//! |------|------|------|
//! | `<prefix>` | direct exchange, durable | routes `pool.<kind>` and `node.<node>` keys |
//! | `<prefix>.broadcast` | fanout exchange, durable | messages for `task/…` and `executor/…`: every node gets them, the one that has the address delivers |
//! | `<prefix>.pool.<kind>` | durable queue, bound `pool.<kind>` | `start_task` for a kind: competing consumers, kept while no executor runs |
//! | `<prefix>.node.<node>` | exclusive auto-delete queue, bound `node.<node>` and to the broadcast exchange | messages for one node |
//! | `<prefix>.dead` | fanout exchange + durable queue | dead letters: pool messages that could not be decoded |
//!
//! Messages are envelopes as JSON ([PROTOCOL.md](../../PROTOCOL.md)), sent
//! persistent with publisher confirms; a nack is logged (the durable state
//! covers the loss). Pool queues are consumed by the nodes that advertise
//! the pool, with a bounded prefetch. A pool delivery is acknowledged only
//! when its receiver settles it — the executor, once its claim is committed
//! (or found needless) — and offered again if it is not settled within 30 s
//! or the connection drops; a node-queue delivery is acknowledged once it
//! is handed to the bus. One that cannot be decoded is rejected without
//! requeue and goes to the dead-letter queue with a log line.
//!
//! The connection is supervised: on loss the transport reconnects with
//! backoff (steps from 100 ms to 5 s, each wait up to twice its step), declares its topology again and resumes its
//! consumers. While it is down it reaches nothing, so the bus drops what it
//! would have sent, which courier's recovery sweep makes harmless.

use std::collections::{HashMap, HashSet};
use std::marker::PhantomData;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures_util::StreamExt;
use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, BasicRejectOptions,
    ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::mpsc;

use super::{Advertisement, Distance, Transport};
use crate::address::Address;
use crate::backoff::Backoff;
use crate::envelope::Envelope;
use crate::error::TransportError;
use crate::router::BusHandle;

/// Messages waiting to be published while the broker is slow or away.
const OUTBOX: usize = 8192;
/// Unacknowledged deliveries a pool consumer holds at once.
const PREFETCH: u16 = 64;

/// Settings of the AMQP transport.
#[derive(Clone, Debug)]
pub struct AmqpConfig {
    /// `amqp://USER:PASS@HOST:PORT/VHOST`.
    pub url: String,
    /// Prefix of every exchange and queue name (one deployment per prefix).
    pub prefix: String,
}

struct State {
    connected: bool,
    /// Pools this node consumes (what it advertises).
    pools: Vec<String>,
    /// Pool deliveries handed to the bus and not yet settled by their
    /// receiver, by envelope id, with when they arrived.
    unsettled: HashMap<uuid::Uuid, (lapin::Acker, std::time::Instant)>,
}

struct Shared {
    node: String,
    config: AmqpConfig,
    state: Mutex<State>,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
    fn exchange(&self) -> String {
        self.config.prefix.clone()
    }
    fn broadcast(&self) -> String {
        format!("{}.broadcast", self.config.prefix)
    }
    fn dead(&self) -> String {
        format!("{}.dead", self.config.prefix)
    }
    fn pool_queue(&self, kind: &str) -> String {
        format!("{}.pool.{kind}", self.config.prefix)
    }
    fn node_queue(&self) -> String {
        format!("{}.node.{}", self.config.prefix, self.node)
    }
}

/// One outgoing message: exchange, routing key, JSON bytes; or a change of
/// the pools to consume.
enum Out {
    Publish {
        exchange: String,
        key: String,
        body: Vec<u8>,
        pool: Option<String>,
    },
    Pools(Vec<String>),
}

/// The transport; add it to a bus with
/// [`BusHandle::add_transport`](crate::BusHandle::add_transport).
pub struct AmqpTransport<B> {
    shared: Arc<Shared>,
    outbox: mpsc::Sender<Out>,
    _body: PhantomData<fn(B) -> B>,
}

impl<B> AmqpTransport<B>
where
    B: Serialize + DeserializeOwned + Send + 'static,
{
    /// Starts the supervised connection. Returns at once; the transport
    /// reaches its peers from the first successful connection on.
    pub fn start(config: AmqpConfig, node: &str, bus: BusHandle<B>) -> AmqpTransport<B> {
        let shared = Arc::new(Shared {
            node: node.to_string(),
            config,
            state: Mutex::new(State {
                connected: false,
                pools: Vec::new(),
                unsettled: HashMap::new(),
            }),
        });
        let (tx, rx) = mpsc::channel(OUTBOX);
        tokio::task::spawn_local(supervise(shared.clone(), bus, rx));
        AmqpTransport {
            shared,
            outbox: tx,
            _body: PhantomData,
        }
    }
}

fn dead_letter_args(shared: &Shared) -> FieldTable {
    let mut args = FieldTable::default();
    args.insert(
        "x-dead-letter-exchange".into(),
        AMQPValue::LongString(shared.dead().into()),
    );
    args
}

/// Declares the exchanges, the dead-letter queue and this node's queue.
async fn declare(shared: &Shared, ch: &Channel) -> lapin::Result<()> {
    let durable = ExchangeDeclareOptions {
        durable: true,
        ..Default::default()
    };
    ch.exchange_declare(
        shared.exchange().as_str().into(),
        ExchangeKind::Direct,
        durable,
        FieldTable::default(),
    )
    .await?;
    ch.exchange_declare(
        shared.broadcast().as_str().into(),
        ExchangeKind::Fanout,
        durable,
        FieldTable::default(),
    )
    .await?;
    ch.exchange_declare(
        shared.dead().as_str().into(),
        ExchangeKind::Fanout,
        durable,
        FieldTable::default(),
    )
    .await?;
    ch.queue_declare(
        shared.dead().as_str().into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await?;
    ch.queue_bind(
        shared.dead().as_str().into(),
        shared.dead().as_str().into(),
        "".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await?;
    let nq = shared.node_queue();
    ch.queue_declare(
        nq.as_str().into(),
        QueueDeclareOptions {
            exclusive: true,
            auto_delete: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await?;
    ch.queue_bind(
        nq.as_str().into(),
        shared.exchange().as_str().into(),
        format!("node.{}", shared.node).as_str().into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await?;
    ch.queue_bind(
        nq.as_str().into(),
        shared.broadcast().as_str().into(),
        "".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await?;
    Ok(())
}

/// Declares a kind's durable pool queue (idempotent).
async fn declare_pool(shared: &Shared, ch: &Channel, kind: &str) -> lapin::Result<()> {
    let q = shared.pool_queue(kind);
    ch.queue_declare(
        q.as_str().into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        dead_letter_args(shared),
    )
    .await?;
    ch.queue_bind(
        q.as_str().into(),
        shared.exchange().as_str().into(),
        format!("pool.{kind}").as_str().into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
}

/// How long a pool delivery may wait to be settled before it is offered
/// again (its receiver vanished without a word).
const SETTLE_WITHIN: Duration = Duration::from_secs(30);

/// Consumes `queue` into the bus until the channel fails. With `hold`, a
/// delivery is acknowledged only when its receiver settles it (a pool
/// message: after the claim is committed); otherwise at once.
fn consume<B>(
    shared: Arc<Shared>,
    queue: String,
    ch: Channel,
    bus: BusHandle<B>,
    tag: String,
    hold: bool,
) where
    B: Serialize + DeserializeOwned + Send + 'static,
{
    tokio::task::spawn_local(async move {
        let mut deliveries = match ch
            .basic_consume(
                queue.as_str().into(),
                tag.as_str().into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
        {
            Ok(c) => c,
            // The pool was given up (the executor filled up) before this
            // task ran: nothing to consume, nothing to say.
            Err(_) if !ch.status().connected() => {
                tracing::debug!(%queue, "channel closed before consuming");
                return;
            }
            Err(e) => {
                tracing::warn!(%queue, error = %e, "cannot consume");
                return;
            }
        };
        while let Some(d) = deliveries.next().await {
            let Ok(d) = d else { break };
            match serde_json::from_slice::<Envelope<B>>(&d.data) {
                Ok(env) if env.is_supported() => {
                    if hold {
                        shared
                            .state()
                            .unsettled
                            .insert(env.id, (d.acker.clone(), std::time::Instant::now()));
                        bus.inbound(env);
                    } else {
                        bus.inbound(env);
                        let _ = d.ack(Default::default()).await;
                    }
                }
                Ok(env) => {
                    tracing::error!(%queue, v = env.v, "envelope of an unsupported version; dead-lettered");
                    let _ = d.reject(BasicRejectOptions { requeue: false }).await;
                }
                Err(e) => {
                    tracing::error!(%queue, error = %e, "undecodable message; dead-lettered");
                    let _ = d.reject(BasicRejectOptions { requeue: false }).await;
                }
            }
        }
        tracing::debug!(%queue, "consumer ended");
    });
}

/// Connects, declares, consumes and publishes; reconnects with backoff.
async fn supervise<B>(shared: Arc<Shared>, bus: BusHandle<B>, mut outbox: mpsc::Receiver<Out>)
where
    B: Serialize + DeserializeOwned + Send + 'static,
{
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
    loop {
        match session(&shared, &bus, &mut outbox).await {
            Ok(()) => return, // the transport was dropped
            Err(e) => {
                let was_connected = std::mem::replace(&mut shared.state().connected, false);
                let delay = backoff.after_session(was_connected);
                tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "AMQP connection lost");
                tokio::time::sleep(delay).await;
            }
        }
    }
}

/// Why a session ended.
#[derive(Debug, thiserror::Error)]
enum Lost {
    #[error(transparent)]
    Amqp(#[from] lapin::Error),
    #[error("the connection is no longer open")]
    Closed,
    #[error("{0}")]
    Url(String),
}

async fn session<B>(
    shared: &Arc<Shared>,
    bus: &BusHandle<B>,
    outbox: &mut mpsc::Receiver<Out>,
) -> Result<(), Lost>
where
    B: Serialize + DeserializeOwned + Send + 'static,
{
    let conn = Connection::connect_uri(
        broker_uri(&shared.config.url)?,
        ConnectionProperties::default(),
    )
    .await?;
    let publish = conn.create_channel().await?;
    publish
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    declare(shared, &publish).await?;
    let node_ch = conn.create_channel().await?;
    consume(
        shared.clone(),
        shared.node_queue(),
        node_ch,
        bus.clone(),
        format!("{}-node", shared.node),
        false,
    );
    // Deliveries of the previous connection cannot be settled any more: the
    // broker has put them back in their queues.
    shared.state().unsettled.clear();
    let mut consuming: HashMap<String, Channel> = HashMap::new();
    let mut declared: HashSet<String> = HashSet::new();
    let pools = shared.state().pools.clone();
    start_pools(shared, &conn, bus, &pools, &mut consuming, &mut declared).await?;
    shared.state().connected = true;
    tracing::info!(node = %shared.node, "AMQP connected");
    let mut check = tokio::time::interval(Duration::from_millis(500));
    loop {
        let out = tokio::select! {
            out = outbox.recv() => out,
            _ = check.tick() => {
                if !conn.status().connected() {
                    return Err(Lost::Closed);
                }
                // Deliveries nobody settled (their receiver vanished) are
                // offered again.
                let stale: Vec<lapin::Acker> = {
                    let mut st = shared.state();
                    let old: Vec<uuid::Uuid> = st.unsettled.iter().filter(|(_, (_, at))| at.elapsed() > SETTLE_WITHIN).map(|(id, _)| *id).collect();
                    old.iter().filter_map(|id| st.unsettled.remove(id)).map(|(a, _)| a).collect()
                };
                for a in stale {
                    tracing::warn!("a pool message was not settled in time; offering it again");
                    let _ = a.nack(lapin::options::BasicNackOptions { requeue: true, ..Default::default() }).await;
                }
                continue;
            }
        };
        let Some(out) = out else {
            let _ = conn.close(200, "bye".into()).await;
            return Ok(());
        };
        if !conn.status().connected() {
            return Err(Lost::Closed);
        }
        match out {
            Out::Pools(pools) => {
                start_pools(shared, &conn, bus, &pools, &mut consuming, &mut declared).await?;
            }
            Out::Publish {
                exchange,
                key,
                body,
                pool,
            } => {
                if let Some(kind) = pool {
                    if declared.insert(kind.clone()) {
                        declare_pool(shared, &publish, &kind).await?;
                    }
                }
                let confirm = publish
                    .basic_publish(
                        exchange.as_str().into(),
                        key.as_str().into(),
                        BasicPublishOptions::default(),
                        &body,
                        BasicProperties::default()
                            .with_delivery_mode(2)
                            .with_content_type("application/json".into()),
                    )
                    .await?;
                tokio::task::spawn_local(async move {
                    match confirm.await {
                        Ok(c) if c.is_nack() => {
                            tracing::warn!(%key, "the broker refused a message")
                        }
                        Err(e) => tracing::debug!(error = %e, "no publisher confirm"),
                        _ => {}
                    }
                });
            }
        }
    }
}

/// Consumes the pools this node serves now and stops consuming the others.
/// An executor advertises its pools only while it has a free slot, so a
/// full executor takes nothing from the broker: its share goes to the
/// other consumers.
async fn start_pools<B>(
    shared: &Arc<Shared>,
    conn: &Connection,
    bus: &BusHandle<B>,
    pools: &[String],
    consuming: &mut HashMap<String, Channel>,
    declared: &mut HashSet<String>,
) -> lapin::Result<()>
where
    B: Serialize + DeserializeOwned + Send + 'static,
{
    let gone: Vec<String> = consuming
        .keys()
        .filter(|k| !pools.contains(k))
        .cloned()
        .collect();
    for kind in gone {
        if let Some(ch) = consuming.remove(&kind) {
            // Unacknowledged deliveries go back to the queue.
            let _ = ch.close(200, "no free slot".into()).await;
        }
    }
    for kind in pools {
        if consuming.contains_key(kind) {
            continue;
        }
        let ch = conn.create_channel().await?;
        ch.basic_qos(PREFETCH, BasicQosOptions::default()).await?;
        declare_pool(shared, &ch, kind).await?;
        declared.insert(kind.clone());
        consume(
            shared.clone(),
            shared.pool_queue(kind),
            ch.clone(),
            bus.clone(),
            format!("{}-{kind}", shared.node),
            true,
        );
        consuming.insert(kind.clone(), ch);
    }
    Ok(())
}

impl<B> Transport<B> for AmqpTransport<B>
where
    B: Serialize + DeserializeOwned + Send + 'static,
{
    fn name(&self) -> &'static str {
        "amqp"
    }

    fn distance(&self) -> Distance {
        Distance::Network
    }

    fn reaches(&self, to: &Address) -> bool {
        super::network_reaches(self.shared.state().connected, &self.shared.node, to)
    }

    fn send(&mut self, envelope: Envelope<B>) -> Result<(), TransportError> {
        let body =
            serde_json::to_vec(&envelope).map_err(|e| TransportError::Encode(e.to_string()))?;
        let s = &self.shared;
        let (exchange, key, pool) = match &envelope.to {
            Address::Pool(kind) => (s.exchange(), format!("pool.{kind}"), Some(kind.clone())),
            Address::Web { node, .. } => (s.exchange(), format!("node.{node}"), None),
            Address::Task(_) | Address::Executor(_) => (s.broadcast(), String::new(), None),
        };
        self.outbox
            .try_send(Out::Publish {
                exchange,
                key,
                body,
                pool,
            })
            .map_err(|_| TransportError::Other("AMQP outbox full".into()))
    }

    fn advertise(&mut self, ads: &Advertisement) {
        let mut st = self.shared.state();
        if st.pools != ads.pools {
            st.pools = ads.pools.clone();
            let _ = self.outbox.try_send(Out::Pools(ads.pools.clone()));
        }
    }

    fn settle(&mut self, id: uuid::Uuid, accept: bool) {
        let Some((acker, _)) = self.shared.state().unsettled.remove(&id) else {
            return;
        };
        tokio::task::spawn_local(async move {
            let r = if accept {
                acker.ack(Default::default()).await
            } else {
                acker
                    .nack(lapin::options::BasicNackOptions {
                        requeue: true,
                        ..Default::default()
                    })
                    .await
            };
            if let Err(e) = r {
                tracing::debug!(error = %e, "could not settle a delivery; the broker will offer it again");
            }
        });
    }

    fn peers(&self) -> Vec<String> {
        if self.shared.state().connected {
            vec![format!("broker ({})", self.shared.config.prefix)]
        } else {
            Vec::new()
        }
    }
}

/// The broker's URI with deadlines: a heartbeat every 5 s (RabbitMQ's
/// default is 60 s: a cut link would go unnoticed for two minutes, while
/// messages published meanwhile are lost) and a connection attempt given
/// up after 10 s, unless the URL sets them (`?heartbeat=…`,
/// `?connection_timeout=…`).
fn broker_uri(url: &str) -> Result<lapin::uri::AMQPUri, Lost> {
    let mut uri: lapin::uri::AMQPUri = url
        .parse()
        .map_err(|e: String| Lost::Url(format!("bad AMQP URL: {e}")))?;
    uri.query.heartbeat.get_or_insert(5);
    uri.query.connection_timeout.get_or_insert(10_000);
    Ok(uri)
}
