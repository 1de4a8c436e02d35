//! One error enum per operation, so that server code can tell a refused join from a refused leave or
//! create (Diarkis's IsJoinError / IsLeaveError / IsNewGroupError), and a protocol code for each variant.

use crate::proto::code;

/// Why a group was not created.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CreateError {
    /// ttl must be more than 10 seconds: ask again with a longer ttl.
    #[error("ttl must be more than 10 seconds, got {ttl_s}")]
    TtlTooShort {
        /// The ttl that was asked for.
        ttl_s: u16,
    },
    /// ttl is longer than `group.maxTtl`: ask for a shorter one.
    #[error("ttl must be at most {max_s} seconds, got {ttl_s}")]
    TtlTooLong {
        /// The ttl that was asked for.
        ttl_s: u16,
        /// The configured `group.maxTtl` in seconds.
        max_s: u64,
    },
    /// The creator already created `maxGroupsCreatedPerUser` groups that this node still holds (joined
    /// or not): wait until one expires.
    #[error("user already created the maximum of {max} groups on this node")]
    UserCreateLimit {
        /// The configured `maxGroupsCreatedPerUser`.
        max: usize,
    },
    /// A group that may not be empty must start with its creator in it: set join, or allow_empty.
    #[error("allow_empty=false requires join=true")]
    EmptyWithoutJoin,
    /// This node is draining and creates no groups: create on another node.
    #[error("node is offline and creates no groups")]
    NodeOffline,
    /// The node holds `maxGroups` groups: retry later or on another node.
    #[error("node holds its maximum of {max} groups")]
    TooManyGroups {
        /// The configured `maxGroups`.
        max: usize,
    },
    /// The creator is in `maxGroupsPerUser` groups: leave one first.
    #[error("user is already in the maximum of {max} groups")]
    UserGroupLimit {
        /// The configured `maxGroupsPerUser`.
        max: usize,
    },
    /// The user named to join the new group has no session on this node.
    #[error("no session for uid {uid:?} on this node")]
    UnknownUser {
        /// The uid that was named.
        uid: String,
    },
}

impl CreateError {
    /// The protocol error code.
    pub fn code(&self) -> u16 {
        match self {
            CreateError::TtlTooShort { .. } => code::CREATE_TTL_TOO_SHORT,
            CreateError::EmptyWithoutJoin => code::CREATE_EMPTY_WITHOUT_JOIN,
            CreateError::NodeOffline => code::CREATE_NODE_OFFLINE,
            CreateError::TooManyGroups { .. } => code::CREATE_TOO_MANY_GROUPS,
            CreateError::UserGroupLimit { .. } => code::CREATE_USER_GROUP_LIMIT,
            CreateError::TtlTooLong { .. } => code::CREATE_TTL_TOO_LONG,
            CreateError::UserCreateLimit { .. } => code::CREATE_USER_CREATE_LIMIT,
            CreateError::UnknownUser { .. } => code::UNKNOWN_USER,
        }
    }
}

/// Why a join was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JoinError {
    /// No group with this ID on this node (it may have expired).
    #[error("group not found")]
    GroupNotFound,
    /// The user is already a member; nothing changed.
    #[error("user is already a member")]
    AlreadyMember,
    /// The group has `maxMembersPerGroup` members.
    #[error("group is full ({max} members)")]
    GroupFull {
        /// The configured `maxMembersPerGroup`.
        max: usize,
    },
    /// The user is in `maxGroupsPerUser` groups: leave one first.
    #[error("user is already in the maximum of {max} groups")]
    UserGroupLimit {
        /// The configured `maxGroupsPerUser`.
        max: usize,
    },
    /// The uid has no session on this node.
    #[error("no session for uid {uid:?} on this node")]
    UnknownUser {
        /// The uid that was named.
        uid: String,
    },
    /// No node named in the group ID answered within `meshRequestTimeout`, `remoteJoinTries` times: the
    /// group's nodes are down or unreachable. Retry later.
    #[error("no node of the group answered after {tries} tries")]
    OwnerUnreachable {
        /// Attempts made.
        tries: u32,
    },
    /// The same user is already joining this group; wait for that join's answer.
    #[error("a join of this user to this group is already in progress")]
    InProgress,
}

impl JoinError {
    /// The protocol error code.
    pub fn code(&self) -> u16 {
        match self {
            JoinError::GroupNotFound => code::JOIN_GROUP_NOT_FOUND,
            JoinError::AlreadyMember => code::JOIN_ALREADY_MEMBER,
            JoinError::GroupFull { .. } => code::JOIN_GROUP_FULL,
            JoinError::UserGroupLimit { .. } => code::JOIN_USER_GROUP_LIMIT,
            JoinError::UnknownUser { .. } => code::UNKNOWN_USER,
            JoinError::OwnerUnreachable { .. } => code::JOIN_OWNER_UNREACHABLE,
            JoinError::InProgress => code::JOIN_IN_PROGRESS,
        }
    }
}

/// Why a leave was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LeaveError {
    /// No group with this ID on this node.
    #[error("group not found")]
    GroupNotFound,
    /// The user is not a member; nothing changed.
    #[error("user is not a member")]
    NotMember,
    /// The uid has no session on this node.
    #[error("no session for uid {uid:?} on this node")]
    UnknownUser {
        /// The uid that was named.
        uid: String,
    },
}

impl LeaveError {
    /// The protocol error code.
    pub fn code(&self) -> u16 {
        match self {
            LeaveError::GroupNotFound => code::LEAVE_GROUP_NOT_FOUND,
            LeaveError::NotMember => code::LEAVE_NOT_MEMBER,
            LeaveError::UnknownUser { .. } => code::UNKNOWN_USER,
        }
    }
}

/// Why a broadcast or announce was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BroadcastError {
    /// No group with this ID on this node.
    #[error("group not found")]
    GroupNotFound,
    /// Only members broadcast to a group.
    #[error("sender is not a member")]
    NotMember,
    /// The uid has no session on this node.
    #[error("no session for uid {uid:?} on this node")]
    UnknownUser {
        /// The uid that was named.
        uid: String,
    },
}

impl BroadcastError {
    /// The protocol error code.
    pub fn code(&self) -> u16 {
        match self {
            BroadcastError::GroupNotFound => code::BROADCAST_GROUP_NOT_FOUND,
            BroadcastError::NotMember => code::BROADCAST_NOT_MEMBER,
            BroadcastError::UnknownUser { .. } => code::UNKNOWN_USER,
        }
    }
}

/// Why a random join failed: it either failed to join the group it picked or to create one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RandJoinError {
    /// Creating the new group was refused.
    #[error(transparent)]
    Create(#[from] CreateError),
    /// Joining was refused.
    #[error(transparent)]
    Join(#[from] JoinError),
}

impl RandJoinError {
    /// The protocol error code.
    pub fn code(&self) -> u16 {
        match self {
            RandJoinError::Create(e) => e.code(),
            RandJoinError::Join(e) => e.code(),
        }
    }
}

/// Why a connection was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The node tracks `maxConnections` connections: close this one.
    #[error("node tracks its maximum of {max} connections")]
    TooManyConnections {
        /// The configured `maxConnections`.
        max: usize,
    },
    /// The driver reused a connection ID that is still open: a driver bug.
    #[error("connection ID is already in use")]
    DuplicateConnection,
}

/// Why a tick timer was not set.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TickError {
    /// No group with this ID on this node.
    #[error("group not found")]
    GroupNotFound,
    /// The interval must be at least one second.
    #[error("tick interval must be at least 1 second")]
    ZeroInterval,
}

/// Any refused group operation, for callers that handle them together and then ask which kind it was.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GroupError {
    /// See [`CreateError`].
    #[error("create refused: {0}")]
    Create(#[from] CreateError),
    /// See [`JoinError`].
    #[error("join refused: {0}")]
    Join(#[from] JoinError),
    /// See [`LeaveError`].
    #[error("leave refused: {0}")]
    Leave(#[from] LeaveError),
    /// See [`BroadcastError`].
    #[error("broadcast refused: {0}")]
    Broadcast(#[from] BroadcastError),
}

impl From<RandJoinError> for GroupError {
    fn from(e: RandJoinError) -> Self {
        match e {
            RandJoinError::Create(e) => GroupError::Create(e),
            RandJoinError::Join(e) => GroupError::Join(e),
        }
    }
}

impl GroupError {
    /// Diarkis's IsNewGroupError.
    pub fn is_create_error(&self) -> bool {
        matches!(self, GroupError::Create(_))
    }
    /// Diarkis's IsJoinError.
    pub fn is_join_error(&self) -> bool {
        matches!(self, GroupError::Join(_))
    }
    /// Diarkis's IsLeaveError.
    pub fn is_leave_error(&self) -> bool {
        matches!(self, GroupError::Leave(_))
    }
    /// The protocol error code.
    pub fn code(&self) -> u16 {
        match self {
            GroupError::Create(e) => e.code(),
            GroupError::Join(e) => e.code(),
            GroupError::Leave(e) => e.code(),
            GroupError::Broadcast(e) => e.code(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_fall_in_their_operation_range() {
        let creates = [
            CreateError::TtlTooShort { ttl_s: 1 },
            CreateError::EmptyWithoutJoin,
            CreateError::NodeOffline,
            CreateError::TooManyGroups { max: 1 },
            CreateError::UserGroupLimit { max: 1 },
        ];
        for e in creates {
            assert!(code::is_create_error(e.code()), "{e:?}");
            assert!(GroupError::from(e).is_create_error());
        }
        let joins = [
            JoinError::GroupNotFound,
            JoinError::AlreadyMember,
            JoinError::GroupFull { max: 1 },
            JoinError::UserGroupLimit { max: 1 },
        ];
        for e in joins {
            assert!(code::is_join_error(e.code()), "{e:?}");
            let g = GroupError::from(e);
            assert!(g.is_join_error() && !g.is_leave_error() && !g.is_create_error());
        }
        for e in [LeaveError::GroupNotFound, LeaveError::NotMember] {
            assert!(code::is_leave_error(e.code()), "{e:?}");
            assert!(GroupError::from(e).is_leave_error());
        }
        for e in [BroadcastError::GroupNotFound, BroadcastError::NotMember] {
            assert!(code::is_broadcast_error(e.code()), "{e:?}");
        }
        let rand: GroupError = RandJoinError::Join(JoinError::GroupFull { max: 2 }).into();
        assert!(rand.is_join_error());
    }
}
