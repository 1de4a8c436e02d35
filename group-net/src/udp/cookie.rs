//! Session cookies that prove a client's address without the server keeping state.
//!
//! The cookie the server puts in its stateless hello (see `group_core::kcp::handshake`) is the first 32
//! bits of an HMAC-SHA256, under a key drawn from the OS random source at startup, of the client's address
//! and the current time window. A datagram from an unknown address that carries the right cookie proves
//! the sender received the hello, so its address is real; only then does a session, and a connection
//! slot, exist. Without the key, nobody can compute a cookie for an address whose datagrams they do not
//! receive; seeing one's own cookies reveals nothing about the key. The cookie then stays the session's
//! for its whole life, so a spoofed datagram still needs it to touch the session.
//!
//! Each address and window has a second cookie, for a client that opens again from the address of a live
//! session (an app restarted behind the same NAT mapping): its hello must carry a cookie other than the
//! session's, or its echo would be taken for the old session's traffic. The second is the first XOR a
//! secret drawn with the key; knowing one's own pair reveals that secret, which does not help compute
//! another address's first cookie.

use std::net::SocketAddr;
use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::time::Instant;

/// How long a window lasts. A cookie is accepted in its own window and the next, so a client has at
/// least this long to answer the hello (a round trip, normally).
const WINDOW: Duration = Duration::from_secs(10);

pub(crate) struct CookieMinter {
    /// HMAC-SHA256 already keyed; cloned for each cookie.
    keyed: Hmac<Sha256>,
    /// What turns an address's first cookie into its second; its top bit is set, so the two differ.
    second: u32,
    start: Instant,
}

impl CookieMinter {
    /// A minter with a fresh key from the OS random source; `None` if that source fails (better no UDP
    /// sessions than guessable cookies).
    pub(crate) fn new() -> Option<CookieMinter> {
        let mut key = [0u8; 32];
        getrandom::fill(&mut key).ok()?;
        let keyed = Hmac::<Sha256>::new_from_slice(&key).ok()?;
        let mut second = [0u8; 4];
        getrandom::fill(&mut second).ok()?;
        Some(CookieMinter {
            keyed,
            second: u32::from_be_bytes(second) | 1 << 31,
            start: Instant::now(),
        })
    }

    /// The cookie for `peer` now.
    pub(crate) fn mint(&self, peer: SocketAddr) -> u32 {
        self.mac(peer, self.window())
    }

    /// A cookie for `peer` now that is not `taken` (the cookie of the session `peer` already has).
    pub(crate) fn mint_other_than(&self, peer: SocketAddr, taken: u32) -> u32 {
        let first = self.mint(peer);
        if first == taken {
            self.second_of(first)
        } else {
            first
        }
    }

    /// True if `cookie` is one of those minted for `peer` in this window or the one before.
    pub(crate) fn check(&self, peer: SocketAddr, cookie: u32) -> bool {
        let window = self.window();
        let minted = |window: u64| {
            let first = self.mac(peer, window);
            cookie == first || cookie == self.second_of(first)
        };
        minted(window) || window.checked_sub(1).is_some_and(minted)
    }

    /// An address's second cookie: never 0, never its first (`second`'s top bit differs, or, where
    /// the XOR is 0, the first is `second` and the result 1 is not).
    fn second_of(&self, first: u32) -> u32 {
        (first ^ self.second).max(1)
    }

    /// Milliseconds since the minter started, wrapping: the timestamp of a stateless hello.
    pub(crate) fn now_ms(&self) -> u32 {
        u32::try_from(self.start.elapsed().as_millis() % (1 << 32)).unwrap_or(0)
    }

    fn window(&self) -> u64 {
        self.start.elapsed().as_secs() / WINDOW.as_secs()
    }

    fn mac(&self, peer: SocketAddr, window: u64) -> u32 {
        let mut mac = self.keyed.clone();
        mac.update(&window.to_be_bytes());
        match peer.ip() {
            std::net::IpAddr::V4(ip) => mac.update(&ip.octets()),
            std::net::IpAddr::V6(ip) => mac.update(&ip.octets()),
        }
        mac.update(&peer.port().to_be_bytes());
        let tag = mac.finalize().into_bytes();
        let cookie = tag
            .first_chunk::<4>()
            .map_or(1, |bytes| u32::from_be_bytes(*bytes));
        // 0 is reserved for the client's opening datagrams.
        cookie.max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    #[test]
    fn a_cookie_is_good_for_its_address_only() {
        let minter = CookieMinter::new().expect("the OS random source works here");
        let peer = addr("127.0.0.1:4000");
        let cookie = minter.mint(peer);
        assert_ne!(cookie, 0);
        assert!(minter.check(peer, cookie));
        assert!(!minter.check(addr("127.0.0.1:4001"), cookie));
        assert!(!minter.check(addr("127.0.0.2:4000"), cookie));
        assert!(!minter.check(peer, cookie ^ 1));
    }

    #[test]
    fn the_cookie_other_than_a_sessions_is_also_good_for_its_address_only() {
        let minter = CookieMinter::new().unwrap();
        let peer = addr("127.0.0.1:4000");
        let taken = minter.mint(peer);
        let other = minter.mint_other_than(peer, taken);
        assert_ne!(other, taken);
        assert_ne!(other, 0);
        assert!(minter.check(peer, other));
        assert!(!minter.check(addr("127.0.0.1:4001"), other));
        // A session from an earlier window: the fresh first cookie is already another.
        assert_eq!(minter.mint_other_than(peer, taken ^ 1), taken);
    }

    #[test]
    fn two_minters_have_different_keys() {
        let peer = addr("[::1]:4000");
        let cookies: std::collections::BTreeSet<u32> = (0..50)
            .map(|_| CookieMinter::new().unwrap().mint(peer))
            .collect();
        assert!(cookies.len() > 45, "keys come from the OS random source");
    }

    #[tokio::test(start_paused = true)]
    async fn a_cookie_lasts_one_to_two_windows() {
        let minter = CookieMinter::new().unwrap();
        let peer = addr("127.0.0.1:4000");
        let cookie = minter.mint(peer);
        tokio::time::advance(WINDOW).await;
        assert!(minter.check(peer, cookie), "still good in the next window");
        tokio::time::advance(WINDOW).await;
        assert!(!minter.check(peer, cookie), "stale two windows on");
    }
}
