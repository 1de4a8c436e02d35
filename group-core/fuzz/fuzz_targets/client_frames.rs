//! Arbitrary bytes from a client: split into frames, parse each request, and feed the whole stream
//! through a live node. Nothing may panic, and every transmit must be one well-formed server frame.
#![no_main]

use bytes::BytesMut;
use group_core::proto::{FrameError, decode_client_frame, decode_server_frame};
use group_core::{ConnId, Handled, Input, Instant, Node, NodeConfig, Output};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut config = NodeConfig::default();
    config.limits.max_payload = 4096;
    config.limits.max_merge_bytes = 4096;
    let Ok(mut node) = Node::new(config, Instant::ZERO) else { return };
    let conn = ConnId(1);
    if node.handle(Input::Connect(conn), Instant::ZERO) != Handled::Connect(Ok(())) {
        return;
    }
    let mut buf = BytesMut::from(data);
    let mut now = Instant::ZERO;
    loop {
        now = Instant::from_nanos(now.as_nanos() + 1_000_000);
        match decode_client_frame(&mut buf, 4096) {
            Ok(Some(frame)) => {
                let _ = node.handle(Input::Frame { conn, frame }, now);
            }
            Ok(None) => break,
            Err(FrameError::TooLarge { ver, cmd, len, .. }) => {
                let _ = node.handle(Input::Oversized { conn, ver, cmd, len }, now);
                break;
            }
            Err(_) => break,
        }
        while let Some(output) = node.poll() {
            let Output::Transmit(t) = output else { continue };
            let mut out = BytesMut::from(&t.frame[..]);
            let decoded = decode_server_frame(&mut out, u32::MAX);
            assert!(matches!(decoded, Ok(Some(_))) && out.is_empty(), "node sent a malformed frame");
        }
    }
    let _ = node.handle(Input::Timeout, Instant::from_nanos(u64::MAX / 2));
});
