//! Redis's and nats's replies, found whole at the front of what the bench read: each function says where
//! one reply's parts are and how long it is, or that more bytes are needed.
//!
//! Why over a buffer: the bench's first peer readers went line by line through a `BufReader`, with a
//! string per line and a vector per payload. With 100 subscribers flat out the bench, not the server,
//! sets the pace, and it spent a quarter of its time in `malloc` and `free` for redis against a few
//! percent for group's own client: the servers were measured at different loads. Read this way, a
//! redis or nats message costs the bench no allocation of its own.

use std::ops::Range;

/// Largest message the bench reads from a peer: a bound on what a confused peer can make it buffer.
const MAX_MESSAGE: usize = 16 << 20;
/// Longest line the bench reads from a peer.
const MAX_LINE: usize = 64 * 1024;

/// The most bulk strings a redis reply the bench reads may hold: pub/sub's messages hold three.
const MAX_ITEMS: usize = 3;

/// Where the bulk strings of one whole redis reply are, in order.
#[derive(Debug, Default, PartialEq)]
pub struct Resp {
    items: [Range<usize>; MAX_ITEMS],
    count: usize,
}

impl Resp {
    /// Where its `i`th bulk string is.
    pub fn item(&self, i: usize) -> Option<Range<usize>> {
        self.items.get(..self.count)?.get(i).cloned()
    }
}

/// One whole nats message or line at the front of the buffer.
#[derive(Debug, PartialEq)]
pub enum Nats {
    /// A `MSG`: where its payload is.
    Msg(Range<usize>),
    /// Any other line (`PING`, `+OK`, `-ERR ...`): where its text is, without CRLF.
    Line(Range<usize>),
}

/// The line starting at `at`: where its text is (without CR LF), and where the next line starts.
fn line_at(buf: &[u8], at: usize) -> Result<Option<(Range<usize>, usize)>, String> {
    let rest = buf.get(at..).unwrap_or_default();
    let Some(lf) = rest.iter().position(|&b| b == b'\n') else {
        if rest.len() > MAX_LINE {
            return Err(format!("a line longer than {MAX_LINE} bytes"));
        }
        return Ok(None);
    };
    if lf > MAX_LINE {
        return Err(format!("a line longer than {MAX_LINE} bytes"));
    }
    let end = at + lf;
    let text_end = if lf > 0 && buf.get(end - 1) == Some(&b'\r') {
        end - 1
    } else {
        end
    };
    Ok(Some((at..text_end, end + 1)))
}

/// The first line of `buf`: where its text is (without CR LF), and its length.
pub fn first_line(buf: &[u8]) -> Result<Option<(Range<usize>, usize)>, String> {
    line_at(buf, 0)
}

fn text(buf: &[u8], range: Range<usize>) -> &[u8] {
    buf.get(range).unwrap_or_default()
}

/// A length from a peer: a decimal of at most [`MAX_MESSAGE`].
fn parse_len(digits: &[u8]) -> Result<usize, String> {
    std::str::from_utf8(digits)
        .ok()
        .and_then(|d| d.parse::<usize>().ok())
        .filter(|n| *n <= MAX_MESSAGE)
        .ok_or_else(|| format!("bad length {:?}", String::from_utf8_lossy(digits)))
}

/// The bulk string of `len_digits` bytes (what followed its `$`) whose bytes start at `next`: where
/// they are and where what follows starts; `None` when it has not all arrived.
fn bulk_at(
    buf: &[u8],
    len_digits: &[u8],
    next: usize,
) -> Result<Option<(Range<usize>, usize)>, String> {
    let end = next + parse_len(len_digits)?;
    match buf.get(end..end + 2) {
        None => Ok(None),
        Some(b"\r\n") => Ok(Some((next..end, end + 2))),
        Some(_) => Err("a bulk string not followed by CRLF".into()),
    }
}

/// One whole redis reply at the front of `buf`: an array of bulk strings, integers and simple strings
/// (one level, as pub/sub sends), one bulk string, an integer or a simple string. An error reply, or
/// anything else, is an error naming it. With the reply, its length.
pub fn resp_at(buf: &[u8]) -> Result<Option<(Resp, usize)>, String> {
    let Some((head, mut at)) = line_at(buf, 0)? else {
        return Ok(None);
    };
    let head = text(buf, head);
    let mut resp = Resp::default();
    let push = |resp: &mut Resp, range: Range<usize>| {
        if let Some(slot) = resp.items.get_mut(resp.count) {
            *slot = range;
            resp.count += 1;
        }
    };
    match head.split_first() {
        Some((b'*', n)) => {
            let count = parse_len(n)?;
            if count > MAX_ITEMS {
                return Err(format!(
                    "an array of {count} items (the bench expects at most {MAX_ITEMS})"
                ));
            }
            for _ in 0..count {
                let Some((line, next)) = line_at(buf, at)? else {
                    return Ok(None);
                };
                let item = text(buf, line);
                match item.split_first() {
                    Some((b'$', n)) => {
                        let Some((range, after)) = bulk_at(buf, n, next)? else {
                            return Ok(None);
                        };
                        push(&mut resp, range);
                        at = after;
                    }
                    Some((b':' | b'+', _)) => at = next,
                    _ => {
                        let item = String::from_utf8_lossy(item);
                        return Err(format!("unexpected {item:?} in an array"));
                    }
                }
            }
        }
        Some((b'$', n)) => {
            let Some((range, after)) = bulk_at(buf, n, at)? else {
                return Ok(None);
            };
            push(&mut resp, range);
            at = after;
        }
        Some((b':' | b'+', _)) => {}
        _ => return Err(String::from_utf8_lossy(head).into_owned()),
    }
    Ok(Some((resp, at)))
}

/// One whole nats message or line at the front of `buf`, and its length.
pub fn nats_at(buf: &[u8]) -> Result<Option<(Nats, usize)>, String> {
    let Some((line, next)) = line_at(buf, 0)? else {
        return Ok(None);
    };
    let Some(header) = text(buf, line.clone()).strip_prefix(b"MSG ") else {
        return Ok(Some((Nats::Line(line), next)));
    };
    // MSG <subject> <sid> [reply-to] <#bytes>
    let len = header
        .rsplit(|&b| b == b' ')
        .next()
        .map(parse_len)
        .and_then(Result::ok)
        .ok_or_else(|| {
            let line = String::from_utf8_lossy(text(buf, line.clone()));
            format!("bad MSG line {line:?}")
        })?;
    let end = next + len;
    match buf.get(end..end + 2) {
        None => Ok(None),
        Some(_) => Ok(Some((Nats::Msg(next..end), end + 2))),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    const MESSAGE: &[u8] = b"*3\r\n$7\r\nmessage\r\n$8\r\nbench-g0\r\n$5\r\nhello\r\n";

    #[test]
    fn a_pub_sub_message_is_found_whole_and_not_before() {
        let (resp, len) = resp_at(MESSAGE).unwrap().unwrap();
        assert_eq!(len, MESSAGE.len());
        assert_eq!(&MESSAGE[resp.item(0).unwrap()], b"message");
        assert_eq!(&MESSAGE[resp.item(2).unwrap()], b"hello");
        assert_eq!(resp.item(3), None);
        for cut in 0..MESSAGE.len() {
            assert_eq!(resp_at(&MESSAGE[..cut]).unwrap(), None, "cut at {cut}");
        }
        let mut two = MESSAGE.to_vec();
        two.extend_from_slice(b":1\r\n");
        assert_eq!(resp_at(&two).unwrap().unwrap().1, MESSAGE.len());
    }

    #[test]
    fn subscribe_confirmations_integers_and_errors() {
        let confirm = b"*3\r\n$9\r\nsubscribe\r\n$2\r\ng0\r\n:1\r\n";
        let (resp, len) = resp_at(confirm).unwrap().unwrap();
        assert_eq!((len, resp.item(1)), (confirm.len(), Some(23..25)));
        assert_eq!(resp.item(2), None, "an integer is no bulk string");
        assert_eq!(resp_at(b":42\r\n").unwrap().unwrap().1, 5);
        assert_eq!(
            resp_at(b"-ERR unknown\r\n").unwrap_err(),
            "-ERR unknown",
            "an error reply is an error naming it"
        );
        assert!(resp_at(b"*4\r\n").is_err(), "more items than pub/sub sends");
        assert!(resp_at(b"$-1\r\n").is_err());
        assert!(resp_at(b"$99999999999\r\n").is_err());
        assert!(resp_at(b"$2\r\nhiXX").is_err(), "no CRLF after the bulk");
        assert!(
            resp_at(&vec![b'+'; MAX_LINE + 2]).is_err(),
            "a line without end"
        );
    }

    #[test]
    fn nats_messages_and_lines() {
        let msg = b"MSG bench-g0 1 5\r\nhello\r\nPING\r\n";
        let (item, len) = nats_at(msg).unwrap().unwrap();
        assert_eq!((item, len), (Nats::Msg(18..23), 25));
        assert_eq!(nats_at(&msg[len..]).unwrap(), Some((Nats::Line(0..4), 6)));
        for cut in 0..len {
            assert_eq!(nats_at(&msg[..cut]).unwrap(), None, "cut at {cut}");
        }
        let reply = b"MSG s 1 inbox 2\r\nhi\r\n";
        assert_eq!(nats_at(reply).unwrap(), Some((Nats::Msg(17..19), 21)));
        assert!(nats_at(b"MSG s 1 x\r\n").is_err());
        assert_eq!(nats_at(b"PONG\n").unwrap(), Some((Nats::Line(0..4), 5)));
        assert_eq!(first_line(b"INFO {}\r\nX").unwrap(), Some((0..7, 9)));
        assert_eq!(first_line(b"INFO {").unwrap(), None);
    }

    #[test]
    fn lengths_are_bounded_decimals() {
        assert_eq!(parse_len(b"17"), Ok(17));
        assert!(parse_len(b"-1").is_err());
        assert!(parse_len(b"").is_err());
        assert!(parse_len(b"99999999999").is_err(), "more than MAX_MESSAGE");
    }
}
