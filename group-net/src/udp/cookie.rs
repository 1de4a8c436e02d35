//! Session cookies that prove a client's address without the server keeping state.
//!
//! The cookie the server puts in its stateless hello (see `group_core::kcp::handshake`) is the first 32
//! bits of an HMAC-SHA256, under a key drawn from the OS random source at startup, of the client's address
//! and the current time window. A datagram from an unknown address that carries the right cookie proves
//! the sender received the hello, so its address is real; only then does a session, and a connection
//! slot, exist. Without the key, nobody can compute a cookie for an address whose datagrams they do not
//! receive; seeing one's own cookies reveals nothing about the key. The cookie then stays the session's
//! for its whole life, so a spoofed datagram still needs it to touch the session.

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
    start: Instant,
}

impl CookieMinter {
    /// A minter with a fresh key from the OS random source; `None` if that source fails (better no UDP
    /// sessions than guessable cookies).
    pub(crate) fn new() -> Option<CookieMinter> {
        let mut key = [0u8; 32];
        getrandom::fill(&mut key).ok()?;
        let keyed = Hmac::<Sha256>::new_from_slice(&key).ok()?;
        Some(CookieMinter {
            keyed,
            start: Instant::now(),
        })
    }

    /// The cookie for `peer` now.
    pub(crate) fn mint(&self, peer: SocketAddr) -> u32 {
        self.mac(peer, self.window())
    }

    /// True if `cookie` is the one minted for `peer` in this window or the one before.
    pub(crate) fn check(&self, peer: SocketAddr, cookie: u32) -> bool {
        let window = self.window();
        cookie == self.mac(peer, window)
            || window
                .checked_sub(1)
                .is_some_and(|before| cookie == self.mac(peer, before))
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
