//! KCP, the reliable-UDP protocol the game engines speak (kcp2k in Unity, ikcp.c in C/C++), written from
//! the protocol as sans-IO code: wire-compatible with the C reference, driven by the caller's clock in
//! milliseconds, and safe on any input.
//!
//! Differences from ikcp.c that the wire does not see: all sequence and time arithmetic wraps instead of
//! overflowing, every queue has a bound (a peer cannot grow the ack list or the receive buffer without
//! limit), and a message that could never be reassembled is refused at `send` rather than stalling.
//! Only message mode is implemented (each `send` is one `recv` on the other side), as kcp2k uses.
//!
//! Drive it like ikcp: `input` datagrams, `update(now_ms)` at least every `interval` (or at `check`),
//! drain `poll_transmit`, and `recv` whole messages.

mod config;
pub mod envelope;
pub mod handshake;
pub mod segment;

pub use config::{KcpConfig, KcpError};

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};

use segment::{CMD_ACK, CMD_PUSH, CMD_WASK, CMD_WINS, Header, OVERHEAD};

const RTO_NDL: u32 = 30;
const RTO_MIN: u32 = 100;
const RTO_DEF: u32 = 200;
const RTO_MAX: u32 = 60_000;
const ASK_SEND: u32 = 1;
const ASK_TELL: u32 = 2;
const THRESH_INIT: u32 = 2;
const THRESH_MIN: u32 = 2;
const PROBE_INIT: u32 = 7_000;
const PROBE_LIMIT: u32 = 120_000;
const FASTACK_LIMIT: u32 = 5;

#[derive(Debug, Clone)]
struct Segment {
    frg: u8,
    ts: u32,
    sn: u32,
    resend_ts: u32,
    rto: u32,
    fastack: u32,
    xmit: u32,
    /// When it was first sent (for `dead_after_ms`).
    first_sent: u32,
    data: Bytes,
}

/// `later - earlier` in wrapping 32-bit time or sequence space.
fn diff(later: u32, earlier: u32) -> i32 {
    later.wrapping_sub(earlier) as i32
}

/// One KCP conversation.
#[derive(Debug)]
pub struct Kcp {
    conv: u32,
    config: KcpConfig,
    mss: usize,
    snd_una: u32,
    snd_nxt: u32,
    rcv_nxt: u32,
    ssthresh: u32,
    rx_rttval: u32,
    rx_srtt: u32,
    rx_rto: u32,
    rx_minrto: u32,
    rmt_wnd: u32,
    cwnd: u32,
    incr: u32,
    probe: u32,
    current: u32,
    ts_flush: u32,
    ts_probe: u32,
    probe_wait: u32,
    updated: bool,
    dead: bool,
    /// The clock when a segment last came from the peer (see [`Kcp::peer_silent`]).
    heard_at: u32,
    snd_queue: VecDeque<Segment>,
    snd_buf: VecDeque<Segment>,
    rcv_queue: VecDeque<Segment>,
    rcv_buf: VecDeque<Segment>,
    /// (sn, ts) pairs to acknowledge at the next flush.
    acks: Vec<(u32, u32)>,
    transmits: VecDeque<Bytes>,
}

impl Kcp {
    /// A conversation `conv` with `config`.
    pub fn new(conv: u32, config: KcpConfig) -> Kcp {
        let mtu = config.mtu.clamp(OVERHEAD + 50, 65_535);
        let rx_minrto = if config.nodelay { RTO_NDL } else { RTO_MIN };
        Kcp {
            conv,
            mss: mtu - OVERHEAD,
            snd_una: 0,
            snd_nxt: 0,
            rcv_nxt: 0,
            ssthresh: THRESH_INIT,
            rx_rttval: 0,
            rx_srtt: 0,
            rx_rto: RTO_DEF,
            rx_minrto,
            rmt_wnd: 128,
            cwnd: 0,
            incr: 0,
            probe: 0,
            current: 0,
            ts_flush: config.interval,
            ts_probe: 0,
            probe_wait: 0,
            updated: false,
            dead: false,
            heard_at: 0,
            snd_queue: VecDeque::new(),
            snd_buf: VecDeque::new(),
            rcv_queue: VecDeque::new(),
            rcv_buf: VecDeque::new(),
            acks: Vec::new(),
            transmits: VecDeque::new(),
            config: KcpConfig {
                mtu,
                interval: config.interval.clamp(10, 5000),
                ..config
            },
        }
    }

    /// The conversation ID.
    pub fn conv(&self) -> u32 {
        self.conv
    }

    /// The bytes one segment carries: a message no longer than this goes out whole in one segment.
    pub fn mss(&self) -> usize {
        self.mss
    }

    /// True once a segment was sent `dead_link` times, over at least `dead_after_ms`, without an ACK:
    /// the peer is gone.
    pub fn is_dead(&self) -> bool {
        self.dead
    }

    /// Segments sent and not yet acknowledged, plus those waiting to be sent.
    pub fn waiting(&self) -> usize {
        self.snd_buf.len() + self.snd_queue.len()
    }

    /// Queues one message. It arrives whole, in order, as one [`Kcp::recv`] on the other side.
    pub fn send(&mut self, data: &[u8]) -> Result<(), KcpError> {
        self.send_bytes(Bytes::copy_from_slice(data))
    }

    /// [`Kcp::send`] for a message the caller owns: its segments share it, nothing is copied.
    pub fn send_bytes(&mut self, whole: Bytes) -> Result<(), KcpError> {
        let count = whole.len().div_ceil(self.mss).max(1);
        let max_fragments = usize::from(self.config.rcv_wnd).min(256) - 1;
        if count > max_fragments {
            return Err(KcpError::MessageTooLarge {
                len: whole.len(),
                max_fragments,
            });
        }
        if self.snd_queue.len() + count > self.config.max_send_queue {
            return Err(KcpError::SendQueueFull(self.config.max_send_queue));
        }
        for i in 0..count {
            let start = (i * self.mss).min(whole.len());
            let end = (start + self.mss).min(whole.len());
            let frg = u8::try_from(count - i - 1).unwrap_or(0);
            let seg = Segment {
                frg,
                ts: 0,
                sn: 0,
                resend_ts: 0,
                rto: 0,
                fastack: 0,
                xmit: 0,
                first_sent: 0,
                data: whole.slice(start..end),
            };
            self.snd_queue.push_back(seg);
        }
        Ok(())
    }

    /// The next whole message, if one has arrived.
    pub fn recv(&mut self) -> Option<Bytes> {
        let first = self.rcv_queue.front()?;
        let fragments = usize::from(first.frg) + 1;
        if self.rcv_queue.len() < fragments {
            return None;
        }
        let recover = self.rcv_queue.len() >= usize::from(self.config.rcv_wnd);
        let mut message = BytesMut::with_capacity(fragments * self.mss);
        for _ in 0..fragments {
            let Some(seg) = self.rcv_queue.pop_front() else {
                break;
            };
            message.extend_from_slice(&seg.data);
            if seg.frg == 0 {
                break;
            }
        }
        self.move_received();
        if recover && self.rcv_queue.len() < usize::from(self.config.rcv_wnd) {
            self.probe |= ASK_TELL; // tell the peer the window reopened
        }
        Some(message.freeze())
    }

    /// Feeds one datagram from the peer, received at `now_ms` (the clock of [`Kcp::update`]): round trips
    /// are measured to it. Segments before a malformed one are still applied, as ikcp does.
    pub fn input(&mut self, now_ms: u32, datagram: &[u8]) -> Result<(), KcpError> {
        self.set_clock(now_ms);
        let prev_una = self.snd_una;
        let (segments, error) = segment::split(datagram, self.conv);
        if !segments.is_empty() {
            self.heard_from_peer();
        }
        let mut newest_ack: Option<(u32, u32)> = None;
        for (header, data) in segments {
            self.rmt_wnd = u32::from(header.wnd);
            self.parse_una(header.una);
            self.shrink_buf();
            match header.cmd {
                CMD_ACK => {
                    if diff(self.current, header.ts) >= 0 {
                        self.update_rtt(diff(self.current, header.ts).unsigned_abs());
                    }
                    self.parse_ack(header.sn);
                    self.shrink_buf();
                    if newest_ack.is_none_or(|(sn, _)| diff(header.sn, sn) > 0) {
                        newest_ack = Some((header.sn, header.ts));
                    }
                }
                CMD_PUSH => self.accept_push(&header, data),
                CMD_WASK => self.probe |= ASK_TELL,
                _ => {} // CMD_WINS: the window was already taken from the header.
            }
        }
        if let Some((sn, _)) = newest_ack {
            self.parse_fastack(sn);
        }
        if diff(self.snd_una, prev_una) > 0 {
            self.grow_cwnd();
        }
        error.map_or(Ok(()), |e| Err(e.into()))
    }

    /// True while the peer has sent nothing since the oldest unacknowledged segment was first sent, and
    /// that segment has timed out once already: the peer is stalled or gone, not just losing the odd
    /// datagram (a live peer acknowledges something within a round trip).
    fn peer_silent(&self) -> bool {
        self.snd_buf
            .front()
            .is_some_and(|oldest| oldest.xmit >= 2 && diff(self.heard_at, oldest.first_sent) <= 0)
    }

    /// A segment came from the peer. If it had been silent, everything still unacknowledged is due at
    /// once: while silent only the oldest segment was resent (see `flush`), so the rest may be missing.
    fn heard_from_peer(&mut self) {
        if self.peer_silent() {
            for seg in &mut self.snd_buf {
                seg.resend_ts = self.current;
            }
        }
        self.heard_at = self.current;
    }

    fn accept_push(&mut self, header: &Header, data: &[u8]) {
        let window_end = self.rcv_nxt.wrapping_add(u32::from(self.config.rcv_wnd));
        if diff(header.sn, window_end) >= 0 {
            return; // beyond the window: dropped unacknowledged, the peer resends
        }
        // Bounded: at most two windows of ACKs wait for the next flush; later duplicates are dropped.
        if self.acks.len() < 2 * usize::from(self.config.rcv_wnd) {
            self.acks.push((header.sn, header.ts));
        }
        if diff(header.sn, self.rcv_nxt) < 0 {
            return; // already delivered: the ACK above is all it needs
        }
        let position = self
            .rcv_buf
            .iter()
            .rposition(|s| diff(s.sn, header.sn) <= 0);
        let existing = position.and_then(|p| self.rcv_buf.get(p));
        if existing.is_some_and(|s| s.sn == header.sn) {
            return; // duplicate
        }
        let seg = Segment {
            frg: header.frg,
            ts: header.ts,
            sn: header.sn,
            resend_ts: 0,
            rto: 0,
            fastack: 0,
            xmit: 0,
            first_sent: 0,
            data: Bytes::copy_from_slice(data),
        };
        self.rcv_buf.insert(position.map_or(0, |p| p + 1), seg);
        self.move_received();
    }

    /// Moves in-order segments from the receive buffer to the receive queue, within the window.
    fn move_received(&mut self) {
        while let Some(seg) = self.rcv_buf.front() {
            if seg.sn != self.rcv_nxt || self.rcv_queue.len() >= usize::from(self.config.rcv_wnd) {
                break;
            }
            if let Some(seg) = self.rcv_buf.pop_front() {
                self.rcv_queue.push_back(seg);
            }
            self.rcv_nxt = self.rcv_nxt.wrapping_add(1);
        }
    }

    fn update_rtt(&mut self, rtt: u32) {
        if self.rx_srtt == 0 {
            self.rx_srtt = rtt;
            self.rx_rttval = rtt / 2;
        } else {
            let delta = rtt.abs_diff(self.rx_srtt);
            let rttval = (3 * u64::from(self.rx_rttval) + u64::from(delta)) / 4;
            let srtt = ((7 * u64::from(self.rx_srtt) + u64::from(rtt)) / 8).max(1);
            self.rx_rttval = u32::try_from(rttval).unwrap_or(u32::MAX);
            self.rx_srtt = u32::try_from(srtt).unwrap_or(u32::MAX);
        }
        let rto = self
            .rx_srtt
            .saturating_add(self.config.interval.max(self.rx_rttval.saturating_mul(4)));
        self.rx_rto = rto.clamp(self.rx_minrto, RTO_MAX);
    }

    fn shrink_buf(&mut self) {
        self.snd_una = self.snd_buf.front().map_or(self.snd_nxt, |s| s.sn);
    }

    fn parse_ack(&mut self, sn: u32) {
        if diff(sn, self.snd_una) < 0 || diff(sn, self.snd_nxt) >= 0 {
            return;
        }
        if let Some(p) = self.snd_buf.iter().position(|s| s.sn == sn) {
            self.snd_buf.remove(p);
        }
    }

    fn parse_una(&mut self, una: u32) {
        while self.snd_buf.front().is_some_and(|s| diff(una, s.sn) > 0) {
            self.snd_buf.pop_front();
        }
    }

    fn parse_fastack(&mut self, sn: u32) {
        if diff(sn, self.snd_una) < 0 || diff(sn, self.snd_nxt) >= 0 {
            return;
        }
        for seg in self.snd_buf.iter_mut() {
            if diff(sn, seg.sn) < 0 {
                break;
            }
            if sn != seg.sn {
                seg.fastack = seg.fastack.saturating_add(1);
            }
        }
    }

    fn grow_cwnd(&mut self) {
        if self.cwnd >= self.rmt_wnd {
            return;
        }
        let mss = u32::try_from(self.mss).unwrap_or(u32::MAX);
        if self.cwnd < self.ssthresh {
            self.cwnd += 1;
            self.incr = self.incr.saturating_add(mss);
        } else {
            self.incr = self.incr.max(mss);
            self.incr = self
                .incr
                .saturating_add(mss.saturating_mul(mss) / self.incr + mss / 16);
            if (self.cwnd + 1).saturating_mul(mss) <= self.incr {
                self.cwnd = self.incr.div_ceil(mss.max(1));
            }
        }
        if self.cwnd > self.rmt_wnd {
            self.cwnd = self.rmt_wnd;
            self.incr = self.rmt_wnd.saturating_mul(mss);
        }
    }

    fn unused_window(&self) -> u16 {
        let used = u16::try_from(self.rcv_queue.len()).unwrap_or(u16::MAX);
        self.config.rcv_wnd.saturating_sub(used)
    }

    /// Advances the clock (ms, wrapping) and flushes when an interval has passed.
    pub fn update(&mut self, now_ms: u32) {
        self.current = now_ms;
        if !self.updated {
            self.updated = true;
            self.ts_flush = now_ms;
        }
        let mut slap = diff(now_ms, self.ts_flush);
        if !(-10_000..10_000).contains(&slap) {
            self.ts_flush = now_ms;
            slap = 0;
        }
        if slap >= 0 {
            self.ts_flush = self.ts_flush.wrapping_add(self.config.interval);
            if diff(now_ms, self.ts_flush) >= 0 {
                self.ts_flush = now_ms.wrapping_add(self.config.interval);
            }
            self.flush_at_current();
        }
    }

    /// Moves the clock to `now_ms` without flushing. `input` and `flush` take the time because a
    /// session with nothing in flight gets no `update` (see [`Kcp::needs_timer`]): with the clock left
    /// at the last update, a segment sent after a quiet spell was stamped and timed from then, looked
    /// overdue at once, and the next `update` sent it a second time; its acknowledgement measured a
    /// round trip as long as the spell.
    fn set_clock(&mut self, now_ms: u32) {
        if self.updated {
            self.current = now_ms;
        }
    }

    /// False when nothing is unacknowledged, queued, to acknowledge or to probe: no timer is needed until
    /// the next `send` or `input`. ikcp keeps flushing every interval regardless; a server with thousands
    /// of quiet sessions should not wake for each of them a hundred times a second.
    pub fn needs_timer(&self) -> bool {
        !(self.snd_buf.is_empty()
            && self.snd_queue.is_empty()
            && self.acks.is_empty()
            && self.probe == 0
            && self.rmt_wnd != 0)
    }

    /// When to call [`Kcp::update`] next (ms, same clock).
    pub fn check(&self, now_ms: u32) -> u32 {
        if !self.updated {
            return now_ms;
        }
        let mut ts_flush = self.ts_flush;
        if !(-10_000..10_000).contains(&diff(now_ms, ts_flush)) {
            ts_flush = now_ms;
        }
        if diff(now_ms, ts_flush) >= 0 {
            return now_ms;
        }
        let mut minimal = diff(ts_flush, now_ms);
        for seg in &self.snd_buf {
            let until = diff(seg.resend_ts, now_ms);
            if until <= 0 {
                return now_ms;
            }
            minimal = minimal.min(until);
        }
        let wait =
            u32::try_from(minimal.min(i32::try_from(self.config.interval).unwrap_or(i32::MAX)))
                .unwrap_or(0);
        now_ms.wrapping_add(wait)
    }

    /// The next datagram to send to the peer.
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<Bytes> {
        self.transmits.pop_front()
    }

    /// Sends pending ACKs, window probes, and data within the window, at `now_ms`; retransmits what is
    /// due.
    pub fn flush(&mut self, now_ms: u32) {
        self.set_clock(now_ms);
        self.flush_at_current();
    }

    fn flush_at_current(&mut self) {
        if !self.updated {
            return;
        }
        let current = self.current;
        let wnd = self.unused_window();
        let mut out = BytesMut::with_capacity(self.config.mtu);
        let (conv, una) = (self.conv, self.rcv_nxt);
        let header = |cmd: u8, frg: u8, ts: u32, sn: u32, len: u32| Header {
            conv,
            cmd,
            frg,
            wnd,
            ts,
            sn,
            una,
            len,
        };
        let mut datagrams = Vec::new();
        let mtu = self.config.mtu;
        let mut emit = |out: &mut BytesMut, need: usize| {
            if out.len() + need > mtu && !out.is_empty() {
                datagrams.push(out.split().freeze());
            }
        };
        for &(sn, ts) in &self.acks {
            emit(&mut out, OVERHEAD);
            header(CMD_ACK, 0, ts, sn, 0).encode(&mut out);
        }
        self.acks.clear();

        // Probe a zero window now and then.
        if self.rmt_wnd == 0 {
            if self.probe_wait == 0 {
                self.probe_wait = PROBE_INIT;
                self.ts_probe = current.wrapping_add(self.probe_wait);
            } else if diff(current, self.ts_probe) >= 0 {
                self.probe_wait = self.probe_wait.max(PROBE_INIT);
                self.probe_wait = (self.probe_wait + self.probe_wait / 2).min(PROBE_LIMIT);
                self.ts_probe = current.wrapping_add(self.probe_wait);
                self.probe |= ASK_SEND;
            }
        } else {
            self.ts_probe = 0;
            self.probe_wait = 0;
        }
        if self.probe & ASK_SEND != 0 {
            emit(&mut out, OVERHEAD);
            header(CMD_WASK, 0, 0, 0, 0).encode(&mut out);
        }
        if self.probe & ASK_TELL != 0 {
            emit(&mut out, OVERHEAD);
            header(CMD_WINS, 0, 0, 0, 0).encode(&mut out);
        }
        self.probe = 0;

        // Move segments into the send window.
        let mut cwnd = u32::from(self.config.snd_wnd).min(self.rmt_wnd);
        if !self.config.no_congestion_window {
            cwnd = cwnd.min(self.cwnd);
        }
        while diff(self.snd_nxt, self.snd_una.wrapping_add(cwnd)) < 0 {
            let Some(mut seg) = self.snd_queue.pop_front() else {
                break;
            };
            seg.ts = current;
            seg.sn = self.snd_nxt;
            seg.resend_ts = current;
            seg.rto = self.rx_rto;
            seg.fastack = 0;
            seg.xmit = 0;
            self.snd_nxt = self.snd_nxt.wrapping_add(1);
            self.snd_buf.push_back(seg);
        }

        let resent = if self.config.fast_resend > 0 {
            self.config.fast_resend
        } else {
            u32::MAX
        };
        let rtomin = if self.config.nodelay {
            0
        } else {
            self.rx_rto >> 3
        };
        let (mut change, mut lost) = (false, false);
        // A silent peer (stalled, or gone) gets the oldest segment again as a probe each time it is
        // due, not the whole window: a stalled client with 256 segments in flight was sent all 256 at
        // every timeout until its link was declared dead.
        let probing = self.peer_silent();
        for i in 0..self.snd_buf.len() {
            let Some(seg) = self.snd_buf.get_mut(i) else {
                break;
            };
            let mut needsend = false;
            if probing && i > 0 && seg.xmit > 0 {
                if diff(current, seg.resend_ts) >= 0 {
                    seg.resend_ts = current.wrapping_add(seg.rto);
                }
            } else if seg.xmit == 0 {
                needsend = true;
                seg.xmit = 1;
                seg.first_sent = current;
                seg.rto = self.rx_rto;
                seg.resend_ts = current.wrapping_add(seg.rto).wrapping_add(rtomin);
            } else if diff(current, seg.resend_ts) >= 0 {
                needsend = true;
                seg.xmit += 1;
                if self.config.nodelay {
                    seg.rto = seg.rto.saturating_add(self.rx_rto / 2);
                } else {
                    seg.rto = seg.rto.saturating_add(seg.rto.max(self.rx_rto));
                }
                seg.resend_ts = current.wrapping_add(seg.rto);
                lost = true;
            } else if seg.fastack >= resent && seg.xmit <= FASTACK_LIMIT {
                needsend = true;
                seg.xmit += 1;
                seg.fastack = 0;
                seg.resend_ts = current.wrapping_add(seg.rto);
                change = true;
            }
            if needsend {
                seg.ts = current;
                let len = u32::try_from(seg.data.len()).unwrap_or(0);
                let h = header(CMD_PUSH, seg.frg, current, seg.sn, len);
                emit(&mut out, OVERHEAD + seg.data.len());
                h.encode(&mut out);
                out.extend_from_slice(&seg.data);
                let unacknowledged = u32::try_from(diff(current, seg.first_sent)).unwrap_or(0);
                if seg.xmit >= self.config.dead_link && unacknowledged >= self.config.dead_after_ms
                {
                    self.dead = true;
                }
            }
        }
        if !out.is_empty() {
            datagrams.push(out.freeze());
        }
        self.transmits.extend(datagrams);

        let mss = u32::try_from(self.mss).unwrap_or(u32::MAX);
        if change {
            let inflight = self.snd_nxt.wrapping_sub(self.snd_una);
            self.ssthresh = (inflight / 2).max(THRESH_MIN);
            self.cwnd = self.ssthresh.saturating_add(resent);
            self.incr = self.cwnd.saturating_mul(mss);
        }
        if lost {
            self.ssthresh = (cwnd / 2).max(THRESH_MIN);
            self.cwnd = 1;
            self.incr = mss;
        }
        if self.cwnd < 1 {
            self.cwnd = 1;
            self.incr = mss;
        }
    }
}

#[cfg(test)]
mod tests;
