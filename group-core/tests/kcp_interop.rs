//! Wire interop with the C reference implementation (ikcp.c, built by the `kcp-rs` crate): our KCP and
//! ikcp exchange messages in both directions at once over a simulated link with 0%, 10% and 30% loss,
//! duplication and reordering, on virtual time.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::cast_possible_truncation
)]

use bytes::Bytes;
use group_core::kcp::{Kcp, KcpConfig};
use group_core::rng::SplitMix64 as Rng;

const CONV: u32 = 0x1234_5678;

/// ikcp configured as kcp2k and our default are: nodelay, 10 ms interval, fast resend 2, no congestion
/// window, 256-segment windows, MTU 1195. Boxed: the wrapper stores a pointer to itself.
fn reference() -> Box<kcp::Kcp> {
    let mut c = Box::new(kcp::Kcp::new(CONV));
    c.initialize();
    c.set_nodelay(true, 10, 2, true);
    c.set_wndsize(256, 256);
    c.set_mtu(1195).unwrap();
    c
}

fn messages(seed: u64) -> Vec<Vec<u8>> {
    let mut rng = Rng::new(seed);
    // Non-empty: the wrapper treats an empty message as "nothing received".
    (0..30)
        .map(|i| {
            let len = 1 + (rng.next_u64() % if i % 3 == 0 { 30_000 } else { 200 }) as usize;
            (0..len).map(|j| (i * 7 + j) as u8).collect()
        })
        .collect()
}

fn interop(seed: u64, loss: u64) {
    let mut rng = Rng::new(seed ^ loss);
    let ours_out = messages(seed);
    let theirs_out = messages(seed + 100);
    let mut ours = Kcp::new(CONV, KcpConfig::default());
    let mut theirs = reference();
    for m in &ours_out {
        ours.send(m).unwrap();
    }
    for m in &theirs_out {
        theirs.send(m).unwrap(); // ikcp_send returns 0 on success, not a length
    }
    // (arrival ms, to ours?, datagram)
    let mut link: Vec<(u32, bool, Bytes)> = Vec::new();
    let (mut at_ours, mut at_theirs) = (Vec::new(), Vec::new());
    let mut now = 0u32;
    while at_ours.len() < theirs_out.len() || at_theirs.len() < ours_out.len() {
        assert!(
            now < 300_000,
            "seed {seed}, loss {loss}%: stalled ({}, {})",
            at_ours.len(),
            at_theirs.len()
        );
        ours.update(now);
        theirs.update(now);
        let mut send = |to_ours: bool, datagram: Bytes, rng: &mut Rng| {
            if rng.next_u64() % 100 >= loss {
                link.push((
                    now + 5 + (rng.next_u64() % 40) as u32,
                    to_ours,
                    datagram.clone(),
                ));
                if rng.next_u64() % 100 < 5 {
                    link.push((now + 20, to_ours, datagram));
                }
            }
        };
        while let Some(d) = ours.poll_transmit() {
            send(false, d, &mut rng);
        }
        while let Some(d) = theirs.pop_output() {
            send(true, d.freeze(), &mut rng);
        }
        now += 1;
        let (due, later): (Vec<_>, Vec<_>) = link.into_iter().partition(|(at, _, _)| *at <= now);
        link = later;
        for (_, to_ours, datagram) in due {
            if to_ours {
                ours.input(now, &datagram).expect("ikcp's datagrams parse");
                while let Some(m) = ours.recv() {
                    at_ours.push(m.to_vec());
                }
            } else {
                theirs
                    .input(&datagram)
                    .expect("our datagrams parse in ikcp");
                while let Some(m) = theirs.recv_bytes() {
                    at_theirs.push(m.to_vec());
                }
            }
        }
    }
    assert_eq!(
        at_theirs, ours_out,
        "ours -> ikcp, seed {seed}, loss {loss}%"
    );
    assert_eq!(
        at_ours, theirs_out,
        "ikcp -> ours, seed {seed}, loss {loss}%"
    );
}

#[test]
fn interop_with_ikcp_without_loss() {
    interop(1, 0);
}

#[test]
fn interop_with_ikcp_at_10_percent_loss() {
    for seed in 0..3 {
        interop(seed, 10);
    }
}

#[test]
fn interop_with_ikcp_at_30_percent_loss() {
    for seed in 0..3 {
        interop(seed, 30);
    }
}
