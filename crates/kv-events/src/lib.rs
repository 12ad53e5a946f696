//! KV-cache events for Kubernetes inference routers (llm-d's precise prefix-cache scorer,
//! NVIDIA Dynamo's KV router), published as vLLM publishes them.
//!
//! * [`config`]: `--kv-events-config`, vLLM's `KVEventsConfig` JSON (same keys, same
//!   defaults, unknown keys and unsupported values rejected at start-up), and the
//!   [`Layout`] of each event (`--kv-events-layout`).
//! * [`wire`]: the published events ([`EventBatch`], [`KvEvent`]) and their MessagePack
//!   encoding, byte-identical to vLLM 0.34's msgspec encoding (golden bytes in
//!   `tests/golden.json`, made by `scripts/kv_events_golden.py` with vLLM's own classes).
//! * [`publisher`]: [`KvEventPublisher`], a bounded queue to a thread that owns a ZeroMQ
//!   PUB socket (and vLLM's optional ROUTER replay socket); the engine never waits on it.
//!
//! The engine (`lantern-engine`) turns the scheduler's block-pool events into [`KvEvent`]s
//! once per step and hands them to [`KvEventPublisher::publish`].

pub mod config;
pub mod publisher;
pub mod wire;

pub use config::{ConfigError, KvEventsConfig, Layout, PublisherKind, PublisherSettings};
pub use publisher::{KvEventPublisher, PublishError, PublisherError};
pub use wire::{
    encode_batch, BlockRemoved, BlockStored, EncodeError, EventBatch, KvEvent, FULL_ATTENTION,
    MEDIUM_GPU,
};
