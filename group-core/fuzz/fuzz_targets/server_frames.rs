//! Arbitrary bytes from a server, as our client decodes them: frames, then every push and error payload.
//! A 113 push read in place (`BroadcastView`) must give exactly what the owned parser gives.
#![no_main]

use bytes::BytesMut;
use group_core::proto::{
    BroadcastView, decode_server_frame, parse_broadcast_push, parse_error_payload, parse_member_push,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut buf = BytesMut::from(data);
    while let Ok(Some(frame)) = decode_server_frame(&mut buf, 1 << 16) {
        let _ = parse_member_push(&frame.payload);
        let owned = parse_broadcast_push(&frame.payload).map(|(group, entries)| {
            let entries: Vec<(String, Vec<u8>)> =
                entries.into_iter().map(|e| (e.uid, e.message.to_vec())).collect();
            (group.as_bytes().to_vec(), entries)
        });
        let viewed = BroadcastView::parse(&frame.payload).and_then(|view| {
            let group = view.group().to_vec();
            let entries: Result<Vec<(String, Vec<u8>)>, _> = view
                .map(|e| e.map(|e| (e.uid.to_string(), e.message.to_vec())))
                .collect();
            entries.map(|entries| (group, entries))
        });
        assert_eq!(owned, viewed, "the two readers of a 113 push disagree");
        let _ = parse_error_payload(&frame.payload);
    }
});
