//! A 113 push read in place: its group ID and its entries as borrowed slices, with nothing allocated.
//!
//! Why beside [`super::parse_broadcast_push`]: that one hands out owned entries (a `String` per uid, a
//! vector per push), which is what most callers want. A receiver that only looks at the messages (a
//! load generator taking a million deliveries a second on one core) spent an eighth of its time there.
//! Both accept and refuse exactly the same payloads; the fuzz target `server_frames` checks that.

use super::push::PushError;
use crate::id::GROUP_ID_LEN;

/// One entry of a 113 push, borrowed from the payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BroadcastEntryRef<'a> {
    /// The sender; empty for an announce.
    pub uid: &'a str,
    /// The message.
    pub message: &'a [u8],
}

/// A 113 push payload whose group ID was checked; iterate it for its entries.
#[derive(Debug, Clone)]
pub struct BroadcastView<'a> {
    group: &'a [u8],
    rest: &'a [u8],
}

impl<'a> BroadcastView<'a> {
    /// Checks the group ID at the front of `payload` (52 printable ASCII bytes). The entries are checked
    /// as they are read: an entry that is cut short or whose uid is not UTF-8 is an error, and ends the
    /// iteration.
    pub fn parse(payload: &'a [u8]) -> Result<Self, PushError> {
        let (group, rest) = payload
            .split_at_checked(GROUP_ID_LEN)
            .ok_or(PushError::Truncated)?;
        if !group.iter().all(u8::is_ascii_graphic) {
            return Err(PushError::BadGroupId);
        }
        Ok(BroadcastView { group, rest })
    }

    /// The group ID's bytes, as sent (printable ASCII).
    pub fn group(&self) -> &'a [u8] {
        self.group
    }
}

impl<'a> Iterator for BroadcastView<'a> {
    type Item = Result<BroadcastEntryRef<'a>, PushError>;

    fn next(&mut self) -> Option<Self::Item> {
        let (&uid_len, rest) = self.rest.split_first()?;
        let entry = take_entry(usize::from(uid_len), rest);
        // After an error nothing more is read: the rest of the payload has no known layout.
        self.rest = match &entry {
            Ok((_, after)) => after,
            Err(_) => &[],
        };
        Some(entry.map(|(entry, _)| entry))
    }
}

/// `uid | message_len (u32) | message` from the front of `rest`, and what follows it.
fn take_entry(uid_len: usize, rest: &[u8]) -> Result<(BroadcastEntryRef<'_>, &[u8]), PushError> {
    let (uid, rest) = rest.split_at_checked(uid_len).ok_or(PushError::Truncated)?;
    let uid = std::str::from_utf8(uid).map_err(|_| PushError::NotUtf8)?;
    let (len, rest) = rest.split_first_chunk::<4>().ok_or(PushError::Truncated)?;
    let len = usize::try_from(u32::from_be_bytes(*len)).map_err(|_| PushError::Truncated)?;
    let (message, rest) = rest.split_at_checked(len).ok_or(PushError::Truncated)?;
    Ok((BroadcastEntryRef { uid, message }, rest))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use bytes::{Bytes, BytesMut};

    use super::*;
    use crate::id::GroupId;
    use crate::proto::{BroadcastPushBuilder, decode_server_frame, parse_broadcast_push};

    const GID: &[u8; 52] = b"AA11111222223333344444555556666677777888889999900000";

    fn payload(entries: &[(&str, &[u8])]) -> Bytes {
        let group = GroupId::from_bytes(GID).unwrap();
        let mut builder = BroadcastPushBuilder::new(1, 113, &group, 64);
        for (uid, message) in entries {
            builder.push_entry(uid, message);
        }
        let mut frame = BytesMut::from(&builder.finish()[..]);
        decode_server_frame(&mut frame, 1 << 16)
            .unwrap()
            .unwrap()
            .payload
    }

    fn owned(view: BroadcastView<'_>) -> Result<Vec<(String, Vec<u8>)>, PushError> {
        view.map(|e| e.map(|e| (e.uid.to_string(), e.message.to_vec())))
            .collect()
    }

    fn parsed(payload: &Bytes) -> Result<Vec<(String, Vec<u8>)>, PushError> {
        let (_, entries) = parse_broadcast_push(payload)?;
        Ok(entries
            .into_iter()
            .map(|e| (e.uid, e.message.to_vec()))
            .collect())
    }

    #[test]
    fn entries_read_in_place_are_the_parsed_ones() {
        let payload = payload(&[("alice", b"hi"), ("", b"announce"), ("bob", b"")]);
        let view = BroadcastView::parse(&payload).unwrap();
        assert_eq!(view.group(), GID);
        let entries = owned(view).unwrap();
        assert_eq!(entries.len(), 3);
        assert_eq!(Ok(entries), parsed(&payload));
    }

    #[test]
    fn every_cut_is_refused_as_the_owned_parser_refuses_it() {
        let payload = payload(&[("alice", b"hi"), ("bob", b"there")]);
        for cut in 0..payload.len() {
            let short = payload.slice(..cut);
            let read = BroadcastView::parse(&short).and_then(owned);
            assert_eq!(read, parsed(&short), "cut at {cut}");
        }
    }

    #[test]
    fn a_bad_group_id_or_uid_is_refused() {
        let mut bad_group = payload(&[("alice", b"hi")]).to_vec();
        bad_group[3] = b' ';
        assert_eq!(
            BroadcastView::parse(&bad_group).err(),
            Some(PushError::BadGroupId)
        );
        let mut bad_uid = payload(&[("alice", b"hi"), ("bob", b"x")]).to_vec();
        let at = bad_uid.len() - 5 - 3; // inside "bob"
        bad_uid[at] = 0xff;
        let mut view = BroadcastView::parse(&bad_uid).unwrap();
        assert!(view.next().unwrap().is_ok());
        assert_eq!(view.next(), Some(Err(PushError::NotUtf8)));
        assert_eq!(view.next(), None, "nothing is read after an error");
    }
}
