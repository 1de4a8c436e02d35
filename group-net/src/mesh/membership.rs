//! Membership and failure detection: SWIM (foca) over UDP on the mesh address.
//!
//! Each node is known by its mesh address plus an incarnation (its start time), so that a node restarted
//! at the same address is a *new* member: the others hear that the old one went down (its groups fail
//! over; it lost them when it stopped) before they hear that the new one came up. At shutdown the node
//! leaves the cluster, so that the others need not wait for the failure detector.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::net::{SocketAddr, SocketAddrV4};
use std::num::NonZeroU32;
use std::time::Duration;

use foca::{AccumulatingRuntime, Foca, OwnedNotification, PostcardCodec, Timer};
use group_core::NodeAddr;
use rand::SeedableRng;
use rand::rngs::StdRng;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::time::Instant;

use group_core::Input;
use tokio_util::sync::CancellationToken;

use super::seal::Seal;
use crate::inbox::NodeInput;
use crate::throttle::Throttle;

/// A member of the cluster: its mesh address, when its process started (tells a restart apart), and how
/// many times this process rejoined after others declared it dead (a partition, not a restart).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct MemberId {
    addr: SocketAddrV4,
    boot: u64,
    renewal: u32,
}

impl foca::Identity for MemberId {
    type Addr = SocketAddrV4;

    fn renew(&self) -> Option<Self> {
        Some(MemberId {
            renewal: self.renewal.wrapping_add(1),
            ..self.clone()
        })
    }

    fn addr(&self) -> SocketAddrV4 {
        self.addr
    }

    fn win_addr_conflict(&self, adversary: &Self) -> bool {
        (self.boot, self.renewal) > (adversary.boot, adversary.renewal)
    }
}

/// What membership needs to run.
pub(crate) struct MembershipConfig {
    pub own: SocketAddrV4,
    pub incarnation: u64,
    /// The seeds to announce to, kept current by `seeds::resolve_loop` when some are names.
    pub seeds: tokio::sync::watch::Receiver<Vec<SocketAddrV4>>,
    pub probe_interval: Duration,
    pub suspect_timeout: Duration,
    pub seed: u64,
    /// Signs and checks every datagram (see [`super::seal`]).
    pub seal: Seal,
}

/// How often a node that knows nobody announces itself to its seeds again.
const ANNOUNCE_RETRY: Duration = Duration::from_secs(1);

type Scheduled = Reverse<(Instant, u64, TimerSlot)>;

/// A foca timer in the heap; ordered by insertion only (timers carry no order of their own).
struct TimerSlot(Timer<MemberId>);

impl PartialEq for TimerSlot {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}
impl Eq for TimerSlot {}
impl PartialOrd for TimerSlot {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for TimerSlot {
    fn cmp(&self, _: &Self) -> std::cmp::Ordering {
        std::cmp::Ordering::Equal
    }
}

/// Runs membership until `stop` fires, then leaves the cluster. A node reported on `refused` (its link
/// broke and its mesh port refuses connections: its process is gone) is declared down at once, without
/// waiting out the suspicion timeout; the declaration spreads to the cluster like any other.
pub(crate) async fn run(
    socket: UdpSocket,
    config: MembershipConfig,
    inputs: mpsc::Sender<NodeInput>,
    mut refused: mpsc::Receiver<NodeAddr>,
    stop: CancellationToken,
) {
    let identity = MemberId {
        addr: config.own,
        boot: config.incarnation,
        renewal: 0,
    };
    let mut foca_config = foca::Config::new_lan(NonZeroU32::MIN.saturating_add(15));
    foca_config.probe_period = config.probe_interval;
    foca_config.probe_rtt = (config.probe_interval / 2).max(Duration::from_millis(20));
    foca_config.suspect_to_down_after = config.suspect_timeout;
    foca_config.periodic_announce_to_down_members = Some(foca::PeriodicParams {
        frequency: Duration::from_secs(5),
        num_members: std::num::NonZeroUsize::MIN.saturating_add(1),
    });
    let mut foca = Foca::new(
        identity,
        foca_config,
        StdRng::seed_from_u64(config.seed),
        PostcardCodec,
    );
    let mut runtime = AccumulatingRuntime::new();
    let mut timers: BinaryHeap<Scheduled> = BinaryHeap::new();
    let mut seq = 0u64;
    let mut buf = vec![0u8; 64 * 1024];
    let mut announce = tokio::time::interval(ANNOUNCE_RETRY);
    let mut driver = Driver {
        socket: &socket,
        inputs: &inputs,
        seal: &config.seal,
    };
    loop {
        let next_timer = timers.peek().map(|Reverse((at, _, _))| *at);
        let sleep =
            tokio::time::sleep_until(next_timer.unwrap_or_else(|| Instant::now() + ANNOUNCE_RETRY));
        let result = tokio::select! {
            biased;
            () = stop.cancelled() => break,
            received = socket.recv_from(&mut buf) => match received {
                Ok((len, from)) => match config.seal.open(buf.get(..len).unwrap_or_default()) {
                    Some(payload) => foca.handle_data(payload, &mut runtime),
                    None => {
                        static UNSEALED: Throttle = Throttle::new();
                        if let Some(more) = UNSEALED.allow() {
                            tracing::warn!(%from, "dropping a membership datagram without a valid MAC of mesh.secret (and {more} more since the last line)");
                        }
                        Ok(())
                    }
                },
                Err(e) => {
                    tracing::debug!("membership socket: {e}");
                    Ok(())
                }
            },
            () = sleep, if next_timer.is_some() => {
                match timers.pop() {
                    Some(Reverse((_, _, TimerSlot(timer)))) => foca.handle_timer(timer, &mut runtime),
                    None => Ok(()),
                }
            }
            Some(gone) = refused.recv() => {
                let member = foca.iter_members().find(|m| m.id().addr == gone.0).map(|m| m.id().clone());
                match member {
                    Some(id) => {
                        tracing::warn!(node = %gone, "declaring node down: its link broke and its mesh port refuses connections");
                        foca.apply_many(std::iter::once(foca::Member::down(id)), true, &mut runtime)
                    }
                    None => Ok(()),
                }
            }
            _ = announce.tick() => {
                if foca.num_members() == 0 {
                    let seeds = config.seeds.borrow().clone();
                    for seed in seeds.iter().filter(|s| **s != config.own) {
                        let probe = MemberId { addr: *seed, boot: 0, renewal: 0 };
                        if let Err(e) = foca.announce(probe, &mut runtime) {
                            tracing::debug!("announce to {seed}: {e}");
                        }
                    }
                }
                Ok(())
            }
        };
        if let Err(e) = result {
            tracing::debug!("membership: {e}");
        }
        driver.drain(&mut runtime, &mut timers, &mut seq).await;
    }
    if let Err(e) = foca.leave_cluster(&mut runtime) {
        tracing::debug!("leaving the cluster: {e}");
    }
    driver.drain(&mut runtime, &mut timers, &mut seq).await;
}

struct Driver<'a> {
    socket: &'a UdpSocket,
    inputs: &'a mpsc::Sender<NodeInput>,
    seal: &'a Seal,
}

impl Driver<'_> {
    /// Sends what foca wants sent, schedules its timers, and turns its notifications into node inputs.
    async fn drain(
        &mut self,
        runtime: &mut AccumulatingRuntime<MemberId>,
        timers: &mut BinaryHeap<Scheduled>,
        seq: &mut u64,
    ) {
        while let Some((to, data)) = runtime.to_send() {
            let sealed = self.seal.seal(&data);
            let _ = self.socket.send_to(&sealed, SocketAddr::V4(to.addr)).await;
        }
        let now = Instant::now();
        while let Some((after, timer)) = runtime.to_schedule() {
            *seq += 1;
            timers.push(Reverse((now + after, *seq, TimerSlot(timer))));
        }
        while let Some(notification) = runtime.to_notify() {
            let inputs: Vec<Input> = match notification {
                OwnedNotification::MemberUp(id) => {
                    tracing::info!(node = %id.addr, "node up");
                    vec![Input::NodeUp(NodeAddr(id.addr))]
                }
                OwnedNotification::MemberDown(id) => {
                    tracing::warn!(node = %id.addr, "node down");
                    vec![Input::NodeDown(NodeAddr(id.addr))]
                }
                OwnedNotification::Rename(old, new) if old.boot == new.boot => {
                    // The same process rejoined after being declared dead (a partition healed): its
                    // state is intact, and the core settles any group both sides claimed.
                    tracing::info!(node = %new.addr, "node rejoined");
                    vec![Input::NodeUp(NodeAddr(new.addr))]
                }
                OwnedNotification::Rename(old, new) => {
                    // A restart at the same address: the old process's state is gone.
                    tracing::info!(node = %new.addr, "node restarted");
                    vec![
                        Input::NodeDown(NodeAddr(old.addr)),
                        Input::NodeUp(NodeAddr(new.addr)),
                    ]
                }
                _ => Vec::new(),
            };
            for input in inputs {
                let _ = self.inputs.send(NodeInput::core(input)).await;
            }
        }
    }
}
