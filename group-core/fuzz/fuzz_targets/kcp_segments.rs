//! Arbitrary datagrams into a KCP endpoint that also has data of its own in flight: no panic, no
//! unbounded growth, and every datagram it sends parses as KCP again. The whole input, read as an
//! envelope, also goes through the server's opening-datagram and session-opening checks.
#![no_main]

use group_core::kcp::envelope::Envelope;
use group_core::kcp::handshake::{can_open_session, is_opening};
use group_core::kcp::segment::split;
use group_core::kcp::{Kcp, KcpConfig};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(envelope) = Envelope::parse(data) {
        let _ = is_opening(&envelope);
        let _ = can_open_session(&envelope);
    }
    let conv = data.first_chunk::<4>().map_or(0, |c| u32::from_le_bytes(*c));
    let mut kcp = Kcp::new(conv, KcpConfig { rcv_wnd: 32, snd_wnd: 32, ..KcpConfig::default() });
    let _ = kcp.send(&[7u8; 3000]);
    // Treat the input as a sequence of datagrams separated by a length byte, with time moving on.
    let mut rest = data;
    let mut now = 0u32;
    while let Some((&len, tail)) = rest.split_first() {
        let take = usize::from(len).min(tail.len());
        let (datagram, after) = tail.split_at(take);
        let _ = kcp.input(now, datagram);
        now = now.wrapping_add(u32::from(len) * 7);
        kcp.update(now);
        while let Some(out) = kcp.poll_transmit() {
            assert!(split(&out, conv).1.is_none(), "we emitted a malformed datagram");
        }
        while kcp.recv().is_some() {}
        rest = after;
    }
});
