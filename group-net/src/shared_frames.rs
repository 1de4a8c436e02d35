//! A flusher's fan-out frames, each held once for all its members: a member whose pending frames are
//! a run of consecutive fan-outs holds only the run's positions, and is written straight from here.
//!
//! Why: with 100 members flat out a member took about 16 fan-outs per round, each as its own `Bytes`
//! in its own growing vector: a reference count taken and dropped and a vector grown three times per
//! member per round, 5-8% of the server's CPU (docs/benchmarks/FANOUT-LOG.md). A run costs a position
//! moved by one.
//!
//! Positions count fan-outs from the flusher's start. A frame is dropped once its fan-out is finished:
//! every member was written or queued by then, and none still holds a run through it.

use std::ops::Range;

use bytes::Bytes;

/// The fan-out frames not yet finished, by position.
#[derive(Default)]
pub(crate) struct SharedFrames {
    /// The frames from position `base` on.
    frames: Vec<Bytes>,
    base: u64,
    /// Fan-outs finished: frames before this position are no longer held by anyone.
    finished: u64,
}

impl SharedFrames {
    /// Adds a fan-out's frame and returns its position.
    pub fn push(&mut self, frame: Bytes) -> u64 {
        let at = self.base + self.frames.len() as u64;
        self.frames.push(frame);
        at
    }

    /// The frames of a run. A run's frames are dropped only after every member holding the run was
    /// written; one asked for later gets nothing (and fails a debug assertion).
    pub fn get(&self, run: &Range<u64>) -> &[Bytes] {
        let frames = self.held(run).unwrap_or_default();
        debug_assert!(
            run.is_empty() || !frames.is_empty(),
            "a run outlived its frames"
        );
        frames
    }

    /// The frames of a run, if they are all still held.
    fn held(&self, run: &Range<u64>) -> Option<&[Bytes]> {
        let start = usize::try_from(run.start.checked_sub(self.base)?).ok()?;
        let end = usize::try_from(run.end.checked_sub(self.base)?).ok()?;
        self.frames.get(start..end)
    }

    /// Fan-outs up to `count` are finished: their frames go, in bulk once they are half the vector
    /// (dropping from the front one at a time would move the rest each time).
    pub fn finish(&mut self, count: u64) {
        self.finished = self.finished.max(count);
        let done = usize::try_from(self.finished - self.base).unwrap_or(usize::MAX);
        if done >= self.frames.len() {
            self.base += self.frames.len() as u64;
            self.frames.clear();
        } else if done * 2 >= self.frames.len() {
            self.frames.drain(..done);
            self.base = self.finished;
        }
    }
}

/// Takes fan-out position `at` into a member's run when it continues the run (or the run is empty).
/// False otherwise: the member's frames stop being one run.
pub(crate) fn extend_run(run: &mut Range<u64>, at: u64) -> bool {
    if run.is_empty() {
        *run = at..at + 1;
        true
    } else if run.end == at {
        run.end += 1;
        true
    } else {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(n: u8) -> Bytes {
        Bytes::from(vec![n; 3])
    }

    #[test]
    fn a_run_gets_its_frames_until_they_are_finished() {
        let mut shared = SharedFrames::default();
        let positions: Vec<u64> = (0..6).map(|n| shared.push(frame(n))).collect();
        assert_eq!(positions, [0, 1, 2, 3, 4, 5]);
        assert_eq!(shared.get(&(2..4)), [frame(2), frame(3)]);
        shared.finish(1); // under half: nothing moves yet
        assert_eq!(shared.get(&(1..3)), [frame(1), frame(2)]);
        shared.finish(3); // half: positions 0-2 go
        assert_eq!(shared.get(&(3..6)), [frame(3), frame(4), frame(5)]);
        assert_eq!(shared.held(&(2..4)), None, "a dropped frame is not served");
        assert_eq!(shared.push(frame(6)), 6);
        shared.finish(7);
        assert_eq!(shared.held(&(6..7)), None);
        assert_eq!(shared.push(frame(7)), 7);
        assert_eq!(shared.get(&(7..8)), [frame(7)]);
    }

    #[test]
    fn a_run_extends_only_with_the_next_position() {
        let mut run = 0..0;
        assert!(extend_run(&mut run, 4));
        assert!(extend_run(&mut run, 5));
        assert!(!extend_run(&mut run, 7));
        assert_eq!(run, 4..6);
    }
}
