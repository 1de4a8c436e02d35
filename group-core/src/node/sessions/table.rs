//! [`Sessions`]: the connections the node tracks and the sessions opened on them. It owns one invariant:
//! a connection that said Hello names a uid whose session is on that connection, and a session's
//! connection is tracked. Nothing else changes these maps.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::id::GroupId;
use crate::node::{ConnId, ConnectError, Sid, Uid};
use crate::time::Instant;

#[derive(Debug)]
struct Conn {
    last_activity: Instant,
    /// Matches this connection's idle-timer entries; stale entries for a reused ID are ignored.
    epoch: u64,
    uid: Option<Uid>,
}

/// A user's session on this node.
#[derive(Debug)]
pub(crate) struct Session {
    pub sid: Sid,
    pub conn: ConnId,
    /// Groups in join order: GetGroupIDList.
    pub groups: Vec<GroupId>,
    /// The group this user joined or created most recently (Diarkis's GetLatestGroupID counts both; a
    /// group created without joining is not in `groups`). May name a group that is gone: the query checks.
    pub latest: Option<GroupId>,
}

/// Connections and sessions.
#[derive(Debug, Default)]
pub(crate) struct Sessions {
    conns: BTreeMap<ConnId, Conn>,
    by_uid: BTreeMap<Uid, Session>,
    next_epoch: u64,
}

impl Sessions {
    /// Tracks a new connection, idle since `now`; returns the epoch its idle timer must carry.
    pub fn connect(&mut self, conn: ConnId, now: Instant, max: usize) -> Result<u64, ConnectError> {
        if self.conns.contains_key(&conn) {
            return Err(ConnectError::DuplicateConnection);
        }
        if self.conns.len() >= max {
            return Err(ConnectError::TooManyConnections { max });
        }
        self.next_epoch += 1;
        let epoch = self.next_epoch;
        let state = Conn {
            last_activity: now,
            epoch,
            uid: None,
        };
        self.conns.insert(conn, state);
        Ok(epoch)
    }

    /// Whether `conn` (at `epoch`) is still open without a session: it never said Hello.
    pub fn is_ungreeted(&self, conn: ConnId, epoch: u64) -> bool {
        self.conns
            .get(&conn)
            .is_some_and(|c| c.epoch == epoch && c.uid.is_none())
    }

    /// Whether the node tracks `conn`.
    pub fn is_open(&self, conn: ConnId) -> bool {
        self.conns.contains_key(&conn)
    }

    /// Records traffic on a connection; false if it is not tracked.
    pub fn touch(&mut self, conn: ConnId, now: Instant) -> bool {
        match self.conns.get_mut(&conn) {
            Some(state) => {
                state.last_activity = now;
                true
            }
            None => false,
        }
    }

    /// The uid that said Hello on `conn`, if any.
    pub fn uid_of(&self, conn: ConnId) -> Option<&Uid> {
        self.conns.get(&conn)?.uid.as_ref()
    }

    /// When `conn` idles out, if it is tracked and `epoch` is its current one.
    pub fn idle_deadline(&self, conn: ConnId, epoch: u64, ttl: Duration) -> Option<Instant> {
        let state = self.conns.get(&conn).filter(|c| c.epoch == epoch)?;
        Some(state.last_activity.saturating_add(ttl))
    }

    /// Opens `uid`'s session on `conn`. The caller ended any older session of `uid` first.
    pub fn open(&mut self, conn: ConnId, uid: Uid, sid: Sid) {
        let Some(state) = self.conns.get_mut(&conn) else {
            debug_assert!(false, "Hello on an untracked connection");
            return;
        };
        debug_assert!(state.uid.is_none(), "one Hello per connection");
        state.uid = Some(uid.clone());
        let session = Session {
            sid,
            conn,
            groups: Vec::new(),
            latest: None,
        };
        let older = self.by_uid.insert(uid, session);
        assert!(older.is_none(), "the older session was ended first");
    }

    /// Stops tracking `conn`; `Some(uid)` inside when a session is on it (still open: end it next).
    pub fn disconnect(&mut self, conn: ConnId) -> Option<Option<Uid>> {
        let state = self.conns.remove(&conn)?;
        debug_assert!(
            state
                .uid
                .as_ref()
                .is_none_or(|u| self.by_uid.get(u).is_none_or(|s| s.conn == conn)),
            "a connection's session points back at it"
        );
        Some(state.uid)
    }

    /// Ends `uid`'s session (its connection is already gone, or going).
    pub fn end(&mut self, uid: &str) -> Option<Session> {
        let session = self.by_uid.remove(uid)?;
        debug_assert!(
            self.conns
                .get(&session.conn)
                .is_none_or(|c| c.uid.as_deref() != Some(uid)),
            "a session ends after its connection"
        );
        Some(session)
    }

    pub fn get(&self, uid: &str) -> Option<&Session> {
        self.by_uid.get(uid)
    }

    /// The uid as shared by the session (one allocation for every group it is in), and the session.
    pub fn get_key_value(&self, uid: &str) -> Option<(&Uid, &Session)> {
        self.by_uid.get_key_value(uid)
    }

    /// Records that `uid` joined `group` (appended to its join order).
    pub fn joined(&mut self, uid: &str, group: GroupId) {
        if let Some(session) = self.by_uid.get_mut(uid) {
            debug_assert!(!session.groups.contains(&group), "no duplicates");
            session.groups.push(group);
            session.latest = Some(group);
        }
    }

    /// Records that `uid` created `group` (whether or not it joined it).
    pub fn created(&mut self, uid: &str, group: GroupId) {
        if let Some(session) = self.by_uid.get_mut(uid) {
            session.latest = Some(group);
        }
    }

    /// Records that `uid` left `group`.
    pub fn left(&mut self, uid: &str, group: &GroupId) {
        if let Some(session) = self.by_uid.get_mut(uid) {
            session.groups.retain(|g| g != group);
            if session.latest.as_ref() == Some(group) {
                session.latest = session.groups.last().copied();
            }
        }
    }

    pub fn contains(&self, uid: &str) -> bool {
        self.by_uid.contains_key(uid)
    }

    /// Every session, in uid order.
    pub fn iter(&self) -> impl Iterator<Item = (&Uid, &Session)> {
        self.by_uid.iter()
    }

    pub fn conn_count(&self) -> usize {
        self.conns.len()
    }

    pub fn session_count(&self) -> usize {
        self.by_uid.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_lives_on_its_connection_and_ends_after_it() {
        let mut sessions = Sessions::default();
        let (a, b) = (ConnId(1), ConnId(2));
        let epoch = sessions.connect(a, Instant::ZERO, 2).unwrap();
        assert_eq!(
            sessions.connect(a, Instant::ZERO, 2),
            Err(ConnectError::DuplicateConnection)
        );
        sessions.connect(b, Instant::ZERO, 2).unwrap();
        assert_eq!(
            sessions.connect(ConnId(3), Instant::ZERO, 2),
            Err(ConnectError::TooManyConnections { max: 2 })
        );
        sessions.open(a, "alice".into(), Sid([1; 16]));
        assert_eq!(sessions.uid_of(a).map(|u| &**u), Some("alice"));
        assert!(sessions.touch(a, Instant::from_millis(5)));
        let ttl = Duration::from_secs(1);
        assert_eq!(
            sessions.idle_deadline(a, epoch, ttl),
            Some(Instant::from_millis(1005))
        );
        assert_eq!(
            sessions.idle_deadline(a, epoch + 1, ttl),
            None,
            "a stale epoch"
        );
        assert_eq!(sessions.disconnect(a), Some(Some("alice".into())));
        assert!(
            sessions.contains("alice"),
            "the caller ends the session next"
        );
        assert_eq!(sessions.end("alice").map(|s| s.conn), Some(a));
        assert_eq!(sessions.disconnect(b), Some(None));
        assert_eq!((sessions.conn_count(), sessions.session_count()), (0, 0));
    }

    #[test]
    fn connection_epochs_are_never_reused() {
        let mut sessions = Sessions::default();
        let first = sessions.connect(ConnId(1), Instant::ZERO, 4).unwrap();
        let _ = sessions.disconnect(ConnId(1));
        let second = sessions.connect(ConnId(1), Instant::ZERO, 4).unwrap();
        assert_ne!(first, second, "a reused ID's old idle timer must not match");
    }
}
