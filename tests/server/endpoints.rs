//! Basic endpoints: models, health, version.

use super::common::*;
use serde_json::json;

#[test]
fn models_lists_the_served_model() {
    let s = shared();
    let r = get(&s.url("/v1/models")).unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    assert_eq!(v["object"], "list");
    let data = v["data"].as_array().unwrap();
    assert_eq!(data.len(), 1, "{v}");
    let m = &data[0];
    assert_eq!(m["id"], NAME);
    assert_eq!(m["object"], "model");
    let created = m["created"].as_u64().expect("created is an integer");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(
        created > now - 3600 && created <= now + 5,
        "created {created}"
    );
    assert_eq!(m["owned_by"], "lantern");
    assert_eq!(m["root"], json!(model_dir().display().to_string()));
    assert_eq!(m["max_model_len"], 512);
}

#[test]
fn health_and_version() {
    let s = shared();
    let r = get(&s.url("/health")).unwrap();
    assert_eq!(r.status, 200);
    let r = get(&s.url("/version")).unwrap();
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
}
