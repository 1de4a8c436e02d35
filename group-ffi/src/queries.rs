//! Questions to the server over C: a user's groups, the nodes holding a group's members, a group's
//! snapshot. Each is **blocking** (it runs on the node task, in order with everything else) and refused
//! with `GROUP_RESULT_WRONG_THREAD` from the server's worker threads, as the rest of the server API.
//!
//! Lists come out into caller arrays of a given capacity; `*count` is always written with the number of
//! entries there are, so a capacity too small returns `GROUP_RESULT_BUFFER_TOO_SMALL` and tells the size
//! to retry with (nothing else is written then).

use std::net::SocketAddrV4;

use group_core::{GroupId, NodeAddr};

use crate::api::{finish, running};
use crate::panic::guard;
use crate::result::group_result;
use crate::server::group_server;
use crate::slice::{GROUP_ID_LEN, group_in, text};

/// Longest uid, in bytes.
pub const GROUP_MAX_UID_LEN: usize = 64;
const _: () = assert!(GROUP_MAX_UID_LEN == group_core::proto::MAX_UID_LEN);

/// A node's mesh address (IPv4, as the mesh uses).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct group_node_addr {
    /// The address's four bytes, most significant first (127.0.0.1 is {127, 0, 0, 1}).
    pub ip: [u8; 4],
    /// The port.
    pub port: u16,
}

impl From<NodeAddr> for group_node_addr {
    fn from(addr: NodeAddr) -> Self {
        let addr: SocketAddrV4 = addr.0;
        group_node_addr {
            ip: addr.ip().octets(),
            port: addr.port(),
        }
    }
}

/// One member of a group.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct group_member {
    /// The uid's bytes (UTF-8), `uid_len` of them; the rest are zero.
    // A literal, not GROUP_MAX_UID_LEN: the C# generator does not resolve constants in array lengths.
    pub uid: [u8; 64],
    /// Length of the uid.
    pub uid_len: usize,
    /// The member's 16-byte session ID.
    pub sid: [u8; 16],
    /// The node the member is connected to (its mesh address).
    pub node: group_node_addr,
}

/// What a group looks like on this node (its copy, for a group owned elsewhere).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct group_snapshot {
    /// 1 when the group is kept while empty until its ttl runs out.
    pub allow_empty: u8,
    /// 1 for a group of `staticGroups` (never deleted, no owner).
    pub is_static: u8,
    /// 1 when `owner` is set (every group but a static one).
    pub has_owner: u8,
    /// The node that owns the group.
    pub owner: group_node_addr,
    /// How long an empty group survives, in milliseconds.
    pub ttl_ms: u64,
    /// Merge interval of outbound messages in milliseconds (0: no merging).
    pub interval_ms: u64,
    /// Members, on every node.
    pub member_count: usize,
    /// Nodes holding members.
    pub member_node_count: usize,
    /// Owner changes since the group was created (a failover or handover adds one).
    pub epoch: u32,
    /// Membership changes within the epoch.
    pub seq: u64,
}

/// Writes `items` into the caller's array, or reports the count needed.
///
/// # Safety
/// `out` must point to `capacity` writable `T`s (NULL allowed when `capacity` is 0); `count` must be NULL
/// or writable.
unsafe fn write_list<T: Copy>(
    items: &[T],
    out: *mut T,
    capacity: usize,
    count: *mut usize,
) -> Result<(), group_result> {
    if count.is_null() {
        return Err(group_result::GROUP_RESULT_NULL_ARGUMENT);
    }
    // SAFETY: non-null and, per the contract, writable.
    unsafe { count.write(items.len()) };
    if items.len() > capacity {
        return Err(group_result::GROUP_RESULT_BUFFER_TOO_SMALL);
    }
    if items.is_empty() {
        return Ok(());
    }
    if out.is_null() {
        return Err(group_result::GROUP_RESULT_NULL_ARGUMENT);
    }
    // SAFETY: `out` holds `capacity >= items.len()` writable `T`s per the contract; Rust owns `items`.
    unsafe { std::ptr::copy_nonoverlapping(items.as_ptr(), out, items.len()) };
    Ok(())
}

/// Writes the groups user `uid` is in, in join order (Diarkis's GetGroupIDList), into `groups_out`: an
/// array of `capacity` IDs of 52 bytes each (`capacity * 52` bytes). `*count` receives the number of
/// groups. `GROUP_RESULT_NOT_FOUND` when the user has no session on this node. **Blocking.**
///
/// # Safety
/// `server` live and started; `uid` `uid_len` readable bytes; `groups_out` `capacity * 52` writable bytes
/// (NULL allowed when `capacity` is 0); `count` writable. Any thread but the server's worker threads.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn group_server_group_ids(
    server: *const group_server,
    uid: *const u8,
    uid_len: usize,
    groups_out: *mut u8,
    capacity: usize,
    count: *mut usize,
) -> group_result {
    guard(|| {
        // SAFETY: forwarded from this function's contract.
        let uid = unsafe { text(uid, uid_len) }?.to_string();
        let (handle, runtime) = running(server)?;
        let ids = finish(runtime, handle.group_ids(uid), std::ptr::null_mut())?
            .ok_or(group_result::GROUP_RESULT_NOT_FOUND)?;
        let raw: Vec<[u8; GROUP_ID_LEN]> = ids.iter().map(|id| *id.as_bytes()).collect();
        // SAFETY: forwarded from this function's contract: `capacity` IDs of 52 bytes at `groups_out`.
        unsafe { write_list(&raw, groups_out.cast(), capacity, count) }
    })
}

/// Writes the mesh addresses of the nodes holding members of `group` (Diarkis's GetMemberMeshNodes) into
/// `nodes_out` (`capacity` entries), their number into `*count`. `GROUP_RESULT_NOT_FOUND` when this node
/// knows no such group. **Blocking.**
///
/// # Safety
/// `server` live and started; `group` 52 readable bytes; `nodes_out` `capacity` writable entries (NULL
/// allowed when `capacity` is 0); `count` writable. Any thread but the server's worker threads.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn group_server_member_nodes(
    server: *const group_server,
    group: *const u8,
    nodes_out: *mut group_node_addr,
    capacity: usize,
    count: *mut usize,
) -> group_result {
    guard(|| {
        // SAFETY: forwarded from this function's contract.
        let group: GroupId = unsafe { group_in(group) }?;
        let (handle, runtime) = running(server)?;
        let nodes = finish(
            runtime,
            handle.member_mesh_nodes(group),
            std::ptr::null_mut(),
        )?
        .ok_or(group_result::GROUP_RESULT_NOT_FOUND)?;
        let nodes: Vec<group_node_addr> = nodes.into_iter().map(Into::into).collect();
        // SAFETY: forwarded from this function's contract.
        unsafe { write_list(&nodes, nodes_out, capacity, count) }
    })
}

/// Writes a snapshot of `group` to `*out` and its members, ordered by uid, into `members_out` (`capacity`
/// entries); `*count` receives the number of members. A capacity too small writes only `*count` and
/// returns `GROUP_RESULT_BUFFER_TOO_SMALL`. `GROUP_RESULT_NOT_FOUND` when this node knows no such group.
/// **Blocking.**
///
/// # Safety
/// `server` live and started; `group` 52 readable bytes; `out` writable; `members_out` `capacity` writable
/// entries (NULL allowed when `capacity` is 0); `count` writable. Any thread but the server's worker
/// threads.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn group_server_snapshot(
    server: *const group_server,
    group: *const u8,
    out: *mut group_snapshot,
    members_out: *mut group_member,
    capacity: usize,
    count: *mut usize,
) -> group_result {
    guard(|| {
        // SAFETY: forwarded from this function's contract.
        let group: GroupId = unsafe { group_in(group) }?;
        if out.is_null() {
            return Err(group_result::GROUP_RESULT_NULL_ARGUMENT);
        }
        let (handle, runtime) = running(server)?;
        let snapshot = finish(runtime, handle.snapshot(group), std::ptr::null_mut())?
            .ok_or(group_result::GROUP_RESULT_NOT_FOUND)?;
        let members: Vec<group_member> = snapshot
            .members
            .iter()
            .map(|(uid, sid)| {
                // Uids are at most 64 bytes (the protocol refuses longer ones at Hello).
                let mut raw = [0u8; GROUP_MAX_UID_LEN];
                let mut len = 0;
                for (to, from) in raw.iter_mut().zip(uid.as_bytes()) {
                    *to = *from;
                    len += 1;
                }
                let node = snapshot.member_node.get(uid).copied().map_or(
                    group_node_addr {
                        ip: [0; 4],
                        port: 0,
                    },
                    group_node_addr::from,
                );
                group_member {
                    uid: raw,
                    uid_len: len,
                    sid: sid.0,
                    node,
                }
            })
            .collect();
        // SAFETY: forwarded from this function's contract.
        unsafe { write_list(&members, members_out, capacity, count) }?;
        let millis = |d: std::time::Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let owner = snapshot.owner.map(group_node_addr::from);
        let view = group_snapshot {
            allow_empty: u8::from(snapshot.allow_empty),
            is_static: u8::from(snapshot.is_static),
            has_owner: u8::from(owner.is_some()),
            owner: owner.unwrap_or(group_node_addr {
                ip: [0; 4],
                port: 0,
            }),
            ttl_ms: millis(snapshot.ttl),
            interval_ms: millis(snapshot.interval),
            member_count: members.len(),
            member_node_count: snapshot.member_nodes.len(),
            epoch: snapshot.version.epoch,
            seq: snapshot.version.seq,
        };
        // SAFETY: non-null and, per the contract, writable.
        unsafe { out.write(view) };
        Ok(())
    })
}
