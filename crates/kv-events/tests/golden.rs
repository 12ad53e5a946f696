//! The encoder against golden bytes from vLLM's own msgspec classes
//! (`scripts/kv_events_golden.py` writes `golden.json`; the cases below mirror its list).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use lantern_kv_events::{
    encode_batch, BlockRemoved, BlockStored, EventBatch, KvEvent, Layout, FULL_ATTENTION,
    MEDIUM_GPU,
};

fn cases() -> Vec<(&'static str, f64, Vec<KvEvent>)> {
    let mut tokens = vec![1, 127, 128, 255, 256, 65535, 65536, 151643];
    tokens.extend(1000..1024);
    let stored_base = KvEvent::BlockStored(BlockStored {
        block_hashes: vec![0x0123_4567_89AB_CDEF, 0xFEDC_BA98_7654_3210],
        parent_block_hash: None,
        token_ids: tokens,
        block_size: 16,
        lora_id: None,
        medium: Some(MEDIUM_GPU),
        lora_name: None,
        extra_keys: Some(vec![None, None]),
        group_idx: Some(0),
        kv_cache_spec_kind: Some(FULL_ATTENTION),
        kv_cache_spec_sliding_window: None,
    });
    let name = "sql-adapter-with-a-name-longer-than-31-bytes".to_string();
    let stored_lora = KvEvent::BlockStored(BlockStored {
        block_hashes: vec![7, u64::MAX],
        parent_block_hash: Some(1 << 63),
        token_ids: vec![5, 6, 7, 8],
        block_size: 2,
        lora_id: Some(3),
        medium: Some(MEDIUM_GPU),
        lora_name: Some(name.clone()),
        extra_keys: Some(vec![
            Some(vec![name.clone(), "tenant-a".to_string()]),
            Some(vec![name]),
        ]),
        group_idx: Some(0),
        kv_cache_spec_kind: Some(FULL_ATTENTION),
        kv_cache_spec_sliding_window: None,
    });
    let removed = KvEvent::BlockRemoved(BlockRemoved {
        block_hashes: vec![0xFEDC_BA98_7654_3210],
        medium: Some(MEDIUM_GPU),
        group_idx: Some(0),
    });
    vec![
        (
            "stored_removed_cleared",
            1_765_000_000.25,
            vec![stored_base, removed.clone(), KvEvent::AllBlocksCleared],
        ),
        ("lora_and_salt", 1_765_000_001.5, vec![stored_lora]),
        ("removed_only", 0.0, vec![removed.clone(), removed]),
    ]
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[test]
fn encoding_matches_vllms_msgspec_bytes() {
    let golden: serde_json::Value =
        serde_json::from_str(include_str!("golden.json")).expect("golden.json");
    let golden = golden["cases"].as_array().expect("cases");
    let mut checked = 0;
    for (name, ts, events) in cases() {
        for (layout, layout_name) in [(Layout::Map, "map"), (Layout::Array, "array")] {
            let want = golden
                .iter()
                .find(|c| c["name"] == name && c["layout"] == layout_name)
                .and_then(|c| c["hex"].as_str())
                .unwrap_or_else(|| panic!("no golden case {name}/{layout_name}"));
            let batch = EventBatch {
                ts,
                events: events.clone(),
                data_parallel_rank: Some(0),
            };
            let got = hex(&encode_batch(&batch, layout).unwrap());
            assert_eq!(got, want, "{name} ({layout_name} layout)");
            checked += 1;
        }
    }
    assert_eq!(checked, golden.len(), "every golden case is checked");
}

#[test]
fn a_batch_without_rank_ends_with_nil() {
    let b = EventBatch {
        ts: 1.0,
        events: vec![],
        data_parallel_rank: None,
    };
    // msgspec: `[1.0, [], None]` (array-like structs keep trailing defaults).
    assert_eq!(
        hex(&encode_batch(&b, Layout::Map).unwrap()),
        "93cb3ff000000000000090c0"
    );
}
