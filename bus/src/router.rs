//! The bus actor: one per process, the single place where routes are decided.
//!
//! Route choice, for an envelope addressed to `to`:
//!
//! 1. a live actor registered for `to` in this process (or, for a pool, a live
//!    local member): deliver in-process;
//! 2. otherwise the nearest added [`Transport`] that reaches `to`;
//! 3. otherwise the message is dropped and counted. courier's durability rule
//!    (state committed before the message is sent, a recovery sweep re-sends
//!    what matters) is what makes a dropped message harmless.
//!
//! Envelopes that arrive from a transport ([`Inbound`]) go to step 1 only.
//! Order: messages from one sender to one local target are delivered in the
//! order they were sent (one mailbox feeds another); nothing is promised
//! across targets or across transports.
//!
//! The bus's mailbox is bounded ([`MAILBOX_BOUND`] envelopes, as the
//! transports' queues are): [`BusHandle::post`] waits for room, so an async
//! sender (an HTTP request) is slowed by an overload; [`BusHandle::tell`],
//! for senders that cannot wait (actor handlers), drops the envelope past
//! the bound and counts it, as a transport does with a full queue.

use std::collections::BTreeMap;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use actix::prelude::*;

use crate::address::Address;
pub use crate::envelope::Deliver;
use crate::envelope::Envelope;
use crate::error::BusError;
use crate::routes::LocalRoutes;
use crate::transport::Transport;

/// How a message left the sender's bus.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// Moved into a mailbox in this process.
    Local,
    /// Handed to the named transport.
    Transport(&'static str),
}

/// Message counters, for metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BusStats {
    /// Delivered in-process.
    pub local: u64,
    /// Handed to each transport, by name.
    pub by_transport: BTreeMap<&'static str, u64>,
    /// Arrived from a transport and delivered here.
    pub inbound: u64,
    /// Dropped for want of a route, or refused by a full mailbox.
    pub dropped: u64,
    /// Of `dropped`: refused by [`BusHandle::tell`] because the bus's
    /// mailbox held [`MAILBOX_BOUND`] envelopes.
    pub full: u64,
    /// Registered addresses and pool memberships now.
    pub registered: usize,
    pub pool_members: usize,
    /// Connected peers of each transport, by transport name.
    pub peers: BTreeMap<&'static str, Vec<String>>,
}

/// The bus actor. Start it with [`Bus::start_bus`] and talk to it through the
/// returned [`BusHandle`].
pub struct Bus<B: Send + 'static> {
    node: String,
    local: LocalRoutes<B>,
    /// Sorted nearest first.
    transports: Vec<Box<dyn Transport<B>>>,
    stats: BusStats,
    gate: Arc<Gate>,
}

/// The most envelopes posted to the bus and not yet routed. Past it,
/// [`BusHandle::post`] waits and [`BusHandle::tell`] drops.
pub const MAILBOX_BOUND: usize = 8192;

/// What senders share with the bus: room in its mailbox (a permit per
/// envelope not yet routed; a fair semaphore, so waiting senders go in
/// arrival order), and the envelopes refused for want of it.
#[derive(Debug)]
struct Gate {
    room: tokio::sync::Semaphore,
    full: AtomicU64,
}

impl Default for Gate {
    fn default() -> Self {
        Gate {
            room: tokio::sync::Semaphore::new(MAILBOX_BOUND),
            full: AtomicU64::new(0),
        }
    }
}

impl<B: Send + 'static> Bus<B> {
    /// Starts a bus for node `node` on the current arbiter.
    pub fn start_bus(node: impl Into<String>) -> BusHandle<B> {
        let node = node.into();
        let gate = Arc::new(Gate::default());
        let addr = Bus {
            node: node.clone(),
            local: LocalRoutes::default(),
            transports: Vec::new(),
            stats: BusStats::default(),
            gate: gate.clone(),
        }
        .start();
        BusHandle { addr, node, gate }
    }

    fn route(&mut self, envelope: Envelope<B>) -> Result<Route, BusError> {
        let envelope = match self.local.deliver(envelope) {
            Ok(()) => {
                self.stats.local += 1;
                return Ok(Route::Local);
            }
            Err(e) => e,
        };
        if let Some(t) = self.transports.iter_mut().find(|t| t.reaches(&envelope.to)) {
            let name = t.name();
            return match t.send(envelope) {
                Ok(()) => {
                    *self.stats.by_transport.entry(name).or_default() += 1;
                    Ok(Route::Transport(name))
                }
                Err(source) => {
                    self.stats.dropped += 1;
                    Err(BusError::Transport {
                        transport: name,
                        source,
                    })
                }
            };
        }
        self.stats.dropped += 1;
        tracing::debug!(node = %self.node, to = %envelope.to, id = %envelope.id, "no route; message dropped");
        Err(BusError::NoRoute(envelope.to))
    }

    /// Tells every transport what this process serves now.
    fn advertise(&mut self) {
        let ads = self.local.advertisement();
        for t in &mut self.transports {
            t.advertise(&ads);
        }
    }
}

impl<B: Send + 'static> Actor for Bus<B> {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // `send` and `register` wait while this many wait (envelopes from
        // `tell` and `post` are bounded by the gate, not by this).
        ctx.set_mailbox_capacity(MAILBOX_BOUND);
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        // No room comes back from a bus that stopped (the process is going
        // down): senders waiting in `post` return, and `tell` drops.
        self.gate.room.close();
    }
}

/// An envelope from [`BusHandle::tell`] or [`BusHandle::post`], counted in
/// the mailbox bound.
struct Tell<B>(Envelope<B>);
impl<B: 'static> Message for Tell<B> {
    type Result = ();
}
impl<B: Send + 'static> Handler<Tell<B>> for Bus<B> {
    type Result = ();
    fn handle(&mut self, msg: Tell<B>, _: &mut Self::Context) {
        self.gate.room.add_permits(1);
        let _ = self.route(msg.0);
    }
}

/// Sends an envelope (see the module docs for how the route is chosen).
pub struct Post<B>(pub Envelope<B>);
impl<B: 'static> Message for Post<B> {
    type Result = Result<Route, BusError>;
}
impl<B: Send + 'static> Handler<Post<B>> for Bus<B> {
    type Result = Result<Route, BusError>;
    fn handle(&mut self, msg: Post<B>, _: &mut Self::Context) -> Self::Result {
        self.route(msg.0)
    }
}

/// An envelope that arrived from a transport: delivered in-process or dropped.
pub struct Inbound<B>(pub Envelope<B>);
impl<B: 'static> Message for Inbound<B> {
    type Result = ();
}
impl<B: Send + 'static> Handler<Inbound<B>> for Bus<B> {
    type Result = ();
    fn handle(&mut self, msg: Inbound<B>, _: &mut Self::Context) {
        match self.local.deliver(msg.0) {
            Ok(()) => self.stats.inbound += 1,
            Err(env) => {
                self.stats.dropped += 1;
                tracing::debug!(node = %self.node, to = %env.to, id = %env.id, "inbound message for no local actor; dropped");
            }
        }
    }
}

/// Registers an actor under an address.
pub struct Register<B: Send + 'static> {
    pub address: Address,
    pub recipient: Recipient<Deliver<B>>,
}
impl<B: Send + 'static> Message for Register<B> {
    type Result = Result<(), BusError>;
}
impl<B: Send + 'static> Handler<Register<B>> for Bus<B> {
    type Result = Result<(), BusError>;
    fn handle(&mut self, msg: Register<B>, _: &mut Self::Context) -> Self::Result {
        let address = msg.address.clone();
        self.local
            .register(msg.address, msg.recipient)
            .map_err(|_| BusError::AlreadyRegistered(address.clone()))?;
        if matches!(address, Address::Executor(_)) {
            self.advertise();
        }
        Ok(())
    }
}

/// Removes an address registration.
pub struct Unregister<B> {
    pub address: Address,
    _body: PhantomData<fn() -> B>,
}
impl<B: 'static> Message for Unregister<B> {
    type Result = ();
}
impl<B: Send + 'static> Handler<Unregister<B>> for Bus<B> {
    type Result = ();
    fn handle(&mut self, msg: Unregister<B>, _: &mut Self::Context) {
        if self.local.unregister(&msg.address) && matches!(msg.address, Address::Executor(_)) {
            self.advertise();
        }
    }
}

/// Joins (`join: true`) or leaves a pool.
pub struct Membership<B: Send + 'static> {
    pub pool: String,
    pub member: Address,
    /// `Some` to join, `None` to leave.
    pub recipient: Option<Recipient<Deliver<B>>>,
}
impl<B: Send + 'static> Message for Membership<B> {
    type Result = ();
}
impl<B: Send + 'static> Handler<Membership<B>> for Bus<B> {
    type Result = ();
    fn handle(&mut self, msg: Membership<B>, _: &mut Self::Context) {
        match msg.recipient {
            Some(r) => self.local.subscribe(&msg.pool, msg.member, r),
            None => self.local.unsubscribe(&msg.pool, &msg.member),
        }
        self.advertise();
    }
}

/// Adds a transport.
pub struct AddTransport<B>(pub Box<dyn Transport<B> + Send>);
impl<B: 'static> Message for AddTransport<B> {
    type Result = ();
}
impl<B: Send + 'static> Handler<AddTransport<B>> for Bus<B> {
    type Result = ();
    fn handle(&mut self, msg: AddTransport<B>, _: &mut Self::Context) {
        let mut t = msg.0;
        t.advertise(&self.local.advertisement());
        self.transports.push(t);
        self.transports.sort_by_key(|t| t.distance());
    }
}

/// Settles a message that arrived through a transport (see
/// [`Transport::settle`]).
pub struct Settle<B> {
    pub id: uuid::Uuid,
    pub accept: bool,
    _body: PhantomData<fn() -> B>,
}
impl<B: 'static> Message for Settle<B> {
    type Result = ();
}
impl<B: Send + 'static> Handler<Settle<B>> for Bus<B> {
    type Result = ();
    fn handle(&mut self, msg: Settle<B>, _: &mut Self::Context) {
        for t in &mut self.transports {
            t.settle(msg.id, msg.accept);
        }
    }
}

/// Reads the counters.
pub struct GetStats<B>(PhantomData<fn() -> B>);
impl<B: 'static> Message for GetStats<B> {
    type Result = BusStats;
}
impl<B: Send + 'static> Handler<GetStats<B>> for Bus<B> {
    type Result = MessageResult<GetStats<B>>;
    fn handle(&mut self, _: GetStats<B>, _: &mut Self::Context) -> Self::Result {
        let (registered, pool_members) = self.local.len();
        let full = self.gate.full.load(Ordering::Relaxed);
        MessageResult(BusStats {
            full,
            dropped: self.stats.dropped + full,
            registered,
            pool_members,
            peers: self
                .transports
                .iter()
                .map(|t| (t.name(), t.peers()))
                .collect(),
            ..self.stats.clone()
        })
    }
}

/// The handle senders hold: cheap to clone, `Send`, usable from any thread.
pub struct BusHandle<B: Send + 'static> {
    addr: Addr<Bus<B>>,
    node: String,
    gate: Arc<Gate>,
}

impl<B: Send + 'static> Clone for BusHandle<B> {
    fn clone(&self) -> Self {
        BusHandle {
            addr: self.addr.clone(),
            node: self.node.clone(),
            gate: self.gate.clone(),
        }
    }
}

impl<B: Send + 'static> BusHandle<B> {
    /// The node this bus serves.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// Fire and forget, for senders that cannot wait. A message that finds
    /// no route, or finds [`MAILBOX_BOUND`] envelopes already waiting, is
    /// dropped and counted; durable state is what guarantees delivery, not
    /// this call.
    pub fn tell(&self, envelope: Envelope<B>) {
        let permit = match self.gate.room.try_acquire() {
            Ok(permit) => permit,
            // The bus stopped: the process is going down.
            Err(tokio::sync::TryAcquireError::Closed) => return,
            Err(tokio::sync::TryAcquireError::NoPermits) => {
                self.gate.full.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                node = %self.node, to = %envelope.to,
                    "bus mailbox full ({MAILBOX_BOUND} envelopes); message dropped"
                );
                return;
            }
        };
        // The handler gives the permit back once the envelope is routed.
        permit.forget();
        self.addr.do_send(Tell(envelope));
    }

    /// Fire and forget, for async senders: as [`tell`](Self::tell), but
    /// when the mailbox is full it waits for room instead of dropping, so an
    /// overload slows the sender. Returns once the envelope is queued (at
    /// once while there is room), not when it is routed.
    pub async fn post(&self, envelope: Envelope<B>) {
        // Closed when the bus stops: nothing to wait for then.
        if let Ok(permit) = self.gate.room.acquire().await {
            permit.forget();
            self.addr.do_send(Tell(envelope));
        }
    }

    /// Sends and reports the route taken, waiting for room in the bus mailbox.
    pub async fn send(&self, envelope: Envelope<B>) -> Result<Route, BusError> {
        self.addr
            .send(Post(envelope))
            .await
            .map_err(|_| BusError::Stopped)?
    }

    /// Registers `recipient` under `address`.
    pub async fn register(
        &self,
        address: Address,
        recipient: Recipient<Deliver<B>>,
    ) -> Result<(), BusError> {
        self.addr
            .send(Register { address, recipient })
            .await
            .map_err(|_| BusError::Stopped)?
    }

    /// Removes `address` (no error when it was not registered).
    pub fn unregister(&self, address: Address) {
        self.addr.do_send(Unregister {
            address,
            _body: PhantomData,
        });
    }

    /// Makes `member` one of the consumers of pool `pool`.
    pub async fn join_pool(
        &self,
        pool: impl Into<String>,
        member: Address,
        recipient: Recipient<Deliver<B>>,
    ) -> Result<(), BusError> {
        self.addr
            .send(Membership {
                pool: pool.into(),
                member,
                recipient: Some(recipient),
            })
            .await
            .map_err(|_| BusError::Stopped)
    }

    /// [`join_pool`](Self::join_pool) without waiting for the bus.
    pub fn join_pool_nowait(
        &self,
        pool: impl Into<String>,
        member: Address,
        recipient: Recipient<Deliver<B>>,
    ) {
        self.addr.do_send(Membership {
            pool: pool.into(),
            member,
            recipient: Some(recipient),
        });
    }

    /// Removes `member` from pool `pool`.
    pub fn leave_pool(&self, pool: impl Into<String>, member: Address) {
        self.addr.do_send(Membership {
            pool: pool.into(),
            member,
            recipient: None,
        });
    }

    /// Adds a transport; routes through it are used from the next message on.
    pub async fn add_transport(&self, t: Box<dyn Transport<B> + Send>) -> Result<(), BusError> {
        self.addr
            .send(AddTransport(t))
            .await
            .map_err(|_| BusError::Stopped)
    }

    /// Tells the transports that the receiver is done with message `id`:
    /// `accept` — forget it; otherwise offer it again. A message that came
    /// in-process needs no settling; settling it does nothing.
    pub fn settle(&self, id: uuid::Uuid, accept: bool) {
        self.addr.do_send(Settle {
            id,
            accept,
            _body: PhantomData,
        });
    }

    /// Feeds an envelope that arrived from a transport into this process.
    pub fn inbound(&self, envelope: Envelope<B>) {
        self.addr.do_send(Inbound(envelope));
    }

    /// The counters.
    pub async fn stats(&self) -> Result<BusStats, BusError> {
        self.addr
            .send(GetStats(PhantomData))
            .await
            .map_err(|_| BusError::Stopped)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use super::*;
    use crate::error::TransportError;
    use crate::transport::Distance;

    type Got = Arc<Mutex<Vec<Envelope<u32>>>>;
    type Sent = Arc<Mutex<Vec<(&'static str, Envelope<u32>)>>>;

    /// Collects what it receives.
    struct Sink(Got);
    impl Actor for Sink {
        type Context = Context<Self>;
    }
    impl Handler<Deliver<u32>> for Sink {
        type Result = ();
        fn handle(&mut self, msg: Deliver<u32>, _: &mut Self::Context) {
            self.0.lock().unwrap().push(msg.0);
        }
    }

    fn sink() -> (Addr<Sink>, Got) {
        let got = Arc::new(Mutex::new(Vec::new()));
        (Sink(got.clone()).start(), got)
    }

    /// A transport that reaches one address and records what it is handed:
    /// it stands in for a remote peer only to test the routing decision.
    struct Recording {
        name: &'static str,
        distance: Distance,
        reach: Address,
        sent: Sent,
    }
    impl Transport<u32> for Recording {
        fn name(&self) -> &'static str {
            self.name
        }
        fn distance(&self) -> Distance {
            self.distance
        }
        fn reaches(&self, to: &Address) -> bool {
            *to == self.reach
        }
        fn send(&mut self, e: Envelope<u32>) -> Result<(), TransportError> {
            self.sent.lock().unwrap().push((self.name, e));
            Ok(())
        }
    }

    fn env(to: Address, n: u32) -> Envelope<u32> {
        Envelope::new(Address::executor("tester").unwrap(), to, n)
    }

    async fn settle() {
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }

    #[actix_rt::test]
    async fn delivers_locally_in_order_and_drops_unroutable() {
        let bus = Bus::<u32>::start_bus("n1");
        let (a, got) = sink();
        let to = Address::executor("a").unwrap();
        bus.register(to.clone(), a.clone().recipient())
            .await
            .unwrap();
        for n in 0..100 {
            bus.tell(env(to.clone(), n));
        }
        assert_eq!(bus.send(env(to.clone(), 100)).await, Ok(Route::Local));
        settle().await;
        let ns: Vec<u32> = got.lock().unwrap().iter().map(|e| e.body).collect();
        assert_eq!(ns, (0..=100).collect::<Vec<_>>());

        let nowhere = Address::executor("nobody").unwrap();
        assert_eq!(
            bus.send(env(nowhere.clone(), 1)).await,
            Err(BusError::NoRoute(nowhere))
        );
        let stats = bus.stats().await.unwrap();
        assert_eq!((stats.local, stats.dropped, stats.registered), (101, 1, 1));
    }

    #[actix_rt::test]
    async fn the_mailbox_is_bounded_tell_drops_and_post_waits() {
        use futures_util::FutureExt;
        let bus = Bus::<u32>::start_bus("n1");
        let (a, got) = sink();
        let to = Address::executor("a").unwrap();
        bus.register(to.clone(), a.recipient()).await.unwrap();
        // The bus cannot run while this loop does: past the bound, `tell`
        // drops and counts instead of queueing.
        let n = MAILBOX_BOUND as u32 + 100;
        for i in 0..n {
            bus.tell(env(to.clone(), i));
        }
        // `post` finds no room either: it waits (not ready when polled).
        let mut waiting = Box::pin(bus.post(env(to.clone(), n)));
        assert!(
            (&mut waiting).now_or_never().is_none(),
            "post waits for room"
        );
        let mut waiting = Box::pin(bus.post(env(to.clone(), n)));
        // Once the bus runs, the waiting post goes through.
        waiting.as_mut().await;
        settle().await;
        let stats = bus.stats().await.unwrap();
        assert_eq!((stats.full, stats.dropped), (100, 100));
        let ns: Vec<u32> = got.lock().unwrap().iter().map(|e| e.body).collect();
        assert_eq!(
            ns.len(),
            MAILBOX_BOUND + 1,
            "the bound's worth and the post"
        );
        assert_eq!(
            ns[..MAILBOX_BOUND],
            (0..MAILBOX_BOUND as u32).collect::<Vec<_>>()
        );
        assert_eq!(ns[MAILBOX_BOUND], n, "the waiting post was delivered");
    }

    #[actix_rt::test]
    async fn a_live_registration_is_exclusive_and_a_dead_one_is_replaced() {
        let bus = Bus::<u32>::start_bus("n1");
        let to = Address::task(uuid::Uuid::now_v7());
        let (a, _) = sink();
        let (b, got_b) = sink();
        bus.register(to.clone(), a.clone().recipient())
            .await
            .unwrap();
        assert_eq!(
            bus.register(to.clone(), b.clone().recipient()).await,
            Err(BusError::AlreadyRegistered(to.clone()))
        );
        // Stop a: its registration no longer counts.
        a.do_send(StopSink);
        settle().await;
        assert!(matches!(
            bus.send(env(to.clone(), 1)).await,
            Err(BusError::NoRoute(_))
        ));
        bus.register(to.clone(), b.clone().recipient())
            .await
            .unwrap();
        assert_eq!(bus.send(env(to.clone(), 2)).await, Ok(Route::Local));
        bus.unregister(to.clone());
        assert!(bus.send(env(to, 3)).await.is_err());
        settle().await;
        assert_eq!(got_b.lock().unwrap().len(), 1);
    }

    struct StopSink;
    impl Message for StopSink {
        type Result = ();
    }
    impl Handler<StopSink> for Sink {
        type Result = ();
        fn handle(&mut self, _: StopSink, ctx: &mut Self::Context) {
            ctx.stop();
        }
    }

    #[actix_rt::test]
    async fn pools_spread_round_robin_over_live_members() {
        let bus = Bus::<u32>::start_bus("n1");
        let (a, got_a) = sink();
        let (b, got_b) = sink();
        let pool = Address::pool("demo.echo").unwrap();
        bus.join_pool(
            "demo.echo",
            Address::executor("a").unwrap(),
            a.clone().recipient(),
        )
        .await
        .unwrap();
        bus.join_pool(
            "demo.echo",
            Address::executor("b").unwrap(),
            b.clone().recipient(),
        )
        .await
        .unwrap();
        for n in 0..10 {
            bus.send(env(pool.clone(), n)).await.unwrap();
        }
        settle().await;
        assert_eq!(got_a.lock().unwrap().len(), 5);
        assert_eq!(got_b.lock().unwrap().len(), 5);

        bus.leave_pool("demo.echo", Address::executor("a").unwrap());
        b.do_send(StopSink);
        settle().await;
        assert!(matches!(
            bus.send(env(pool.clone(), 99)).await,
            Err(BusError::NoRoute(_))
        ));
    }

    #[actix_rt::test]
    async fn local_beats_transports_and_the_nearest_transport_wins() {
        let bus = Bus::<u32>::start_bus("n1");
        let sent = Arc::new(Mutex::new(Vec::new()));
        let remote = Address::executor("remote").unwrap();
        for (name, distance) in [("amqp", Distance::Network), ("socket", Distance::SameHost)] {
            bus.add_transport(Box::new(Recording {
                name,
                distance,
                reach: remote.clone(),
                sent: sent.clone(),
            }))
            .await
            .unwrap();
        }
        assert_eq!(
            bus.send(env(remote.clone(), 1)).await,
            Ok(Route::Transport("socket"))
        );

        // Once the target is registered here, nothing leaves the process.
        let (a, got) = sink();
        bus.register(remote.clone(), a.recipient()).await.unwrap();
        assert_eq!(bus.send(env(remote.clone(), 2)).await, Ok(Route::Local));

        // Inbound envelopes are delivered here and never forwarded.
        bus.unregister(remote.clone());
        bus.inbound(env(remote.clone(), 3));
        settle().await;
        assert_eq!(sent.lock().unwrap().len(), 1);
        assert_eq!(got.lock().unwrap().len(), 1);
        let stats = bus.stats().await.unwrap();
        assert_eq!(stats.by_transport.get("socket"), Some(&1));
        assert_eq!(stats.dropped, 1);
    }
}
