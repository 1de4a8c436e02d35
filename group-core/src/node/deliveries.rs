//! The node's queue of frames for connections: single frames, and fan-outs (one frame for several
//! connections) kept whole until they reach the driver.
//!
//! Why whole: a broadcast to 1,000 members was 1,000 queued transmits, each with its own reference to
//! the frame, pushed here and popped by the driver one by one. A driver that gathers a turn's
//! broadcasts per member ([`super::output::Sink::fan_out`]) needs only the list of connections, once.

use std::collections::VecDeque;

use bytes::Bytes;

use super::ConnId;
use super::output::Transmit;

/// Connection lists kept for reuse: a node turn's fan-outs need few at once.
const KEPT_LISTS: usize = 8;

/// One entry of the queue.
#[derive(Debug)]
pub(crate) enum Delivery {
    One(Transmit),
    /// `frame` to each of `conns` in order; never empty.
    Many {
        frame: Bytes,
        reliable: bool,
        conns: Vec<ConnId>,
    },
}

/// A queued entry: a fan-out taken one connection at a time remembers how far it got.
#[derive(Debug)]
struct Queued {
    delivery: Delivery,
    /// Connections of a fan-out already handed out by [`Deliveries::pop_front`].
    taken: usize,
}

/// Frames for connections, in the order the node produced them.
#[derive(Debug, Default)]
pub(crate) struct Deliveries {
    queue: VecDeque<Queued>,
    /// Frames held, counting a fan-out once per connection.
    frames: usize,
    spare: Vec<Vec<ConnId>>,
}

impl Deliveries {
    /// Frames held (a fan-out counts once per connection): the node's delivery counter reads it.
    pub fn len(&self) -> usize {
        self.frames
    }

    pub fn push_back(&mut self, transmit: Transmit) {
        self.frames += 1;
        self.queue.push_back(Queued {
            delivery: Delivery::One(transmit),
            taken: 0,
        });
    }

    /// Queues `frame` for each of `conns`, in order (nothing if there are none).
    pub fn fan_out(&mut self, frame: &Bytes, reliable: bool, conns: impl Iterator<Item = ConnId>) {
        let mut list = self.spare.pop().unwrap_or_default();
        list.extend(conns);
        if list.is_empty() {
            self.spare.push(list);
            return;
        }
        self.frames += list.len();
        let delivery = Delivery::Many {
            frame: frame.clone(),
            reliable,
            conns: list,
        };
        self.queue.push_back(Queued { delivery, taken: 0 });
    }

    /// The next entry, whole (what is left of it).
    pub fn pop_delivery(&mut self) -> Option<Delivery> {
        let Queued {
            mut delivery,
            taken,
        } = self.queue.pop_front()?;
        self.frames -= match &mut delivery {
            Delivery::One(_) => 1,
            Delivery::Many { conns, .. } => {
                conns.drain(..taken);
                conns.len()
            }
        };
        Some(delivery)
    }

    /// The next frame on its own: a fan-out is handed out one connection at a time.
    pub fn pop_front(&mut self) -> Option<Transmit> {
        let queued = self.queue.front_mut()?;
        if let Delivery::Many {
            frame,
            reliable,
            conns,
        } = &queued.delivery
            && let Some(&conn) = conns.get(queued.taken)
            && queued.taken + 1 < conns.len()
        {
            queued.taken += 1;
            self.frames -= 1;
            return Some(Transmit {
                conn,
                frame: frame.clone(),
                reliable: *reliable,
            });
        }
        match self.pop_delivery()? {
            Delivery::One(transmit) => Some(transmit),
            Delivery::Many {
                frame,
                reliable,
                mut conns,
            } => {
                let conn = conns.pop()?;
                self.recycle(conns);
                Some(Transmit {
                    conn,
                    frame,
                    reliable,
                })
            }
        }
    }

    /// Takes back a fan-out's list once the driver is done with it.
    pub fn recycle(&mut self, mut conns: Vec<ConnId>) {
        if self.spare.len() < KEPT_LISTS {
            conns.clear();
            self.spare.push(conns);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn one(conn: u64, frame: &'static [u8]) -> Transmit {
        Transmit {
            conn: ConnId(conn),
            frame: Bytes::from_static(frame),
            reliable: true,
        }
    }

    #[test]
    fn frames_come_out_one_by_one_in_order_and_are_counted_per_connection() {
        let mut queue = Deliveries::default();
        queue.push_back(one(9, b"first"));
        let shared = Bytes::from_static(b"shared");
        queue.fan_out(&shared, false, [1, 2, 3].into_iter().map(ConnId));
        queue.fan_out(&shared, false, std::iter::empty());
        queue.push_back(one(9, b"last"));
        assert_eq!(queue.len(), 5);
        let mut seen = Vec::new();
        while let Some(t) = queue.pop_front() {
            seen.push((t.conn.0, t.frame, t.reliable));
        }
        let shared = |conn| (conn, Bytes::from_static(b"shared"), false);
        let expected = [
            (9, Bytes::from_static(b"first"), true),
            shared(1),
            shared(2),
            shared(3),
            (9, Bytes::from_static(b"last"), true),
        ];
        assert_eq!(seen, expected);
        assert_eq!(queue.len(), 0);
        assert_eq!(
            queue.spare.len(),
            2,
            "the empty fan-out's list and the drained one's"
        );
    }

    #[test]
    fn a_fan_out_comes_out_whole_and_its_list_is_reused() {
        let mut queue = Deliveries::default();
        let shared = Bytes::from_static(b"x");
        queue.fan_out(&shared, true, (0..100).map(ConnId));
        assert_eq!(queue.len(), 100);
        let Some(Delivery::Many { conns, .. }) = queue.pop_delivery() else {
            panic!("a fan-out");
        };
        assert_eq!(conns.len(), 100);
        assert_eq!(queue.len(), 0);
        queue.recycle(conns);
        queue.fan_out(&shared, true, [ConnId(1)].into_iter());
        let Some(Delivery::Many { conns, .. }) = queue.pop_delivery() else {
            panic!("a fan-out");
        };
        assert!(conns.capacity() >= 100, "the first list, reused");
        for _ in 0..2 * KEPT_LISTS {
            queue.recycle(Vec::new());
        }
        assert_eq!(queue.spare.len(), KEPT_LISTS);
    }
}
