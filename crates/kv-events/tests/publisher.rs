//! The publisher thread against ZeroMQ subscribers on loopback: the three frames, sequence
//! numbers, and vLLM's replay protocol.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use lantern_kv_events::{
    encode_batch, BlockRemoved, EventBatch, KvEvent, KvEventPublisher, Layout, PublisherSettings,
    MEDIUM_GPU,
};
use std::time::{Duration, Instant};

fn batch(i: u64) -> EventBatch {
    EventBatch {
        ts: i as f64,
        events: vec![KvEvent::BlockRemoved(BlockRemoved {
            block_hashes: vec![i],
            medium: Some(MEDIUM_GPU),
            group_idx: Some(0),
        })],
        data_parallel_rank: Some(0),
    }
}

fn port(endpoint: &str) -> &str {
    endpoint.rsplit(':').next().unwrap()
}

#[test]
fn subscribers_get_three_frames_in_sequence_and_can_replay() {
    let mut p = KvEventPublisher::start(&PublisherSettings {
        endpoint: "tcp://*:0".into(),
        replay_endpoint: Some("tcp://*:0".into()),
        buffer_steps: 3,
        hwm: 1000,
        max_queue_size: 100,
        topic: "kv@pod@model".into(),
        layout: Layout::Map,
    })
    .unwrap();
    let ctx = zmq::Context::new();
    let sub = ctx.socket(zmq::SUB).unwrap();
    sub.set_subscribe(b"kv@").unwrap();
    sub.set_rcvtimeo(50).unwrap();
    sub.connect(&format!("tcp://127.0.0.1:{}", port(p.endpoint())))
        .unwrap();
    // PUB/SUB joins late: publish until the subscriber sees something.
    let t0 = Instant::now();
    let mut got = Vec::new();
    let mut i = 0;
    while got.is_empty() {
        assert!(t0.elapsed() < Duration::from_secs(10), "no message arrived");
        assert_eq!(p.publish(batch(i)).unwrap(), i);
        i += 1;
        if let Ok(m) = sub.recv_multipart(0) {
            got.push(m);
        }
    }
    let first: u64 = {
        let m = &got[0];
        assert_eq!(m.len(), 3);
        assert_eq!(m[0], b"kv@pod@model");
        u64::from_be_bytes(m[1].as_slice().try_into().unwrap())
    };
    for k in 0..5 {
        p.publish(batch(i + k)).unwrap();
    }
    let last = i + 4;
    let mut expect = first;
    for m in &got {
        assert_eq!(
            u64::from_be_bytes(m[1].as_slice().try_into().unwrap()),
            expect
        );
        assert_eq!(m[2], encode_batch(&batch(expect), Layout::Map).unwrap());
        expect += 1;
    }
    while expect <= last {
        let m = sub.recv_multipart(0).expect("the next batch");
        assert_eq!(m[0], b"kv@pod@model");
        assert_eq!(
            u64::from_be_bytes(m[1].as_slice().try_into().unwrap()),
            expect
        );
        assert_eq!(m[2], encode_batch(&batch(expect), Layout::Map).unwrap());
        expect += 1;
    }

    // Replay from `last - 1`: the buffer (3 batches) still has it; then the end marker.
    let dealer = ctx.socket(zmq::DEALER).unwrap();
    dealer.set_rcvtimeo(5000).unwrap();
    dealer
        .connect(&format!(
            "tcp://127.0.0.1:{}",
            port(p.replay_endpoint().unwrap())
        ))
        .unwrap();
    let start = (last - 1).to_be_bytes();
    dealer.send_multipart([&b""[..], &start[..]], 0).unwrap();
    for seq in [last - 1, last] {
        let m = dealer.recv_multipart(0).expect("a replayed batch");
        assert_eq!(m.len(), 4, "{m:?}");
        assert_eq!(m[1], b"kv@pod@model");
        assert_eq!(u64::from_be_bytes(m[2].as_slice().try_into().unwrap()), seq);
        assert_eq!(m[3], encode_batch(&batch(seq), Layout::Map).unwrap());
    }
    let end = dealer.recv_multipart(0).expect("the end marker");
    assert_eq!(
        end,
        vec![vec![], vec![], (-1i64).to_be_bytes().to_vec(), vec![]]
    );
    assert_eq!(p.dropped_events(), 0);
    p.shutdown();
}
