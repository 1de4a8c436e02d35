//! Group IDs and node addresses.
//!
//! A generated group ID is 52 ASCII characters: 16 lowercase hex digits of the creation time in
//! nanoseconds, then three 12-hex node addresses (owner, first backup, second backup), an absent backup
//! written as twelve zeros. Any node can therefore find a group's owner from its ID alone, with no lookup.
//! Static group IDs come from configuration and may be any 52 printable ASCII characters; they carry no
//! layout.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddrV4};

/// Length of every group ID on the wire and in configuration.
pub const GROUP_ID_LEN: usize = 52;
const TIME_HEX: usize = 16;
const NODE_HEX: usize = 12;
/// How many node addresses a generated ID carries: the owner and up to two backups.
pub const MAX_ID_NODES: usize = 3;

/// The IPv4 address and port of a node's mesh endpoint: how nodes name each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeAddr(pub SocketAddrV4);

impl NodeAddr {
    /// A node address from its parts.
    pub const fn new(ip: Ipv4Addr, port: u16) -> Self {
        NodeAddr(SocketAddrV4::new(ip, port))
    }

    /// The 48-bit big-endian packing used inside group IDs (IPv4 octets, then the port).
    pub fn to_bits(self) -> u64 {
        (u64::from(u32::from(*self.0.ip())) << 16) | u64::from(self.0.port())
    }

    /// Inverse of [`NodeAddr::to_bits`]; bits above 48 are ignored.
    pub fn from_bits(bits: u64) -> Self {
        let ip = Ipv4Addr::from(((bits >> 16) & 0xFFFF_FFFF) as u32);
        NodeAddr::new(ip, (bits & 0xFFFF) as u16)
    }
}

impl fmt::Display for NodeAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A group's identity: exactly 52 printable ASCII bytes.
///
/// Cheap to copy and compare; ordered byte-wise so that maps keyed by it iterate deterministically.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GroupId([u8; GROUP_ID_LEN]);

/// Why bytes or text are not a group ID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GroupIdError {
    /// The input is not 52 bytes long. Group IDs are fixed length; check for truncation or padding.
    #[error("group ID must be exactly 52 characters, got {len}")]
    WrongLength {
        /// The length that was given.
        len: usize,
    },
    /// A byte outside printable ASCII (0x21..=0x7E). IDs are compared byte for byte, so spaces and control
    /// characters are refused rather than silently trimmed.
    #[error("group ID byte {index} is {byte:#04x}, not printable ASCII")]
    NotPrintable {
        /// Position of the offending byte.
        index: usize,
        /// The offending byte.
        byte: u8,
    },
    /// A generated ID has a character that is not a lowercase hex digit where the layout expects one.
    /// Generated IDs are always lowercase, so uppercase static IDs are never mistaken for routable ones.
    #[error("group ID character {index} is {byte:?}, not a lowercase hex digit")]
    NotHex {
        /// Position of the offending character.
        index: usize,
        /// The offending character.
        byte: char,
    },
    /// A generated ID's owner address is all zeros: such an ID names no node and cannot be routed.
    #[error("group ID names no owner node")]
    NoOwner,
    /// A generated ID lists a second backup without a first: the layout is always filled in order.
    #[error("group ID has a gap in its backup list")]
    BackupGap,
}

impl GroupId {
    /// Validates 52 printable ASCII bytes. Used for IDs read from the wire and static IDs from configuration.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, GroupIdError> {
        let array: [u8; GROUP_ID_LEN] = bytes
            .try_into()
            .map_err(|_| GroupIdError::WrongLength { len: bytes.len() })?;
        if let Some(index) = array.iter().position(|b| !b.is_ascii_graphic()) {
            return Err(GroupIdError::NotPrintable {
                index,
                byte: array.get(index).copied().unwrap_or_default(),
            });
        }
        Ok(GroupId(array))
    }

    /// Builds the ID of a newly created group. `created_ns` should be unique per owner node; the node
    /// guarantees that by never issuing the same time twice.
    pub fn generate(created_ns: u64, owner: NodeAddr, backups: &[NodeAddr]) -> Self {
        debug_assert!(
            backups.len() < MAX_ID_NODES,
            "at most two backups fit in an ID"
        );
        let mut out = [b'0'; GROUP_ID_LEN];
        write_hex(&mut out[..TIME_HEX], created_ns);
        let nodes = std::iter::once(owner)
            .chain(backups.iter().copied())
            .take(MAX_ID_NODES);
        for (slot, node) in out[TIME_HEX..].chunks_mut(NODE_HEX).zip(nodes) {
            write_hex(slot, node.to_bits());
        }
        GroupId(out)
    }

    /// The 52 bytes, as sent on the wire.
    pub fn as_bytes(&self) -> &[u8; GROUP_ID_LEN] {
        &self.0
    }

    /// The ID as text. Always valid: construction admits printable ASCII only.
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).unwrap_or_default()
    }

    /// Reads the generated layout (creation time, owner, backups). Static IDs and IDs of other software
    /// give an error, which callers treat as "no owner encoded here". A static ID written in lowercase
    /// hex can parse; nodes know their static IDs from configuration and check that first.
    pub fn layout(&self) -> Result<IdLayout, GroupIdError> {
        let lower_hex = |b: &u8| b.is_ascii_digit() || (b'a'..=b'f').contains(b);
        if let Some(index) = self.0.iter().position(|b| !lower_hex(b)) {
            return Err(GroupIdError::NotHex {
                index,
                byte: char::from(self.0.get(index).copied().unwrap_or_default()),
            });
        }
        let created_ns = read_hex(&self.0[..TIME_HEX]);
        let mut nodes = self.0[TIME_HEX..].chunks(NODE_HEX).map(read_hex);
        let owner = nodes.next().unwrap_or(0);
        let first = nodes.next().unwrap_or(0);
        let second = nodes.next().unwrap_or(0);
        if owner == 0 {
            return Err(GroupIdError::NoOwner);
        }
        if first == 0 && second != 0 {
            return Err(GroupIdError::BackupGap);
        }
        let backup = |bits: u64| (bits != 0).then(|| NodeAddr::from_bits(bits));
        Ok(IdLayout {
            created_ns,
            owner: NodeAddr::from_bits(owner),
            backups: [backup(first), backup(second)],
        })
    }
}

impl std::str::FromStr for GroupId {
    type Err = GroupIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        GroupId::from_bytes(s.as_bytes())
    }
}

impl fmt::Display for GroupId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for GroupId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "GroupId({})", self.as_str())
    }
}

/// What a generated group ID says about its group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdLayout {
    /// Creation time in nanoseconds (wall clock of the owner, as the driver reported it).
    pub created_ns: u64,
    /// The node that owns the group: joins go there first.
    pub owner: NodeAddr,
    /// Nodes that take over, in order, when the owner dies.
    pub backups: [Option<NodeAddr>; 2],
}

impl IdLayout {
    /// Owner then backups, skipping absent ones: the order in which a join tries them.
    pub fn nodes(&self) -> impl Iterator<Item = NodeAddr> + '_ {
        std::iter::once(self.owner).chain(self.backups.iter().flatten().copied())
    }
}

fn write_hex(out: &mut [u8], value: u64) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut v = value;
    for slot in out.iter_mut().rev() {
        *slot = DIGITS.get((v & 0xF) as usize).copied().unwrap_or(b'0');
        v >>= 4;
    }
}

/// Caller guarantees every byte is a hex digit and the slice is at most 16 long.
fn read_hex(digits: &[u8]) -> u64 {
    digits.iter().fold(0u64, |acc, &d| {
        let nibble = char::from(d).to_digit(16).unwrap_or(0);
        (acc << 4) | u64::from(nibble)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn addr(a: u8, b: u8, c: u8, d: u8, port: u16) -> NodeAddr {
        NodeAddr::new(Ipv4Addr::new(a, b, c, d), port)
    }

    #[test]
    fn golden_generated_id() {
        let id = GroupId::generate(0x1234, addr(127, 0, 0, 1, 8100), &[addr(10, 0, 0, 2, 8101)]);
        assert_eq!(
            id.as_str(),
            "00000000000012347f0000011fa40a0000021fa5000000000000"
        );
        let layout = id.layout().unwrap();
        assert_eq!(layout.created_ns, 0x1234);
        assert_eq!(layout.owner, addr(127, 0, 0, 1, 8100));
        assert_eq!(layout.backups, [Some(addr(10, 0, 0, 2, 8101)), None]);
        assert_eq!(layout.nodes().count(), 2);
    }

    #[test]
    fn static_ids_are_any_printable_52_chars_without_layout() {
        let id: GroupId = "AA11111222223333344444555556666677777888889999900000"
            .parse()
            .unwrap();
        assert!(matches!(
            id.layout(),
            Err(GroupIdError::NotHex { index: 0, .. })
        ));
    }

    #[test]
    fn malformed_ids_are_errors() {
        assert_eq!(
            GroupId::from_bytes(b"short"),
            Err(GroupIdError::WrongLength { len: 5 })
        );
        let mut bytes = [b'a'; GROUP_ID_LEN];
        bytes[7] = b' ';
        assert_eq!(
            GroupId::from_bytes(&bytes),
            Err(GroupIdError::NotPrintable {
                index: 7,
                byte: b' '
            })
        );
        let zeros = GroupId::from_bytes(&[b'0'; GROUP_ID_LEN]).unwrap();
        assert_eq!(zeros.layout(), Err(GroupIdError::NoOwner));
        let gap = "0000000000000001" // time
            .to_string()
            + "7f0000011fa4"
            + "000000000000"
            + "0a0000021fa5";
        assert_eq!(
            gap.parse::<GroupId>().unwrap().layout(),
            Err(GroupIdError::BackupGap)
        );
    }

    fn any_node() -> impl Strategy<Value = NodeAddr> {
        (any::<u32>(), any::<u16>())
            .prop_filter("nonzero", |(ip, port)| *ip != 0 || *port != 0)
            .prop_map(|(ip, port)| NodeAddr::new(Ipv4Addr::from(ip), port))
    }

    proptest! {
        #[test]
        fn generate_then_layout_round_trips(
            created in any::<u64>(),
            owner in any_node(),
            backups in proptest::collection::vec(any_node(), 0..=2),
        ) {
            let id = GroupId::generate(created, owner, &backups);
            let layout = id.layout().unwrap();
            prop_assert_eq!(layout.created_ns, created);
            prop_assert_eq!(layout.owner, owner);
            let parsed: Vec<_> = layout.backups.iter().flatten().copied().collect();
            prop_assert_eq!(parsed, backups);
            // Text round trip too.
            let again: GroupId = id.as_str().parse().unwrap();
            prop_assert_eq!(again, id);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..80)) {
            if let Ok(id) = GroupId::from_bytes(&bytes) {
                prop_assert_eq!(id.as_bytes().as_slice(), bytes.as_slice());
                let _ = id.layout();
            }
        }
    }
}
