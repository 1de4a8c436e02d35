//! A turn's broadcasts gathered into runs: consecutive fan-outs of the same members, in the same order,
//! on the same channel. The node task hands such a run to a plain TCP member as one frame (the
//! broadcasts' frames back to back, byte for byte what it would have written one after another), so
//! its cost per member is per run, not per broadcast.
//!
//! Why: queueing each broadcast's frame for each member (a map lookup, the budget checks, a vector
//! push, and the frame's reference count touched on the node's thread and again on the writer's) was a
//! fifth of the server's CPU flat out (one sender, 1,000 members, about three broadcasts a node turn;
//! `perf record`, docs/BENCHMARKS.md).
//!
//! The core hands a broadcast over whole, its frame and its member list (`Sink::fan_out`,
//! [`Runs::take_fan_out`]): a list equal to the open run's joins it. Single transmits come one by one
//! ([`Runs::take`]), and consecutive ones sharing a frame (same address, same length: the core clones
//! one encoding for every recipient, as a merged group's flush does) are read as one fan-out. Anything
//! that does not join the open run ends it, so what a connection gets keeps the core's order.

use bytes::{Bytes, BytesMut};
use group_core::{ConnId, Transmit};

/// A run stops taking broadcasts at this many bytes of frames: one frame per member of at most this
/// (the turn's later broadcasts start the next run).
const MAX_RUN_BYTES: usize = 64 * 1024;

/// Frames that went, one after another, to exactly `conns` in that order.
pub(crate) struct Run {
    pub conns: Vec<ConnId>,
    /// In order; never empty.
    pub frames: Vec<Bytes>,
    pub bytes: usize,
    pub reliable: bool,
}

impl Run {
    /// The run's frames as one: the frame itself for a run of one, else a copy of them back to back
    /// (made once for all the members).
    pub fn joined(&self) -> Option<Bytes> {
        if let [only] = self.frames.as_slice() {
            return Some(only.clone());
        }
        let mut joined = BytesMut::with_capacity(self.bytes);
        for frame in &self.frames {
            joined.extend_from_slice(frame);
        }
        (!joined.is_empty()).then(|| joined.freeze())
    }
}

/// The fan-out being received: one frame and the connections it went to so far.
struct Fanout {
    frame: Bytes,
    reliable: bool,
    conns: Vec<ConnId>,
}

/// The node task's runs of a turn: at most one fan-out being received and one run open.
#[derive(Default)]
pub(crate) struct Runs {
    fanout: Option<Fanout>,
    run: Option<Run>,
    /// Vectors of ended runs, for the next fan-outs (1,000 members is 8 KiB a vector).
    spare_conns: Vec<Vec<ConnId>>,
    spare_frames: Vec<Vec<Bytes>>,
}

/// Spare vectors kept of each kind: a turn needs two or three.
const KEPT_SPARES: usize = 4;

impl Runs {
    /// Takes the core's next transmit. Returns the run it ended, which must be queued before anything
    /// newer.
    pub fn take(&mut self, transmit: Transmit) -> Option<Run> {
        if let Some(fanout) = &mut self.fanout
            && same_bytes(&fanout.frame, &transmit.frame)
            && fanout.reliable == transmit.reliable
        {
            fanout.conns.push(transmit.conn);
            return None;
        }
        let ended = self.end_fanout();
        let mut conns = self.spare_conns.pop().unwrap_or_default();
        conns.push(transmit.conn);
        self.fanout = Some(Fanout {
            frame: transmit.frame,
            reliable: transmit.reliable,
            conns,
        });
        ended
    }

    /// Takes a whole fan-out from the core ([`group_core::Sink::fan_out`]): it joins the open run or
    /// opens the next. Returns the runs it ended, in order.
    pub fn take_fan_out(
        &mut self,
        frame: &Bytes,
        reliable: bool,
        conns: &[ConnId],
    ) -> [Option<Run>; 2] {
        let ended = self.end_fanout();
        if self.joins_run(frame, reliable, conns) {
            return [ended, None];
        }
        let mut list = self.spare_conns.pop().unwrap_or_default();
        list.extend_from_slice(conns);
        [ended, self.open_run(frame.clone(), reliable, list)]
    }

    /// Ends the turn's runs: what is left to queue, in order.
    pub fn finish(&mut self) -> [Option<Run>; 2] {
        let ended = self.end_fanout();
        [ended, self.run.take()]
    }

    /// True when nothing is held.
    pub fn is_empty(&self) -> bool {
        self.fanout.is_none() && self.run.is_none()
    }

    /// Takes back a queued run's vectors.
    pub fn recycle(&mut self, mut run: Run) {
        if self.spare_conns.len() < KEPT_SPARES {
            run.conns.clear();
            self.spare_conns.push(run.conns);
        }
        if self.spare_frames.len() < KEPT_SPARES {
            run.frames.clear();
            self.spare_frames.push(run.frames);
        }
    }

    /// The fan-out being received is complete: it joins the open run, or ends it and opens the next.
    fn end_fanout(&mut self) -> Option<Run> {
        let fanout = self.fanout.take()?;
        if self.joins_run(&fanout.frame, fanout.reliable, &fanout.conns) {
            if self.spare_conns.len() < KEPT_SPARES {
                let mut conns = fanout.conns;
                conns.clear();
                self.spare_conns.push(conns);
            }
            return None;
        }
        self.open_run(fanout.frame, fanout.reliable, fanout.conns)
    }

    /// Adds `frame` to the open run if it went to the same connections on the same channel and fits.
    fn joins_run(&mut self, frame: &Bytes, reliable: bool, conns: &[ConnId]) -> bool {
        let Some(run) = &mut self.run else {
            return false;
        };
        let bytes = frame.len();
        if run.reliable != reliable || run.bytes + bytes > MAX_RUN_BYTES || run.conns != conns {
            return false;
        }
        run.frames.push(frame.clone());
        run.bytes += bytes;
        true
    }

    /// Opens a run of `frame` to `conns`; returns the run it ended.
    fn open_run(&mut self, frame: Bytes, reliable: bool, conns: Vec<ConnId>) -> Option<Run> {
        let bytes = frame.len();
        let mut frames = self.spare_frames.pop().unwrap_or_default();
        frames.push(frame);
        let next = Run {
            conns,
            frames,
            bytes,
            reliable,
        };
        self.run.replace(next)
    }
}

/// The same bytes: the core clones one frame for every member of a fan-out. Frames are immutable and
/// the fan-out holds its own, so the same address and length mean the same contents (a static frame
/// sent twice in a row is read as one fan-out of it, which is still what each connection gets).
fn same_bytes(a: &Bytes, b: &Bytes) -> bool {
    a.as_ptr() == b.as_ptr() && a.len() == b.len()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]

    use super::*;

    fn fan_out(runs: &mut Runs, frame: &Bytes, conns: &[u64], ended: &mut Vec<Run>) {
        for &conn in conns {
            let transmit = Transmit {
                conn: ConnId(conn),
                frame: frame.clone(),
                reliable: true,
            };
            ended.extend(runs.take(transmit));
        }
    }

    fn conns(run: &Run) -> Vec<u64> {
        run.conns.iter().map(|c| c.0).collect()
    }

    #[test]
    fn broadcasts_to_the_same_members_make_one_run_joined_in_order() {
        let mut runs = Runs::default();
        let mut ended = Vec::new();
        let (a, b, c) = (
            Bytes::from_static(b"one"),
            Bytes::from_static(b"two"),
            Bytes::from_static(b"three"),
        );
        for frame in [&a, &b, &c] {
            fan_out(&mut runs, frame, &[1, 2, 3], &mut ended);
        }
        assert!(ended.is_empty(), "one run so far");
        let [fanout, run] = runs.finish();
        assert!(fanout.is_none());
        let run = run.unwrap();
        assert_eq!(conns(&run), [1, 2, 3]);
        assert_eq!(run.frames, [a, b, c]);
        assert_eq!(run.bytes, 11);
        assert_eq!(&run.joined().unwrap()[..], b"onetwothree");
        assert!(runs.is_empty());
    }

    #[test]
    fn other_members_or_another_order_end_the_run() {
        let mut runs = Runs::default();
        let mut ended = Vec::new();
        let frames: Vec<Bytes> = (0..4).map(|n| Bytes::from(vec![n; 2])).collect();
        fan_out(&mut runs, &frames[0], &[1, 2, 3], &mut ended);
        fan_out(&mut runs, &frames[1], &[1, 3], &mut ended); // another sender's: not to 2
        fan_out(&mut runs, &frames[2], &[3, 1], &mut ended); // the same members, another order
        fan_out(&mut runs, &frames[3], &[3, 1], &mut ended);
        let [last_fanout, open] = runs.finish();
        ended.extend(last_fanout);
        ended.extend(open);
        let seen: Vec<(Vec<u64>, usize)> =
            ended.iter().map(|r| (conns(r), r.frames.len())).collect();
        assert_eq!(seen, [(vec![1, 2, 3], 1), (vec![1, 3], 1), (vec![3, 1], 2)]);
    }

    #[test]
    fn whole_fan_outs_and_frame_by_frame_ones_make_the_same_runs() {
        let mut runs = Runs::default();
        let mut ended = Vec::new();
        let frames: Vec<Bytes> = (0..4).map(|n| Bytes::from(vec![n; 3])).collect();
        let members = [ConnId(1), ConnId(2)];
        // A response to one member between two whole fan-outs ends the first run (order per member).
        ended.extend(
            runs.take_fan_out(&frames[0], true, &members)
                .into_iter()
                .flatten(),
        );
        fan_out(&mut runs, &frames[1], &[2], &mut ended);
        ended.extend(
            runs.take_fan_out(&frames[2], true, &members)
                .into_iter()
                .flatten(),
        );
        fan_out(&mut runs, &frames[3], &[1, 2], &mut ended);
        ended.extend(runs.finish().into_iter().flatten());
        let seen: Vec<(Vec<u64>, usize)> =
            ended.iter().map(|r| (conns(r), r.frames.len())).collect();
        assert_eq!(seen, [(vec![1, 2], 1), (vec![2], 1), (vec![1, 2], 2)]);
        assert_eq!(
            ended.last().unwrap().frames,
            [frames[2].clone(), frames[3].clone()]
        );
    }

    #[test]
    fn a_frame_sent_twice_in_a_row_to_one_member_reaches_it_twice() {
        // The same frame to the same connection back to back reads as one fan-out to it twice; the
        // run still carries it twice, in order.
        let mut runs = Runs::default();
        let mut ended = Vec::new();
        let frame = Bytes::from_static(b"x");
        fan_out(&mut runs, &frame, &[7, 7], &mut ended);
        let [fanout, run] = runs.finish();
        assert!(ended.is_empty() && fanout.is_none());
        assert_eq!(conns(&run.unwrap()), [7, 7]);
    }

    #[test]
    fn a_run_ends_at_its_byte_bound_and_on_a_change_of_channel() {
        let mut runs = Runs::default();
        let mut ended = Vec::new();
        let big = Bytes::from(vec![0; MAX_RUN_BYTES / 2]);
        let bigger = Bytes::from(vec![1; MAX_RUN_BYTES / 2 + 1]);
        fan_out(&mut runs, &big, &[1, 2], &mut ended);
        fan_out(&mut runs, &bigger, &[1, 2], &mut ended);
        let unreliable = Transmit {
            conn: ConnId(1),
            frame: Bytes::from_static(b"u"),
            reliable: false,
        };
        ended.extend(runs.take(unreliable.clone()));
        ended.extend(runs.take(Transmit {
            conn: ConnId(2),
            ..unreliable
        }));
        let [fanout, run] = runs.finish();
        ended.extend(fanout);
        ended.extend(run);
        let sizes: Vec<usize> = ended.iter().map(|r| r.bytes).collect();
        assert_eq!(sizes, [MAX_RUN_BYTES / 2, MAX_RUN_BYTES / 2 + 1, 1]);
        assert!(ended.last().is_some_and(|r| !r.reliable));
    }

    #[test]
    fn queued_runs_lend_their_vectors_to_the_next() {
        let mut runs = Runs::default();
        let mut ended = Vec::new();
        for n in 0..3u8 {
            fan_out(
                &mut runs,
                &Bytes::from(vec![n]),
                &[u64::from(n)],
                &mut ended,
            );
        }
        ended.extend(runs.finish().into_iter().flatten());
        assert_eq!(ended.len(), 3, "three members, three runs");
        for run in ended.drain(..) {
            runs.recycle(run);
        }
        assert_eq!((runs.spare_conns.len(), runs.spare_frames.len()), (3, 3));
        fan_out(&mut runs, &Bytes::from_static(b"z"), &[9], &mut ended);
        assert_eq!(runs.spare_conns.len(), 2, "the next fan-out took one");
        for n in 0..10u8 {
            let run = Run {
                conns: vec![ConnId(1)],
                frames: vec![Bytes::from(vec![n])],
                bytes: 1,
                reliable: true,
            };
            runs.recycle(run);
        }
        assert_eq!(runs.spare_conns.len(), KEPT_SPARES, "kept up to the bound");
    }
}
