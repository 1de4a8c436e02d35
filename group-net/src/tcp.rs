//! TCP: frames back to back in the stream, TCP_NODELAY, one reader and one vectored writer per connection.

use std::collections::VecDeque;
use std::io::IoSlice;
use std::sync::Arc;

use bytes::{Buf, Bytes, BytesMut};
use group_core::ConnId;
use group_core::proto::{CLIENT_HEADER_LEN, ClientHeader, FrameError, decode_client_frame};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::CancellationToken;

use crate::conn::{Connection, Shared};
use crate::direct::Direct;
use crate::inbox::{LAST_WORDS_TIMEOUT, TransportKind, WriterEnd};
use crate::listener::Listeners;
use crate::tls::Stream;

/// Initial read buffer: small, so idle connections stay cheap; it grows to fit a frame being read.
const INITIAL_READ_BUFFER: usize = 1024;
/// Frames gathered from the queue before a write, at most (an entry holds one node turn's frames, so a
/// batch may pass it by one entry).
const MAX_BATCH: usize = 64;
/// Slices given to one vectored write at most: 4 KiB of stack for one poll (Linux takes up to 1024).
const MAX_SLICES: usize = 256;

/// Accepts TCP connections until `stop` fires.
pub(crate) async fn accept_loop(listener: TcpListener, listeners: Arc<Listeners>) {
    crate::listener::accept_streams(listener, listeners, "TCP", serve).await;
}

async fn serve(
    stream: TcpStream,
    conn: ConnId,
    shared: Arc<Shared>,
    _permit: OwnedSemaphorePermit,
) {
    let stream = match &shared.tls {
        None => Stream::Plain(stream),
        Some(tls) => match tls.accept(stream).await {
            Some(stream) => stream,
            None => return,
        },
    };
    let _open = shared.stats.opened(TransportKind::Tcp);
    match stream {
        Stream::Plain(tcp) => {
            let (reader, writer) = tcp.into_split();
            let direct = Direct::new(writer);
            let writer = direct.writer();
            let Ok((connection, end)) = Connection::open(conn, shared, Some(direct)).await else {
                return;
            };
            run(reader, writer, connection, end).await;
        }
        tls => {
            let Ok((connection, end)) = Connection::open(conn, shared, None).await else {
                return;
            };
            let (reader, writer) = tokio::io::split(tls);
            run(reader, writer, connection, end).await;
        }
    }
}

/// Runs an open connection: a writer task (on the server's runtime, or on a writer thread with
/// `server.writerThreads`), and reading here until the connection ends.
async fn run<R, W>(reader: R, writer: W, mut connection: Connection, end: WriterEnd)
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let kill = end.kill.clone();
    let writer_task = connection.spawn_writer(write_frames(writer, end));
    read_frames(reader, &mut connection, &kill).await;
    if !connection.finished() {
        connection.disconnected().await;
    }
    // The writer flushes what the node queued (a Bad frame, a Fin response), then closes.
    let _ = writer_task.await;
}

/// Reads frames until EOF, an error, a fatal frame, or the kill switch. The caller reports the disconnect
/// unless the connection finished on its own terms (Fin, oversized frame, refused Hello).
pub(crate) async fn read_frames<R: AsyncRead + Unpin>(
    mut reader: R,
    connection: &mut Connection,
    kill: &CancellationToken,
) {
    let max = connection.max_payload();
    let mut buf = BytesMut::with_capacity(INITIAL_READ_BUFFER);
    // The read buffer counts against maxBufferedBytes at its current size.
    let budget = connection.budget().clone();
    let mut held = budget.charge(buf.capacity());
    loop {
        loop {
            match decode_client_frame(&mut buf, max) {
                Ok(Some(frame)) => {
                    if connection.dispatch(frame).await.is_err() || connection.finished() {
                        return;
                    }
                }
                Ok(None) => break,
                Err(FrameError::TooLarge { ver, cmd, len, .. }) => {
                    let _ = connection.oversized(ver, cmd, len).await;
                    return;
                }
                Err(_) => return,
            }
        }
        reserve_for_next_frame(&mut buf, max);
        if buf.capacity() != held.bytes() {
            held = budget.charge(buf.capacity());
        }
        let read = tokio::select! {
            () = kill.cancelled() => return,
            read = reader.read_buf(&mut buf) => read,
        };
        if matches!(read, Ok(0) | Err(_)) {
            return; // EOF or reset: the caller reports the disconnect.
        }
    }
}

/// Makes room for the rest of the frame at the front of `buf` (its length is known once the header is in),
/// or for a small read when no frame has started.
fn reserve_for_next_frame(buf: &mut BytesMut, max_payload: u32) {
    let wanted = match ClientHeader::parse(buf, max_payload) {
        Ok(header) => CLIENT_HEADER_LEN + header.len as usize,
        Err(_) => buf.len() + INITIAL_READ_BUFFER,
    };
    if buf.capacity() < wanted {
        buf.reserve(wanted - buf.len());
    } else if buf.capacity() == buf.len() {
        buf.reserve(INITIAL_READ_BUFFER);
    }
}

/// Writes queued frames, batching what is ready into one vectored write, until the queue closes or the
/// kill switch fires. Then closes the socket and tells the reader. Cut by the node (a slow consumer), it
/// first tries, for at most [`LAST_WORDS_TIMEOUT`], to finish the frames it had started and send the
/// closing notice.
pub(crate) async fn write_frames<W: AsyncWrite + Unpin>(mut writer: W, end: WriterEnd) {
    let WriterEnd {
        mut queue,
        kill,
        last_words,
        direct,
    } = end;
    let mut batch: VecDeque<Bytes> = VecDeque::new();
    // The batch's frames count against the budgets until written.
    let mut charges = Vec::with_capacity(MAX_BATCH);
    loop {
        charges.clear();
        let first = tokio::select! {
            biased;
            () = kill.cancelled() => break,
            next = queue.recv() => match next {
                Some(outgoing) => outgoing,
                None => break,
            },
        };
        batch.extend(first.frames);
        charges.push(first.charge);
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(outgoing) => {
                    batch.extend(outgoing.frames);
                    charges.push(outgoing.charge);
                }
                Err(_) => break,
            }
        }
        let written = tokio::select! {
            biased;
            () = kill.cancelled() => break,
            written = write_all_vectored(&mut writer, &mut batch) => written,
        };
        if written.is_err() {
            break;
        }
        if let Some(direct) = &direct {
            direct.written(charges.len());
        }
    }
    if let Some(notice) = last_words.get() {
        // The batch holds what was not yet written, starting mid-frame perhaps: the notice goes after it.
        batch.push_back(notice.clone());
        let _ = tokio::time::timeout(
            LAST_WORDS_TIMEOUT,
            write_all_vectored(&mut writer, &mut batch),
        )
        .await;
    }
    let _ = writer.shutdown().await;
    kill.cancel();
}

async fn write_all_vectored<W: AsyncWrite + Unpin>(
    writer: &mut W,
    batch: &mut VecDeque<Bytes>,
) -> std::io::Result<()> {
    while !batch.is_empty() {
        // The slices live on the stack for one poll: no allocation per write, and the writer's future
        // does not carry them between polls.
        let mut written = std::future::poll_fn(|cx| {
            let mut slices = [IoSlice::new(&[]); MAX_SLICES];
            let mut count = 0;
            for (slot, frame) in slices.iter_mut().zip(batch.iter()) {
                *slot = IoSlice::new(frame);
                count += 1;
            }
            let slices = slices.get(..count).unwrap_or_default();
            std::pin::Pin::new(&mut *writer).poll_write_vectored(cx, slices)
        })
        .await?;
        if written == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        while let Some(front) = batch.front_mut() {
            if written < front.len() {
                front.advance(written);
                break;
            }
            written -= front.len();
            batch.pop_front();
        }
    }
    // TLS holds the last record until flushed; for plain TCP this does nothing.
    writer.flush().await
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use tokio::io::AsyncReadExt;

    /// More frames than one vectored write takes, into a pipe smaller than them: every byte arrives, in
    /// order, over many partial writes.
    #[tokio::test]
    async fn a_batch_larger_than_one_write_arrives_whole_and_in_order() {
        let frames: VecDeque<Bytes> = (0..MAX_SLICES * 3 + 7)
            .map(|n| Bytes::from(vec![u8::try_from(n % 251).unwrap(); 1 + n % 13]))
            .collect();
        let expected: Vec<u8> = frames.iter().flat_map(|f| f.iter().copied()).collect();
        let (mut writer, mut reader) = tokio::io::duplex(997);
        let reading = tokio::spawn(async move {
            let mut got = Vec::new();
            reader.read_to_end(&mut got).await.unwrap();
            got
        });
        let mut batch = frames;
        write_all_vectored(&mut writer, &mut batch).await.unwrap();
        assert!(batch.is_empty());
        drop(writer);
        assert_eq!(reading.await.unwrap(), expected);
    }
}
