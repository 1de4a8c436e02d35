//! A group's state and its delivery: immediate pushes, and the merge buffer that batches broadcasts into
//! one push per member per interval.
//!
//! Encoding happens once per push, never once per member: every recipient gets a clone of the same
//! `Bytes`. The one exception is merging, where a member who sent some of the buffered entries must not
//! receive its own; such a member gets a copy without them, built once per sender per flush. Its cost is
//! a memcpy of the batch per distinct sender, the same order as the bytes that member is sent anyway.

use std::collections::{BTreeMap, VecDeque};
use std::ops::Range;
use std::time::Duration;

use bytes::Bytes;

use crate::cluster::mesh::{GroupState, MemberState, Version};
use crate::id::{GroupId, NodeAddr};
use crate::node::deliveries::Deliveries;
use crate::node::{ConnId, Sid, Transmit, Uid};
use crate::proto::BroadcastPushBuilder;
use crate::time::Instant;

/// One member of a group, as the node that holds the group knows it.
#[derive(Debug, Clone)]
pub(crate) struct Member {
    /// The member's session ID, reported in snapshots (uid -> sid).
    pub sid: Sid,
    /// The node the member is connected to. Cluster relay sends to the set of these nodes.
    pub node: NodeAddr,
    /// The member's connection when it is connected to this node; `None` for members on other nodes.
    pub conn: Option<ConnId>,
}

/// A broadcast waiting in a merging group's buffer.
#[derive(Debug, Clone)]
pub(crate) struct PendingEntry {
    pub ver: u8,
    pub cmd: u16,
    pub reliable: bool,
    /// `None` for an announce: it goes to every member.
    pub sender: Option<Uid>,
    pub message: Bytes,
}

impl PendingEntry {
    fn run_key(&self) -> (u8, u16, bool) {
        (self.ver, self.cmd, self.reliable)
    }
    fn wire_len(&self) -> usize {
        BroadcastPushBuilder::entry_len(self.sender.as_deref().unwrap_or(""), &self.message)
    }
}

/// Per-group tick timer: the driver turns each firing into a callback.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Tick {
    pub interval: Duration,
    /// Distinguishes this timer from ones set earlier, whose heap entries are then ignored.
    pub generation: u64,
}

#[derive(Debug)]
pub(crate) struct Group {
    pub id: GroupId,
    pub allow_empty: bool,
    pub is_static: bool,
    /// Created by random join, so random join may pick it.
    pub random_pool: bool,
    pub ttl: Duration,
    /// The group's merge interval as created; zero means every broadcast is pushed at once.
    pub interval: Duration,
    /// The interval this node merges with: `interval` on the owner (and for static groups), the cluster's
    /// `sendInterval` on a node holding a copy.
    pub merge_every: Duration,
    /// Membership version, counted by the owner (see [`Version`]).
    pub version: Version,
    /// On a copy: when the owner last showed it still has the group (state, change, or digest).
    pub heard_from_owner: Instant,
    /// On a copy: this node changed it on its own (it dropped the members of a node it saw die), so its
    /// members may differ from the owner's at the same version. The next digest fetches the whole state.
    pub diverged: bool,
    /// Owner node from the ID; `None` for static groups, which every node holds.
    pub owner: Option<NodeAddr>,
    pub backups: Vec<NodeAddr>,
    pub members: super::members::Members,
    /// When the group last became empty; `None` while it has members.
    pub empty_since: Option<Instant>,
    /// A TTL timer entry is in the heap; avoids piling up one entry per emptiness.
    pub ttl_timer_armed: bool,
    pub pending: VecDeque<PendingEntry>,
    /// Wire bytes of `pending`, to flush before a merged push outgrows `maxMergeBytes`.
    pub pending_bytes: usize,
    pub flush_armed: bool,
    pub tick: Option<Tick>,
    /// The latest relay counter delivered here from each origin node: an earlier entry arriving after a
    /// later one (the tree was re-planned around a failed node) is dropped, never delivered out of order.
    /// One entry per node at most.
    pub relay_seen: std::collections::BTreeMap<NodeAddr, u64>,
}

fn member_state(uid: &str, m: &Member) -> MemberState {
    MemberState {
        uid: uid.to_string(),
        sid: m.sid.0,
        node: m.node,
    }
}

impl Group {
    pub fn new(id: GroupId, allow_empty: bool, ttl: Duration, interval: Duration) -> Self {
        let layout = id.layout().ok();
        Group {
            id,
            allow_empty,
            is_static: false,
            random_pool: false,
            ttl,
            interval,
            merge_every: interval,
            version: Version::default(),
            heard_from_owner: Instant::ZERO,
            diverged: false,
            owner: layout.map(|l| l.owner),
            backups: layout
                .map(|l| l.backups.iter().flatten().copied().collect())
                .unwrap_or_default(),
            members: Default::default(),
            empty_since: None,
            ttl_timer_armed: false,
            pending: VecDeque::new(),
            pending_bytes: 0,
            flush_armed: false,
            tick: None,
            relay_seen: std::collections::BTreeMap::new(),
        }
    }

    /// The whole group as the mesh describes it. Only meaningful for non-static groups (which have an owner).
    pub fn state(&self, own: NodeAddr) -> GroupState {
        GroupState {
            id: self.id,
            allow_empty: self.allow_empty,
            ttl_s: self.ttl.as_secs(),
            interval_ms: u64::try_from(self.interval.as_millis()).unwrap_or(u64::MAX),
            owner: self.owner.unwrap_or(own),
            backups: self.backups.clone(),
            version: self.version,
            members: self
                .members
                .iter()
                .map(|(uid, m)| member_state(uid, m))
                .collect(),
        }
    }

    /// The members connected to `node`, as the mesh describes them.
    pub fn members_on(&self, node: NodeAddr) -> Vec<MemberState> {
        self.members
            .iter()
            .filter(|(_, m)| m.node == node)
            .map(|(uid, m)| member_state(uid, m))
            .collect()
    }

    /// The fingerprint of the members on `node` (see [`crate::cluster::mesh::members_fingerprint`]).
    pub fn fingerprint_on(&self, node: NodeAddr) -> u64 {
        crate::cluster::mesh::members_fingerprint(
            self.members
                .iter()
                .filter(|(_, m)| m.node == node)
                .map(|(uid, m)| (&**uid, &m.sid.0)),
        )
    }

    /// Other nodes holding members, in address order: where a broadcast is relayed.
    pub fn member_nodes_except(&self, own: NodeAddr) -> Vec<NodeAddr> {
        self.members.nodes().filter(|n| *n != own).collect()
    }

    /// Every other node that keeps a copy: member nodes, backups and the owner. Membership changes go here.
    pub fn copy_holders_except(&self, own: NodeAddr) -> Vec<NodeAddr> {
        let mut nodes = self.member_nodes_except(own);
        nodes.extend(self.backups.iter().chain(self.owner.iter()).copied());
        nodes.retain(|n| *n != own);
        nodes.sort_unstable();
        nodes.dedup();
        nodes
    }

    /// Counts a silent removal (no push) at the owner: the next version, and the change for the copies.
    pub fn count_removal(&mut self, uid: &str) -> crate::cluster::mesh::MeshMessage {
        self.version = self.version.next();
        crate::cluster::mesh::MeshMessage::MemberRemoved {
            group: self.id,
            version: self.version,
            uid: uid.to_string(),
            notice: None,
        }
    }

    /// Whether this node owns the group (static groups have no owner).
    pub fn owned_by(&self, own: NodeAddr) -> bool {
        self.owner == Some(own)
    }

    /// Whether an empty group is removed at once rather than after its ttl.
    pub fn deleted_when_empty(&self) -> bool {
        !self.allow_empty && !self.is_static
    }

    /// Sends `frame` to every local member except `except`.
    pub fn send_to_members(
        &self,
        frame: &Bytes,
        reliable: bool,
        except: Option<&str>,
        out: &mut Deliveries,
    ) {
        let conns = self.members.local_conns_except(except);
        out.fan_out(frame, reliable, conns);
    }

    /// Pushes one broadcast at once as a single-entry 113-style push.
    pub fn deliver_now(&self, entry: &PendingEntry, out: &mut Deliveries) {
        let sender = entry.sender.as_deref();
        let mut builder =
            BroadcastPushBuilder::new(entry.ver, entry.cmd, &self.id, entry.wire_len());
        builder.push_entry(sender.unwrap_or(""), &entry.message);
        self.send_to_members(&builder.finish(), entry.reliable, sender, out);
    }

    /// Adds a broadcast to the merge buffer. Returns true when the buffer must be flushed first because the
    /// entry would push the merged frame past `max_merge_bytes`.
    pub fn needs_flush_before(&self, entry: &PendingEntry, max_merge_bytes: usize) -> bool {
        let payload = crate::id::GROUP_ID_LEN + self.pending_bytes + entry.wire_len();
        !self.pending.is_empty() && payload > max_merge_bytes
    }

    pub fn buffer(&mut self, entry: PendingEntry) {
        self.pending_bytes += entry.wire_len();
        self.pending.push_back(entry);
    }

    /// Pushes everything buffered: one push per run of entries sharing (ver, cmd, reliable), in order.
    pub fn flush(&mut self, out: &mut Deliveries) {
        let entries: Vec<PendingEntry> = self.pending.drain(..).collect();
        self.pending_bytes = 0;
        let mut rest = entries.as_slice();
        while let Some(first) = rest.first() {
            let key = first.run_key();
            let run_len = rest.iter().take_while(|e| e.run_key() == key).count();
            let (run, tail) = rest.split_at(run_len);
            self.flush_run(run, out);
            rest = tail;
        }
    }

    fn flush_run(&self, run: &[PendingEntry], out: &mut Deliveries) {
        let Some(first) = run.first() else { return };
        let (ver, cmd, reliable) = first.run_key();
        let bytes: usize = run.iter().map(PendingEntry::wire_len).sum();
        let mut builder = BroadcastPushBuilder::new(ver, cmd, &self.id, bytes);
        let ranges: Vec<Range<usize>> = run
            .iter()
            .map(|e| builder.push_entry(e.sender.as_deref().unwrap_or(""), &e.message))
            .collect();
        let shared = builder.finish();
        // Members who sent entries in this run get a copy without their own; built lazily, once each.
        let mut own_copies: BTreeMap<&str, Option<Bytes>> = run
            .iter()
            .filter_map(|e| e.sender.as_deref())
            .map(|uid| (uid, None))
            .collect();
        for (uid, member) in self.members.iter() {
            let Some(conn) = member.conn else { continue };
            let frame = match own_copies.get_mut(&**uid) {
                None => shared.clone(),
                Some(copy) => {
                    let copy = copy.get_or_insert_with(|| {
                        let mut b = BroadcastPushBuilder::new(ver, cmd, &self.id, bytes);
                        for (entry, range) in run.iter().zip(&ranges) {
                            if entry.sender.as_deref() != Some(&**uid) {
                                b.push_encoded_entry(shared.get(range.clone()).unwrap_or_default());
                            }
                        }
                        if b.is_empty() {
                            Bytes::new()
                        } else {
                            b.finish()
                        }
                    });
                    if copy.is_empty() {
                        continue;
                    }
                    copy.clone()
                }
            };
            out.push_back(Transmit {
                conn,
                frame,
                reliable,
            });
        }
    }
}
