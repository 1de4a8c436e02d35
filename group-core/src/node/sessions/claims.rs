//! One session per uid in the whole cluster.
//!
//! A Hello on one node replaces an older session of the same uid on that node; across nodes, every node
//! tells every other live node that it opened a session (`SessionOpened`, with its wall-clock opening
//! time). A node holding an older session of that uid discards it, exactly as a second Hello on one node
//! would (the client gets the closing notice CLOSED_REPLACED, the groups' members the discard message).
//! Newest wins; equal times are broken by node address, so every node picks the same winner even when two
//! Hellos race.
//!
//! The discarded session's node then leaves the user's groups, but a join from the new node can reach a
//! group's owner before that leave does. The new node's claim, sent on the same ordered link before any
//! join, reaches the owner first, so the owner knows which node holds the newest session and takes a
//! member on any other node for stale: it removes it (with the discard message) and admits the join.
//!
//! Claims are remembered for [`CLAIM_MEMORY`] to order late arrivals; that bounds the table by the rate
//! of Hellos in the cluster.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use crate::cluster::mesh::{MeshMessage, Notice};
use crate::id::{GroupId, NodeAddr};
use crate::node::remote_joins::valid_uid;
use crate::node::{CloseReason, DiscardReason, Node, Sid, Uid};
use crate::proto::{VER_GROUP, cmd};
use crate::time::Instant;

/// How long a claim is remembered. Mesh messages arrive within seconds or not at all.
pub const CLAIM_MEMORY: Duration = Duration::from_secs(60);

/// Most claims remembered (about 30 MiB with the longest uids): beyond it the oldest are forgotten
/// first. A forgotten claim only loses the owner's early view of a replaced member; the old node's
/// leave still arrives.
pub const MAX_CLAIMS: usize = 1 << 18;

/// Where and when each uid's newest session opened, as far as this node heard.
#[derive(Debug, Default)]
pub(crate) struct Claims {
    /// The newest claim per uid, with when it was recorded.
    newest: BTreeMap<Uid, (Claim, Instant)>,
    /// (when recorded, uid), oldest first, to forget claims after [`CLAIM_MEMORY`].
    recorded: VecDeque<(Instant, Uid)>,
}

/// A session's opening time (wall clock, ns) and node: the larger is the newer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Claim {
    pub opened_ns: u64,
    pub node: NodeAddr,
}

impl Claims {
    /// Records `claim` if it is newer than what is known for `uid`; false if it is not.
    fn record(&mut self, uid: &Uid, claim: Claim, now: Instant) -> bool {
        self.forget_older_than(now);
        if self
            .newest
            .get(uid)
            .is_some_and(|(known, _)| *known >= claim)
        {
            return false;
        }
        self.newest.insert(uid.clone(), (claim, now));
        self.recorded.push_back((now, uid.clone()));
        true
    }

    fn forget_older_than(&mut self, now: Instant) {
        while let Some((at, uid)) = self.recorded.front() {
            let full = self.recorded.len() >= MAX_CLAIMS;
            if now.saturating_duration_since(*at) < CLAIM_MEMORY && !full {
                break;
            }
            // A uid whose claim was renewed since keeps it: only its latest record forgets it.
            if self
                .newest
                .get(uid)
                .is_some_and(|(_, recorded)| recorded == at)
            {
                self.newest.remove(uid);
            }
            self.recorded.pop_front();
        }
    }

    /// The node holding `uid`'s newest session, if a claim is remembered.
    pub fn node_of(&self, uid: &str) -> Option<NodeAddr> {
        self.newest.get(uid).map(|(claim, _)| claim.node)
    }
}

impl Node {
    /// A session opened here: tell every other live node, so that an older one elsewhere is discarded.
    pub(in crate::node) fn claim_session(&mut self, uid: &Uid, sid: Sid) {
        let own = self.config.addr;
        let opened_ns = self
            .config
            .clock_origin_ns
            .saturating_add(self.now.as_nanos());
        let claim = Claim {
            opened_ns,
            node: own,
        };
        self.claims.record(uid, claim, self.now);
        let peers: Vec<NodeAddr> = self.cluster.live().collect();
        for peer in peers {
            let message = MeshMessage::SessionOpened {
                uid: uid.to_string(),
                sid: sid.0,
                opened_ns,
            };
            self.send_mesh(peer, message);
        }
    }

    /// Another node opened a session for `uid`: an older one here is discarded.
    pub(in crate::node) fn on_session_opened(&mut self, from: NodeAddr, uid: &str, opened_ns: u64) {
        if !valid_uid(uid) {
            return;
        }
        let uid: Uid = uid.into();
        let claim = Claim {
            opened_ns,
            node: from,
        };
        if !self.claims.record(&uid, claim, self.now) {
            return; // A newer session is known (maybe this node's own): that one stays.
        }
        if let Some(conn) = self.sessions.get(&uid).map(|s| s.conn) {
            self.close(conn, CloseReason::Replaced, DiscardReason::Replaced);
        }
    }

    /// Whether member `uid` of a group, connected at `node`, belongs to a session that a newer one on
    /// another node replaced (its node has not told the owner yet).
    pub(in crate::node) fn is_superseded(&self, uid: &str, node: NodeAddr) -> bool {
        self.claims
            .node_of(uid)
            .is_some_and(|newest| newest != node)
    }

    /// Removes a superseded member from a group this node owns, as its session's end would: the others get
    /// the discard message.
    pub(in crate::node) fn remove_superseded(&mut self, id: &GroupId, uid: &str, sid: Sid) {
        let message = (self.discard_message)(id, uid, &sid);
        let notice = Notice {
            ver: VER_GROUP,
            cmd: cmd::LEAVE,
            message,
        };
        self.remove_local_member(id, uid, Some(notice));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: u64) -> Instant {
        Instant::ZERO.saturating_add(Duration::from_secs(s))
    }

    fn claim(opened_ns: u64, port: u16) -> Claim {
        Claim {
            opened_ns,
            node: NodeAddr::new(std::net::Ipv4Addr::LOCALHOST, port),
        }
    }

    #[test]
    fn the_newest_claim_wins_ties_go_to_the_higher_address_and_old_ones_are_forgotten() {
        let mut claims = Claims::default();
        let yuki: Uid = "yuki".into();
        assert!(claims.record(&yuki, claim(100, 1), at(0)));
        assert!(
            !claims.record(&yuki, claim(50, 2), at(1)),
            "an older one arriving late"
        );
        assert!(
            claims.record(&yuki, claim(100, 2), at(1)),
            "a tie: the higher address"
        );
        assert!(!claims.record(&yuki, claim(100, 1), at(1)));
        assert_eq!(claims.node_of("yuki"), Some(claim(0, 2).node));
        // Renewed at 30 s: the record from 1 s does not forget it at 61 s.
        assert!(claims.record(&yuki, claim(200, 3), at(30)));
        claims.forget_older_than(at(61));
        assert_eq!(claims.node_of("yuki"), Some(claim(0, 3).node));
        claims.forget_older_than(at(90));
        assert_eq!(claims.node_of("yuki"), None);
        assert!(claims.recorded.is_empty());
    }

    #[test]
    fn a_flood_of_claims_is_bounded() {
        let mut claims = Claims::default();
        for i in 0..MAX_CLAIMS + 10 {
            let uid: Uid = format!("u{i}").into();
            assert!(claims.record(&uid, claim(1, 1), at(0)));
        }
        assert!(claims.recorded.len() <= MAX_CLAIMS);
        assert!(claims.newest.len() <= MAX_CLAIMS);
        assert_eq!(claims.node_of("u0"), None, "the oldest went first");
        assert!(claims.node_of(&format!("u{}", MAX_CLAIMS + 9)).is_some());
    }
}
