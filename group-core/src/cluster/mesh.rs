//! Messages between the nodes of a cluster, and their encoding.
//!
//! A mesh frame is one version byte ([`MESH_VERSION`]) followed by a postcard-encoded [`MeshMessage`].
//! The transport (a length-delimited TCP stream in group-net, a queue in the simulation) carries whole
//! frames; [`decode`] never panics and refuses frames from another protocol version with a clear error, so
//! that a node of a newer release is refused rather than misread.

use bytes::Bytes;
use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

use crate::id::{GroupId, NodeAddr};

/// The mesh protocol version. Bump it on any change to [`MeshMessage`] (postcard is not
/// self-describing) or to what travels beside it on the mesh address: 3 added the MAC in front of every
/// membership datagram, so a node of an older release is refused by name at the link handshake instead
/// of silently failing failure detection.
pub const MESH_VERSION: u8 = 3;

/// Most entries one [`MeshMessage::Digest`] carries; larger digests are split.
pub const MAX_DIGEST_ENTRIES: usize = 4096;

/// A group's version as the owner counts it: `epoch` changes with every change of owner, `seq` with every
/// change of membership. Replicas apply a change only if it is the next one, and ask for the whole state
/// when they see a gap, so lost or reordered mesh messages cannot leave a replica silently wrong.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Version {
    /// Owner changes since the group was created.
    pub epoch: u32,
    /// Membership changes within this epoch.
    pub seq: u64,
}

impl Version {
    /// The version after one more membership change.
    pub fn next(self) -> Version {
        Version {
            epoch: self.epoch,
            seq: self.seq.saturating_add(1),
        }
    }
}

/// A push to send to a group's members on every node: the join or leave message with its ver and cmd.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notice {
    /// Version byte of the push.
    pub ver: u8,
    /// Command of the push.
    pub cmd: u16,
    /// The custom message (empty only for a discard, whose leave push is sent even when empty).
    pub message: Bytes,
}

/// One group in a [`MeshMessage::Digest`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DigestEntry {
    /// The group.
    pub group: GroupId,
    /// The owner's version of it.
    pub version: Version,
    /// [`members_fingerprint`] of the members the owner counts on the receiving node.
    pub members_here: u64,
}

/// A fingerprint of a list of members (uid, sid), given in uid order: FNV-1a over the bytes. Owner and
/// member node compute it over the same members to see, cheaply, whether they agree.
pub fn members_fingerprint<'a>(members: impl Iterator<Item = (&'a str, &'a [u8; 16])>) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |byte: u8| {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    };
    for (uid, sid) in members {
        uid.bytes().for_each(&mut eat);
        eat(0xff);
        sid.iter().copied().for_each(&mut eat);
    }
    hash
}

/// One member as the mesh describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberState {
    /// The member's user ID.
    pub uid: String,
    /// Its session ID.
    pub sid: [u8; 16],
    /// The node it is connected to.
    pub node: NodeAddr,
}

/// Everything a node needs to hold a copy of a group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupState {
    /// The group.
    pub id: GroupId,
    /// Kept while empty until its ttl runs out.
    pub allow_empty: bool,
    /// Seconds an allow_empty group survives emptiness.
    pub ttl_s: u64,
    /// The owner's merge interval in milliseconds.
    pub interval_ms: u64,
    /// The node that decides membership.
    pub owner: NodeAddr,
    /// Nodes that keep a full copy to take over, in takeover order.
    pub backups: Vec<NodeAddr>,
    /// The version this state is at.
    pub version: Version,
    /// All members on all nodes.
    pub members: Vec<MemberState>,
}

/// Why a remote join was refused by the node asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum JoinRefusal {
    /// The node does not hold the group.
    NotFound,
    /// The node holds the group but does not own it (any more): try the next address.
    NotOwner,
    /// The user is already a member (from another session or node).
    AlreadyMember,
    /// The group has the maximum number of members.
    GroupFull,
    /// The node holds a copy, but the owner it knows is unreachable or dead and no successor has taken
    /// over yet: the group exists; ask again shortly.
    OwnerInTransition,
}

/// What a relayed message carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RelayEntry {
    /// A broadcast (`sender` empty for an announce).
    Broadcast {
        /// Version byte of the push.
        ver: u8,
        /// Command of the push.
        cmd: u16,
        /// UDP members: reliable channel.
        reliable: bool,
        /// The sender's uid, empty for an announce.
        sender: String,
        /// The message.
        message: Bytes,
    },
    /// A join or leave push of a static group (static groups have no owner to fan it out).
    StaticMember {
        /// The member that joined or left.
        uid: String,
        /// The push.
        notice: Notice,
    },
}

/// One message between two nodes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MeshMessage {
    /// A user on the sender's node asks to join a group the receiver owns.
    JoinRequest {
        /// Matches the response to the request.
        op: u64,
        /// The group.
        group: GroupId,
        /// The joining member (its node is the sender).
        member: MemberState,
        /// The push for the other members, if the join message is not empty.
        notice: Option<Notice>,
    },
    /// The answer to a [`MeshMessage::JoinRequest`]: the whole group (the joiner's node keeps a copy).
    JoinResponse {
        /// The request's `op`.
        op: u64,
        /// The group.
        group: GroupId,
        /// The group's state with the new member in it, or why not.
        result: Result<GroupState, JoinRefusal>,
    },
    /// A member on the sender's node left the group (or its session ended). Sent to the owner.
    Leave {
        /// The group.
        group: GroupId,
        /// The member.
        uid: String,
        /// The push for the remaining members.
        notice: Option<Notice>,
    },
    /// Owner to the group's nodes: a member joined.
    MemberAdded {
        /// The group.
        group: GroupId,
        /// The version after this change.
        version: Version,
        /// The member.
        member: MemberState,
        /// The push for the other members.
        notice: Option<Notice>,
    },
    /// Owner to the group's nodes: a member left.
    MemberRemoved {
        /// The group.
        group: GroupId,
        /// The version after this change.
        version: Version,
        /// The member.
        uid: String,
        /// The push for the remaining members.
        notice: Option<Notice>,
    },
    /// Owner to the group's nodes: the whole group (after creation, an owner change, or on request).
    State(GroupState),
    /// A node's copy is behind: the owner answers with [`MeshMessage::State`].
    SyncRequest {
        /// The group.
        group: GroupId,
    },
    /// Owner to each node, periodically: the versions of the groups they share and a fingerprint of the
    /// members the owner counts on the receiver, to catch lost changes in either direction.
    Digest {
        /// One entry per group.
        groups: Vec<DigestEntry>,
    },
    /// Member node to owner: the complete list of the group's members on the sender's node. The owner
    /// takes it as the truth for that node (after a failover, or when a copy disagrees).
    Register {
        /// The group.
        group: GroupId,
        /// The sender's members of it.
        members: Vec<MemberState>,
        /// The sender's whole copy, sent when it expects the receiver to take over after the owner died:
        /// a receiver that lacks the group (it missed the owner's state, or restarted) starts from it.
        copy: Option<GroupState>,
    },
    /// A draining owner hands a group to its first backup, which becomes owner.
    Handover(GroupState),
    /// Owner to the group's nodes: the group is gone. Also the answer of a node asked about a group it
    /// does not hold.
    Deleted {
        /// The group.
        group: GroupId,
        /// Its version when it was deleted (zero when the sender never held it): states of that epoch or
        /// earlier, still in flight, must not bring it back.
        version: Version,
    },
    /// A broadcast or static-group push on its way through the relay tree.
    Relay {
        /// The group.
        group: GroupId,
        /// The node the broadcast entered the mesh at.
        origin: NodeAddr,
        /// The origin's relay counter: it only grows, so a receiver that got a later entry from the same
        /// origin drops an earlier one that arrives after it (a re-planned tree can overtake the old one).
        seq: u64,
        /// Nodes the receiver must forward to (see [`crate::cluster::relay::relay_plan`]).
        branch: Vec<NodeAddr>,
        /// What to deliver.
        entry: RelayEntry,
    },
    /// The sender opened a session for `uid` (one session per uid in the cluster): a node holding an older
    /// one discards it. Sent to every live node.
    SessionOpened {
        /// The user.
        uid: String,
        /// The new session's ID.
        sid: [u8; 16],
        /// When it opened, in nanoseconds of the sender's wall clock: the newest session wins (ties go to
        /// the higher node address).
        opened_ns: u64,
    },
}

impl MeshMessage {
    /// The group the message concerns, if it concerns one.
    pub fn group(&self) -> Option<&GroupId> {
        match self {
            MeshMessage::JoinRequest { group, .. }
            | MeshMessage::JoinResponse { group, .. }
            | MeshMessage::Leave { group, .. }
            | MeshMessage::MemberAdded { group, .. }
            | MeshMessage::MemberRemoved { group, .. }
            | MeshMessage::SyncRequest { group }
            | MeshMessage::Register { group, .. }
            | MeshMessage::Deleted { group, .. }
            | MeshMessage::Relay { group, .. } => Some(group),
            MeshMessage::State(state) | MeshMessage::Handover(state) => Some(&state.id),
            MeshMessage::Digest { .. } | MeshMessage::SessionOpened { .. } => None,
        }
    }
}

/// Why bytes from a peer are not a mesh message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MeshDecodeError {
    /// The frame is empty: not even a version byte.
    #[error("empty mesh frame")]
    Empty,
    /// The peer speaks another mesh protocol version; run the same release on every node.
    #[error("mesh protocol version {got}, this node speaks {MESH_VERSION}")]
    Version {
        /// The version byte received.
        got: u8,
    },
    /// The body does not decode.
    #[error("malformed mesh message: {0}")]
    Malformed(String),
}

/// Encodes a message as a mesh frame: version byte, then postcard.
pub fn encode(message: &MeshMessage) -> Vec<u8> {
    let out = vec![MESH_VERSION];
    // Serializing into a Vec cannot fail for these types (no maps with non-string keys, no custom errors).
    match postcard::to_extend(message, out) {
        Ok(v) => v,
        Err(_) => vec![MESH_VERSION],
    }
}

/// Decodes a mesh frame. Never panics; trailing bytes are an error.
pub fn decode(frame: &[u8]) -> Result<MeshMessage, MeshDecodeError> {
    let (&version, body) = frame.split_first().ok_or(MeshDecodeError::Empty)?;
    if version != MESH_VERSION {
        return Err(MeshDecodeError::Version { got: version });
    }
    let (message, rest) = postcard::take_from_bytes::<MeshMessage>(body)
        .map_err(|e| MeshDecodeError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(MeshDecodeError::Malformed(format!(
            "{} bytes after the message",
            rest.len()
        )));
    }
    Ok(message)
}

impl Serialize for GroupId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(self.as_bytes())
    }
}

impl<'de> Deserialize<'de> for GroupId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct IdVisitor;
        impl Visitor<'_> for IdVisitor {
            type Value = GroupId;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("52 bytes of group ID")
            }
            fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<GroupId, E> {
                GroupId::from_bytes(v).map_err(E::custom)
            }
        }
        deserializer.deserialize_bytes(IdVisitor)
    }
}

impl Serialize for NodeAddr {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u64(self.to_bits())
    }
}

impl<'de> Deserialize<'de> for NodeAddr {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let bits = u64::deserialize(deserializer)?;
        if bits >> 48 != 0 {
            return Err(de::Error::custom("node address wider than 48 bits"));
        }
        Ok(NodeAddr::from_bits(bits))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn sample() -> MeshMessage {
        let owner = NodeAddr::new(Ipv4Addr::new(127, 0, 0, 1), 8100);
        let id = GroupId::generate(7, owner, &[]);
        MeshMessage::JoinRequest {
            op: 9,
            group: id,
            member: MemberState {
                uid: "alice".into(),
                sid: [3; 16],
                node: owner,
            },
            notice: Some(Notice {
                ver: 1,
                cmd: 111,
                message: Bytes::from_static(b"hi"),
            }),
        }
    }

    #[test]
    fn round_trips() {
        let message = sample();
        let frame = encode(&message);
        assert_eq!(frame.first(), Some(&MESH_VERSION));
        assert_eq!(decode(&frame), Ok(message));
    }

    #[test]
    fn refuses_other_versions_empty_and_trailing_bytes() {
        let mut frame = encode(&sample());
        frame.push(0);
        assert!(matches!(decode(&frame), Err(MeshDecodeError::Malformed(_))));
        assert_eq!(decode(&[]), Err(MeshDecodeError::Empty));
        assert_eq!(
            decode(&[MESH_VERSION + 1, 0]),
            Err(MeshDecodeError::Version {
                got: MESH_VERSION + 1
            })
        );
    }

    #[test]
    fn every_truncation_is_an_error() {
        let frame = encode(&sample());
        for len in 0..frame.len() {
            assert!(
                decode(frame.get(..len).unwrap_or_default()).is_err(),
                "{len}"
            );
        }
    }

    #[test]
    fn refuses_bad_group_ids() {
        let mut frame = encode(&MeshMessage::SyncRequest {
            group: GroupId::from_bytes(&[b'a'; 52]).unwrap(),
        });
        let last = frame.len() - 1;
        frame[last] = b' ';
        assert!(matches!(decode(&frame), Err(MeshDecodeError::Malformed(_))));
    }
}
