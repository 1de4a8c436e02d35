//! Membership datagrams carry a MAC of the cluster secret, so that only nodes that know `mesh.secret` can
//! take part in failure detection: without it, anyone who reached the mesh's UDP port could announce
//! members, or declare real ones suspect or down.
//!
//! A sealed datagram is `tag (16 bytes) | foca's payload`, the tag being the first 16 bytes of
//! HMAC-SHA256(secret, "GRPM swim" | payload). Without a secret (allowed only when the mesh listens on
//! loopback) the key is empty: the tag then only tells membership datagrams from strays. A recorded
//! datagram can be replayed by someone on the path; SWIM's incarnation numbers make an old claim lose to
//! a newer one, and no new claim can be made without the secret.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Bytes of tag in front of each membership datagram.
pub(crate) const TAG_LEN: usize = 16;
const DOMAIN: &[u8] = b"GRPM swim";

pub(crate) struct Seal {
    keyed: Hmac<Sha256>,
}

impl Seal {
    /// A seal under `secret` (empty without one). `None` only if HMAC refused the key, which it never
    /// does: it takes keys of any length.
    pub(crate) fn new(secret: &[u8]) -> Option<Seal> {
        let keyed = Hmac::<Sha256>::new_from_slice(secret).ok()?;
        Some(Seal { keyed })
    }

    fn mac(&self, payload: &[u8]) -> Hmac<Sha256> {
        let mut mac = self.keyed.clone();
        mac.update(DOMAIN);
        mac.update(payload);
        mac
    }

    /// `payload` with its tag in front.
    pub(crate) fn seal(&self, payload: &[u8]) -> Vec<u8> {
        let tag = self.mac(payload).finalize().into_bytes();
        let mut out = Vec::with_capacity(TAG_LEN + payload.len());
        out.extend_from_slice(tag.get(..TAG_LEN).unwrap_or_default());
        out.extend_from_slice(payload);
        out
    }

    /// The payload of a datagram whose tag is right (checked in constant time); `None` otherwise.
    pub(crate) fn open<'a>(&self, datagram: &'a [u8]) -> Option<&'a [u8]> {
        let (tag, payload) = datagram.split_at_checked(TAG_LEN)?;
        self.mac(payload).verify_truncated_left(tag).ok()?;
        Some(payload)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_untouched_datagram_under_the_same_secret_opens() {
        let seal = Seal::new(b"secret-one").unwrap();
        let sealed = seal.seal(b"foca says hello");
        assert_eq!(sealed.len(), TAG_LEN + 15);
        assert_eq!(seal.open(&sealed), Some(&b"foca says hello"[..]));

        let other = Seal::new(b"secret-two").unwrap();
        assert_eq!(other.open(&sealed), None, "another secret");
        let mut tampered = sealed.clone();
        *tampered.last_mut().unwrap() ^= 1;
        assert_eq!(seal.open(&tampered), None, "a changed payload");
        assert_eq!(seal.open(b"foca says hello"), None, "no tag at all");
        assert_eq!(seal.open(&sealed[..TAG_LEN - 1]), None, "too short");
        assert_eq!(
            seal.open(&sealed[..TAG_LEN]),
            None,
            "a tag of something else"
        );
    }
}
