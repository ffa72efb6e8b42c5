//! An in-memory [`Transport`] for tests, with faults: messages are delayed, lost, duplicated,
//! and refused across partitions, as decided by a seeded RNG. Built with the `testing` feature
//! (the crate's own tests enable it through a dev-dependency on itself), so that integration
//! tests here and in other crates can run real openraft nodes without sockets.
//!
//! Frames still go through the wire codec and [`RaftService`], so a simulated cluster tests the
//! same encode, check, dispatch and error mapping as TCP. The seed fixes every fault decision
//! in the order calls are made; on tokio's paused clock and a current-thread runtime that order
//! is itself reproducible, as far as the storage under the nodes is.
//!
//! How faults look to the sender, mirroring what TCP shows:
//! - across a partition, or to a node that is down: [`TransportError::Unreachable`] after the
//!   message delay (a refused connection);
//! - a lost request or reply: [`TransportError::Timeout`] when the caller's timeout runs out; a
//!   lost reply means the request was served, which is the case that tests idempotence;
//! - a duplicate: the request is delivered a second time a little later, its reply discarded.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::network::{RaftService, Transport, TransportError};
use super::{ControllerNode, RaftNodeId};

/// Counters of what the simulator did, for tests to check that faults were really injected.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SimStats {
    /// Requests handed to the transport.
    pub sent: u64,
    /// Requests delivered to a node (duplicates included).
    pub delivered: u64,
    /// Requests or replies lost.
    pub lost: u64,
    /// Requests delivered twice.
    pub duplicated: u64,
    /// Requests refused because of a partition or a node being down.
    pub refused: u64,
}

struct State {
    rng: StdRng,
    nodes: HashMap<RaftNodeId, Arc<RaftService>>,
    /// The partition group of each node; unlisted nodes are in group 0, all together.
    groups: HashMap<RaftNodeId, u64>,
    next_group: u64,
    loss: f64,
    duplication: f64,
    min_delay: Duration,
    max_delay: Duration,
    stats: SimStats,
}

impl State {
    fn connected(&self, a: RaftNodeId, b: RaftNodeId) -> bool {
        let group = |n| self.groups.get(&n).copied().unwrap_or(0);
        group(a) == group(b)
    }

    fn delay(&mut self) -> Duration {
        if self.max_delay <= self.min_delay {
            return self.min_delay;
        }
        self.rng.gen_range(self.min_delay..=self.max_delay)
    }

    fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && self.rng.gen_bool(p.min(1.0))
    }
}

/// The simulated network all nodes of a test cluster share.
pub struct SimNetwork {
    state: Mutex<State>,
}

impl SimNetwork {
    /// A network with no faults and a 1–5 ms delay per message, its randomness from `seed`.
    pub fn new(seed: u64) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(State {
                rng: StdRng::seed_from_u64(seed),
                nodes: HashMap::new(),
                groups: HashMap::new(),
                next_group: 1,
                loss: 0.0,
                duplication: 0.0,
                min_delay: Duration::from_millis(1),
                max_delay: Duration::from_millis(5),
                stats: SimStats::default(),
            }),
        })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A test that panicked while holding the lock has failed already; the state is still
        // usable for the others' teardown.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The transport node `from` sends through.
    pub fn transport(self: &Arc<Self>, from: RaftNodeId) -> Arc<SimTransport> {
        Arc::new(SimTransport {
            net: Arc::clone(self),
            from,
        })
    }

    /// Brings node `id` up: requests to it are served by `service`.
    pub fn register(&self, id: RaftNodeId, service: Arc<RaftService>) {
        self.state().nodes.insert(id, service);
    }

    /// Takes node `id` down: requests to it are refused until it is registered again.
    pub fn unregister(&self, id: RaftNodeId) {
        self.state().nodes.remove(&id);
    }

    /// Splits the network: each slice is a group whose members reach each other and nobody else.
    /// Nodes in no slice stay together in a group of their own.
    pub fn partition(&self, groups: &[&[RaftNodeId]]) {
        let mut s = self.state();
        s.groups.clear();
        for members in groups {
            let g = s.next_group;
            s.next_group += 1;
            for &n in *members {
                s.groups.insert(n, g);
            }
        }
    }

    /// Cuts node `id` off from every other node, keeping any other partition in place.
    pub fn isolate(&self, id: RaftNodeId) {
        let mut s = self.state();
        let g = s.next_group;
        s.next_group += 1;
        s.groups.insert(id, g);
    }

    /// Removes every partition.
    pub fn heal(&self) {
        self.state().groups.clear();
    }

    /// Sets the probability that a request, and separately its reply, is lost.
    pub fn set_loss(&self, p: f64) {
        self.state().loss = p;
    }

    /// Sets the probability that a delivered request is delivered a second time.
    pub fn set_duplication(&self, p: f64) {
        self.state().duplication = p;
    }

    /// Sets the range each message's delay is drawn from.
    pub fn set_delay(&self, min: Duration, max: Duration) {
        let mut s = self.state();
        s.min_delay = min;
        s.max_delay = max.max(min);
    }

    /// What the simulator has done so far.
    pub fn stats(&self) -> SimStats {
        self.state().stats
    }
}

/// The simulated transport of one node.
pub struct SimTransport {
    net: Arc<SimNetwork>,
    from: RaftNodeId,
}

/// What happens to one call, drawn at once so each call consumes the RNG the same way.
struct Fate {
    service: Option<Arc<RaftService>>,
    connected: bool,
    lose_request: bool,
    lose_reply: bool,
    duplicate: bool,
    there: Duration,
    back: Duration,
    again: Duration,
}

impl Transport for SimTransport {
    async fn call(
        &self,
        target: RaftNodeId,
        _node: &ControllerNode,
        frame: Bytes,
        timeout: Duration,
    ) -> Result<Bytes, TransportError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let fate = {
            let mut s = self.net.state();
            s.stats.sent += 1;
            let (loss, duplication) = (s.loss, s.duplication);
            Fate {
                service: s.nodes.get(&target).cloned(),
                connected: s.connected(self.from, target),
                lose_request: s.chance(loss),
                lose_reply: s.chance(loss),
                duplicate: s.chance(duplication),
                there: s.delay(),
                back: s.delay(),
                again: s.delay(),
            }
        };
        let timed_out = || TransportError::Timeout(timeout);
        let service = match (fate.connected, fate.service) {
            (true, Some(service)) => service,
            (connected, _) => {
                self.net.state().stats.refused += 1;
                tokio::time::sleep(fate.there.min(timeout)).await;
                return Err(TransportError::Unreachable(if connected {
                    format!("node {target} is down")
                } else {
                    format!("node {target} is partitioned from node {}", self.from)
                }));
            }
        };
        if fate.lose_request {
            self.net.state().stats.lost += 1;
            tokio::time::sleep_until(deadline).await;
            return Err(timed_out());
        }
        if tokio::time::timeout_at(deadline, tokio::time::sleep(fate.there))
            .await
            .is_err()
        {
            return Err(timed_out());
        }
        if fate.duplicate {
            let net = Arc::clone(&self.net);
            let (service, frame, from) = (Arc::clone(&service), frame.clone(), self.from);
            tokio::spawn(async move {
                tokio::time::sleep(fate.again).await;
                let deliver = {
                    let mut s = net.state();
                    let ok = s.connected(from, target);
                    if ok {
                        s.stats.duplicated += 1;
                        s.stats.delivered += 1;
                    }
                    ok
                };
                if deliver {
                    let _ = service.handle(frame).await;
                }
            });
        }
        self.net.state().stats.delivered += 1;
        let reply = tokio::time::timeout_at(deadline, service.handle(frame))
            .await
            .map_err(|_| timed_out())?;
        // A partition that formed while the request was being served swallows the reply.
        let reply_lost = {
            let mut s = self.net.state();
            let lost = fate.lose_reply || !s.connected(self.from, target);
            if lost {
                s.stats.lost += 1;
            }
            lost
        };
        if reply_lost {
            tokio::time::sleep_until(deadline).await;
            return Err(timed_out());
        }
        tokio::time::timeout_at(deadline, tokio::time::sleep(fate.back))
            .await
            .map_err(|_| timed_out())?;
        Ok(reply)
    }
}
