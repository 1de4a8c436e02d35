#![allow(clippy::cast_possible_truncation)]

//! Two KCP endpoints over a simulated link: seeded loss, duplication and reordering, virtual time.

use super::segment::SegmentError;
use super::*;

use crate::rng::SplitMix64 as Rng;

/// A datagram in flight: (arrival time ms, destination 0 or 1, bytes).
type InFlight = Vec<(u32, usize, Bytes)>;

/// Sends `messages` from endpoint 0 to endpoint 1 (and echoes them back) over a link that loses `loss`%,
/// duplicates 5% and delays 10..60 ms (so it reorders). Returns what each side received, and the time taken.
fn exchange(seed: u64, loss: u64, messages: &[Vec<u8>]) -> (Vec<Bytes>, Vec<Bytes>, u32) {
    let mut rng = Rng::new(seed);
    let mut ends = [
        Kcp::new(42, KcpConfig::default()),
        Kcp::new(42, KcpConfig::default()),
    ];
    for m in messages {
        ends[0].send(m).unwrap();
        ends[1].send(m).unwrap();
    }
    let mut in_flight: InFlight = Vec::new();
    let mut received: [Vec<Bytes>; 2] = [vec![], vec![]];
    let mut now = 0u32;
    while received[0].len() < messages.len() || received[1].len() < messages.len() {
        assert!(
            now < 120_000,
            "seed {seed} loss {loss}%: stalled at {:?}",
            received.each_ref().map(Vec::len)
        );
        for (side, end) in ends.iter_mut().enumerate() {
            end.update(now);
            while let Some(datagram) = end.poll_transmit() {
                assert!(datagram.len() <= end.config.mtu);
                let copies = if rng.chance(5) { 2 } else { 1 };
                for _ in 0..copies {
                    if !rng.chance(loss) {
                        in_flight.push((
                            now + 10 + (rng.next_u64() % 50) as u32,
                            1 - side,
                            datagram.clone(),
                        ));
                    }
                }
            }
        }
        now += 1;
        let (due, later): (InFlight, InFlight) =
            in_flight.into_iter().partition(|(at, _, _)| *at <= now);
        in_flight = later;
        for (_, to, datagram) in due {
            ends[to].input(now, &datagram).unwrap();
            while let Some(message) = ends[to].recv() {
                received[to].push(message);
            }
        }
    }
    let [a, b] = received;
    (a, b, now)
}

fn messages(seed: u64, count: usize) -> Vec<Vec<u8>> {
    let mut rng = Rng::new(seed);
    (0..count)
        .map(|i| {
            let len = match i % 4 {
                0 => 0,
                1 => (rng.next_u64() % 100) as usize,
                2 => 1171 + (rng.next_u64() % 3) as usize, // around one segment
                _ => (rng.next_u64() % 40_000) as usize,   // many fragments
            };
            (0..len).map(|j| (i + j) as u8).collect()
        })
        .collect()
}

#[test]
fn messages_arrive_whole_in_order_exactly_once_under_loss() {
    for loss in [0, 10, 30] {
        for seed in 0..4 {
            let sent = messages(seed, 40);
            let (at_0, at_1, _) = exchange(seed, loss, &sent);
            for received in [at_0, at_1] {
                let received: Vec<Vec<u8>> = received.iter().map(|b| b.to_vec()).collect();
                assert_eq!(received, sent, "seed {seed}, loss {loss}%");
            }
        }
    }
}

#[test]
fn the_same_seed_takes_the_same_course() {
    let sent = messages(9, 20);
    assert_eq!(exchange(9, 10, &sent).2, exchange(9, 10, &sent).2);
}

#[test]
fn bounds_hold() {
    let mut kcp = Kcp::new(
        1,
        KcpConfig {
            rcv_wnd: 16,
            max_send_queue: 4,
            ..KcpConfig::default()
        },
    );
    assert!(matches!(
        kcp.send(&vec![0; 1171 * 20]),
        Err(KcpError::MessageTooLarge { .. })
    ));
    for _ in 0..4 {
        kcp.send(b"x").unwrap();
    }
    assert_eq!(kcp.send(b"x"), Err(KcpError::SendQueueFull(4)));
    // A peer flooding far-ahead sequence numbers cannot grow the receive buffer past the window.
    let mut flood = Vec::new();
    for sn in 0..1000u32 {
        let h = Header {
            conv: 1,
            cmd: CMD_PUSH,
            frg: 0,
            wnd: 16,
            ts: 0,
            sn: sn * 7 + 1,
            una: 0,
            len: 1,
        };
        h.encode(&mut flood);
        flood.push(0);
        if flood.len() > 1000 {
            let _ = kcp.input(0, &flood);
            flood.clear();
        }
    }
    assert!(kcp.rcv_buf.len() <= 16 && kcp.acks.len() <= 32);
    assert_eq!(
        kcp.input(0, &[1, 2, 3]),
        Err(KcpError::Segment(SegmentError::TooShort))
    );
}

/// The time a silent peer takes to be declared dead, and the transmissions sent to it meanwhile.
fn until_dead(config: KcpConfig) -> (u32, usize) {
    let mut kcp = Kcp::new(1, config);
    kcp.send(b"hello?").unwrap();
    let (mut now, mut sent) = (0, 0);
    while !kcp.is_dead() {
        assert!(now < 600_000, "never declared dead");
        kcp.update(now);
        sent += std::iter::from_fn(|| kcp.poll_transmit()).count();
        now += 10;
    }
    (now, sent)
}

#[test]
fn a_silent_peer_is_declared_dead() {
    let (_, sent) = until_dead(KcpConfig::default());
    assert_eq!(sent, 20, "dead_link transmissions");
}

/// With `dead_after_ms`, a peer that stops acknowledging (an application stalled) is not declared dead
/// before that time, however many transmissions went unanswered, and is declared dead soon after.
#[test]
fn a_silent_peer_is_declared_dead_no_sooner_than_dead_after() {
    let (count_alone, _) = until_dead(KcpConfig::default());
    let config = KcpConfig {
        dead_after_ms: count_alone * 3,
        ..KcpConfig::default()
    };
    let (after, sent) = until_dead(config);
    assert!(after >= count_alone * 3, "{after} ms");
    assert!(after <= count_alone * 3 + 2_000, "{after} ms");
    assert!(sent > 20, "{sent} transmissions");
}

#[test]
fn time_and_sequence_numbers_wrap_without_panicking() {
    let mut ends = [
        Kcp::new(5, KcpConfig::default()),
        Kcp::new(5, KcpConfig::default()),
    ];
    for end in &mut ends {
        end.snd_nxt = u32::MAX - 3;
        end.snd_una = u32::MAX - 3;
        end.rcv_nxt = u32::MAX - 3;
    }
    let mut now = u32::MAX - 50;
    let mut got = 0;
    for i in 0..20u8 {
        ends[0].send(&[i]).unwrap();
    }
    for _ in 0..400 {
        for side in 0..2 {
            ends[side].update(now);
            while let Some(d) = ends[side].poll_transmit() {
                ends[1 - side].input(now, &d).unwrap();
            }
        }
        while let Some(m) = ends[1].recv() {
            assert_eq!(m[0], got);
            got += 1;
        }
        now = now.wrapping_add(5);
    }
    assert_eq!(got, 20);
}

#[test]
fn a_quiet_endpoint_needs_no_timer_until_there_is_something_to_do() {
    let mut ends = [
        Kcp::new(3, KcpConfig::default()),
        Kcp::new(3, KcpConfig::default()),
    ];
    assert!(!ends[0].needs_timer());
    ends[0].send(b"ping").unwrap();
    assert!(ends[0].needs_timer(), "queued data needs flushing");
    let mut now = 0;
    for _ in 0..50 {
        for side in 0..2 {
            ends[side].update(now);
            while let Some(d) = ends[side].poll_transmit() {
                ends[1 - side].input(now, &d).unwrap();
            }
        }
        now += 10;
    }
    assert_eq!(ends[1].recv().as_deref(), Some(&b"ping"[..]));
    assert!(
        !ends[0].needs_timer() && !ends[1].needs_timer(),
        "all acknowledged: both quiet"
    );
}

/// Drives a sender the way the server drives a quiet session: updated while it has something in
/// flight, then left alone (no timer) once everything is acknowledged. After the pause, a message is
/// sent and flushed (at the time of the flush, or at the last update's), then the timer's next update comes. Returns the datagrams that
/// update sent.
fn resent_after_a_pause(fresh_clock: bool) -> usize {
    let (mut sender, mut receiver) = (
        Kcp::new(7, KcpConfig::default()),
        Kcp::new(7, KcpConfig::default()),
    );
    let mut now = 0;
    sender.send(b"first").unwrap();
    while now < 100 {
        sender.update(now);
        receiver.update(now);
        while let Some(d) = sender.poll_transmit() {
            receiver.input(now, &d).unwrap();
        }
        while let Some(d) = receiver.poll_transmit() {
            sender.input(now, &d).unwrap();
        }
        now += 10;
    }
    assert!(!sender.needs_timer(), "everything acknowledged");
    let last_update = now - 10;
    let later = now + 5_000;
    sender.send(b"after the pause").unwrap();
    // The old server flushed with the clock of the last update.
    sender.flush(if fresh_clock { later } else { last_update });
    assert!(sender.poll_transmit().is_some_and(|d| !d.is_empty()));
    // The timer, set from `check`, fires a millisecond later: the answer has not come back yet.
    let wake = sender.check(later).max(later + 1);
    sender.update(wake);
    std::iter::from_fn(|| sender.poll_transmit()).count()
}

/// A segment flushed after a pause is timed from the time of the flush: the timer's next update does
/// not send it again. Flushed on the clock of the last update, it looked overdue and went out twice.
#[test]
fn a_segment_sent_after_a_pause_is_not_resent_at_once() {
    assert_eq!(resent_after_a_pause(true), 0);
    assert_eq!(resent_after_a_pause(false), 1, "the stale clock's resend");
}

/// Two ends on a lossless 10 ms link that goes down from `down` to `up` (ms); the sender sends
/// `count` segment-sized messages at time 0 and both run every 10 ms until `until`. Returns the
/// datagrams the sender sent while the link was down, when the first datagram crossed after it came
/// back, and when the receiver had every message.
fn through_an_outage(
    count: usize,
    down: u32,
    up: u32,
    until: u32,
) -> (usize, Option<u32>, Option<u32>) {
    let (mut sender, mut receiver) = (
        Kcp::new(3, KcpConfig::default()),
        Kcp::new(3, KcpConfig::default()),
    );
    let mss = sender.mss();
    for i in 0..count {
        sender.send(&vec![i as u8; mss]).unwrap();
    }
    let (mut sent_while_down, mut received) = (0, 0);
    let (mut back, mut complete) = (None, None);
    let mut in_flight: InFlight = Vec::new();
    for now in (0..until).step_by(10) {
        let link_down = (down..up).contains(&now);
        for (side, end) in [&mut sender, &mut receiver].into_iter().enumerate() {
            end.update(now);
            while let Some(datagram) = end.poll_transmit() {
                if side == 0 && link_down {
                    sent_while_down += 1;
                }
                if !link_down {
                    in_flight.push((now + 10, 1 - side, datagram));
                }
            }
        }
        let (due, later): (InFlight, InFlight) = in_flight
            .into_iter()
            .partition(|(at, _, _)| *at <= now + 10);
        in_flight = later;
        for (_, to, datagram) in due {
            if now >= up && back.is_none() {
                back = Some(now + 10);
            }
            let end = if to == 0 { &mut sender } else { &mut receiver };
            end.input(now + 10, &datagram).unwrap();
        }
        while receiver.recv().is_some() {
            received += 1;
        }
        if received == count && complete.is_none() {
            complete = Some(now);
        }
    }
    (sent_while_down, back, complete)
}

/// A peer that stops answering (an app stalled, a network outage) gets the oldest unacknowledged
/// segment as a probe at each timeout, not the whole window each time; once it answers, what it is
/// missing is sent at once, not at each segment's next timeout.
#[test]
fn a_silent_peer_is_probed_with_one_segment_and_caught_up_when_it_answers() {
    // 100 segments in flight, every one lost: the link goes down before the first arrives.
    let (sent, back, complete) = through_an_outage(100, 0, 5_000, 8_000);
    // The window twice (the first send and its first timeout), then one probe per timeout.
    assert!(
        sent <= 2 * 100 + 20,
        "{sent} datagrams to a silent peer in 5 s"
    );
    let (back, complete) = (back.unwrap(), complete.unwrap());
    // The probe arrives, its acknowledgement comes back, everything else follows: a few link delays.
    assert!(
        complete <= back + 50,
        "the probe crossed at {back} ms, complete at {complete} ms"
    );
}
