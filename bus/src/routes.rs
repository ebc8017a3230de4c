//! The in-process route: a table from addresses to actix recipients.
//!
//! A local delivery moves the envelope into the recipient's mailbox: no
//! serialization, no I/O, no copy of the body.

use std::collections::HashMap;

use actix::Recipient;

use crate::address::Address;
use crate::envelope::{Deliver, Envelope};

/// One pool: its members and where the round robin stands.
struct Pool<B: Send + 'static> {
    members: Vec<(Address, Recipient<Deliver<B>>)>,
    next: usize,
}

/// The routing table of one bus.
pub struct LocalRoutes<B: Send + 'static> {
    routes: HashMap<Address, Recipient<Deliver<B>>>,
    pools: HashMap<String, Pool<B>>,
}

impl<B: Send + 'static> Default for LocalRoutes<B> {
    fn default() -> Self {
        LocalRoutes {
            routes: HashMap::new(),
            pools: HashMap::new(),
        }
    }
}

impl<B: Send + 'static> LocalRoutes<B> {
    /// Registers `address`. Fails with the recipient given back when a live
    /// actor holds it already; a registration whose actor has stopped is replaced.
    pub fn register(
        &mut self,
        address: Address,
        recipient: Recipient<Deliver<B>>,
    ) -> Result<(), Recipient<Deliver<B>>> {
        match self.routes.get(&address) {
            Some(existing) if existing.connected() => Err(recipient),
            _ => {
                self.routes.insert(address, recipient);
                Ok(())
            }
        }
    }

    /// Removes `address`; true when it was registered.
    pub fn unregister(&mut self, address: &Address) -> bool {
        self.routes.remove(address).is_some()
    }

    /// Adds `member` to pool `name` (a member joins once; joining again replaces it).
    pub fn subscribe(&mut self, name: &str, member: Address, recipient: Recipient<Deliver<B>>) {
        let pool = self.pools.entry(name.to_string()).or_insert_with(|| Pool {
            members: Vec::new(),
            next: 0,
        });
        pool.members.retain(|(m, _)| *m != member);
        pool.members.push((member, recipient));
    }

    /// Removes `member` from pool `name`.
    pub fn unsubscribe(&mut self, name: &str, member: &Address) {
        if let Some(pool) = self.pools.get_mut(name) {
            pool.members.retain(|(m, _)| m != member);
            if pool.members.is_empty() {
                self.pools.remove(name);
            }
        }
    }

    /// True when a live local actor or pool member would take a message to `to`.
    pub fn reaches(&self, to: &Address) -> bool {
        match to {
            Address::Pool(name) => self
                .pools
                .get(name)
                .is_some_and(|p| p.members.iter().any(|(_, r)| r.connected())),
            other => self.routes.get(other).is_some_and(|r| r.connected()),
        }
    }

    /// What to tell peers: pools with a live member, executor addresses.
    pub fn advertisement(&self) -> crate::transport::Advertisement {
        let mut pools: Vec<String> = self
            .pools
            .iter()
            .filter(|(_, p)| p.members.iter().any(|(_, r)| r.connected()))
            .map(|(n, _)| n.clone())
            .collect();
        pools.sort();
        let mut executors: Vec<String> = self
            .routes
            .keys()
            .filter_map(|a| match a {
                Address::Executor(id) => Some(id.clone()),
                _ => None,
            })
            .collect();
        executors.sort();
        crate::transport::Advertisement { pools, executors }
    }

    /// Number of registered addresses and pool memberships.
    pub fn len(&self) -> (usize, usize) {
        (
            self.routes.len(),
            self.pools.values().map(|p| p.members.len()).sum(),
        )
    }

    /// True when nothing is registered.
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty() && self.pools.is_empty()
    }

    /// Delivers in-process, or gives the envelope back when no live actor
    /// takes it. Pools deliver to one member, round robin, skipping (and
    /// forgetting) members whose actor has stopped.
    // The envelope comes back by value so the caller can try a transport
    // without a copy or an allocation; its size is the point, not a mistake.
    #[allow(clippy::result_large_err)]
    pub fn deliver(&mut self, envelope: Envelope<B>) -> Result<(), Envelope<B>> {
        match &envelope.to {
            Address::Pool(name) => {
                let Some(pool) = self.pools.get_mut(name) else {
                    return Err(envelope);
                };
                pool.members.retain(|(_, r)| r.connected());
                if pool.members.is_empty() {
                    self.pools.remove(name);
                    return Err(envelope);
                }
                let i = pool.next % pool.members.len();
                pool.next = pool.next.wrapping_add(1);
                pool.members[i].1.do_send(Deliver(envelope));
                Ok(())
            }
            to => match self.routes.get(to) {
                Some(r) if r.connected() => {
                    r.do_send(Deliver(envelope));
                    Ok(())
                }
                Some(_) => {
                    let to = to.clone();
                    self.routes.remove(&to);
                    Err(envelope)
                }
                None => Err(envelope),
            },
        }
    }
}
