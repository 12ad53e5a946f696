//! `--kv-events-config`: vLLM's `KVEventsConfig` (`vllm/config/kv_events.py`), same JSON keys
//! and defaults, checked once at start-up.

use serde::Deserialize;

/// vLLM's default `endpoint`.
pub const DEFAULT_ENDPOINT: &str = "tcp://*:5557";
/// vLLM's default `buffer_steps`.
pub const DEFAULT_BUFFER_STEPS: usize = 10_000;
/// vLLM's default `hwm`.
pub const DEFAULT_HWM: u32 = 100_000;
/// vLLM's default `max_queue_size`.
pub const DEFAULT_MAX_QUEUE_SIZE: usize = 100_000;

/// `publisher`: where events go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PublisherKind {
    /// Nowhere: events are not even collected.
    Null,
    /// A ZeroMQ PUB socket.
    Zmq,
}

/// How each event is laid out inside a batch (`--kv-events-layout`). The batch itself is
/// always the array `[ts, events, data_parallel_rank]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Layout {
    /// A tagged map `{"type": "BlockStored", "block_hashes": [...], ...}` with fields equal to
    /// their defaults left out: what vLLM publishes since it dropped `array_like` from the
    /// event structs (vllm-project/vllm#42892, June 2026; vLLM 0.34 does this).
    #[default]
    Map,
    /// A tagged array `["BlockStored", block_hashes, parent_block_hash, ...]` with every field
    /// of the last array-encoded schema (through `kv_cache_spec_sliding_window`): what older
    /// vLLM releases published, and all that older consumers (llm-d-kv-cache up to v0.8)
    /// decode.
    Array,
}

/// The JSON of `--kv-events-config`, exactly vLLM's `KVEventsConfig`: unknown keys are
/// rejected (vLLM's config classes forbid extra fields).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KvEventsConfig {
    /// Publish KV-cache events (default false).
    #[serde(default)]
    pub enable_kv_cache_events: bool,
    /// `"zmq"` or `"null"`; unset means `"zmq"` when events are enabled, else `"null"`.
    #[serde(default)]
    pub publisher: Option<PublisherKind>,
    /// PUB socket address: bound when it has a wildcard (`tcp://*:5557`, `tcp://[::]:5557`)
    /// or is `ipc://`, connected to otherwise (e.g. a broker's `tcp://host:5557`).
    #[serde(default = "default_endpoint")]
    pub endpoint: String,
    /// Optional ROUTER address (always bound) where subscribers ask for missed batches by
    /// sending the first sequence number they want (8 bytes, big-endian).
    #[serde(default)]
    pub replay_endpoint: Option<String>,
    /// Batches kept for replay.
    #[serde(default = "default_buffer_steps")]
    pub buffer_steps: usize,
    /// ZeroMQ send high-water mark of the PUB socket (messages queued per subscriber before
    /// new ones are dropped for it); 0 means no limit.
    #[serde(default = "default_hwm")]
    pub hwm: u32,
    /// Batches queued between the engine thread and the publisher thread; when it is full
    /// the engine drops the step's batch and counts it (`lantern_kv_events_dropped_total`).
    #[serde(default = "default_max_queue_size")]
    pub max_queue_size: usize,
    /// First frame of every message; subscribers filter on its prefix. Taken literally
    /// (llm-d's precise prefix-cache scorer reads `kv@<pod>@<model>`).
    #[serde(default)]
    pub topic: String,
}

fn default_endpoint() -> String {
    DEFAULT_ENDPOINT.to_string()
}
fn default_buffer_steps() -> usize {
    DEFAULT_BUFFER_STEPS
}
fn default_hwm() -> u32 {
    DEFAULT_HWM
}
fn default_max_queue_size() -> usize {
    DEFAULT_MAX_QUEUE_SIZE
}

impl Default for KvEventsConfig {
    fn default() -> Self {
        Self {
            enable_kv_cache_events: false,
            publisher: None,
            endpoint: default_endpoint(),
            replay_endpoint: None,
            buffer_steps: DEFAULT_BUFFER_STEPS,
            hwm: DEFAULT_HWM,
            max_queue_size: DEFAULT_MAX_QUEUE_SIZE,
            topic: String::new(),
        }
    }
}

/// A `--kv-events-config` that cannot be used, named by its key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("--kv-events-config is not a valid KVEventsConfig JSON object: {0}")]
    Json(#[from] serde_json::Error),
    #[error(
        "--kv-events-config: {key} `{endpoint}` is not supported: use tcp://HOST:PORT, tcp://*:PORT or ipc://PATH{why}"
    )]
    Endpoint {
        key: &'static str,
        endpoint: String,
        why: &'static str,
    },
    #[error("--kv-events-config: hwm is {0}, above ZeroMQ's limit of 2147483647")]
    Hwm(u32),
    #[error(
        "--kv-events-config: max_queue_size must be at least 1 (Lantern's queue is always bounded; 0 means unbounded in vLLM)"
    )]
    ZeroQueue,
    #[error("--kv-events-config: buffer_steps must be at least 1 when replay_endpoint is set")]
    ZeroReplayBuffer,
}

/// What the publisher thread needs: a checked, enabled ZeroMQ configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublisherSettings {
    pub endpoint: String,
    pub replay_endpoint: Option<String>,
    pub buffer_steps: usize,
    pub hwm: i32,
    pub max_queue_size: usize,
    pub topic: String,
    pub layout: Layout,
}

impl KvEventsConfig {
    /// Parses the JSON given to `--kv-events-config`.
    pub fn from_json(s: &str) -> Result<Self, ConfigError> {
        Ok(serde_json::from_str(s)?)
    }

    /// The resolved `publisher` (vLLM's `__post_init__`).
    pub fn publisher(&self) -> PublisherKind {
        self.publisher.unwrap_or(if self.enable_kv_cache_events {
            PublisherKind::Zmq
        } else {
            PublisherKind::Null
        })
    }

    /// Checks every value and returns the publisher's settings, or `None` when events are
    /// off (`enable_kv_cache_events` false, or `publisher: "null"`, as in vLLM).
    pub fn resolve(&self, layout: Layout) -> Result<Option<PublisherSettings>, ConfigError> {
        check_endpoint("endpoint", &self.endpoint)?;
        if let Some(r) = &self.replay_endpoint {
            check_endpoint("replay_endpoint", r)?;
            if self.buffer_steps == 0 {
                return Err(ConfigError::ZeroReplayBuffer);
            }
        }
        let hwm = i32::try_from(self.hwm).map_err(|_| ConfigError::Hwm(self.hwm))?;
        if self.max_queue_size == 0 {
            return Err(ConfigError::ZeroQueue);
        }
        if !self.enable_kv_cache_events || self.publisher() == PublisherKind::Null {
            return Ok(None);
        }
        Ok(Some(PublisherSettings {
            endpoint: self.endpoint.clone(),
            replay_endpoint: self.replay_endpoint.clone(),
            buffer_steps: self.buffer_steps,
            hwm,
            max_queue_size: self.max_queue_size,
            topic: self.topic.clone(),
            layout,
        }))
    }
}

fn check_endpoint(key: &'static str, endpoint: &str) -> Result<(), ConfigError> {
    let err = |why| ConfigError::Endpoint {
        key,
        endpoint: endpoint.to_string(),
        why,
    };
    if let Some(rest) = endpoint.strip_prefix("tcp://") {
        // HOST:PORT, the host possibly `*` or a bracketed IPv6 address.
        match rest.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => Ok(()),
            _ => Err(err(" (a tcp endpoint needs HOST:PORT)")),
        }
    } else if endpoint
        .strip_prefix("ipc://")
        .is_some_and(|p| !p.is_empty())
    {
        Ok(())
    } else if endpoint.starts_with("inproc://") {
        Err(err(
            " (inproc:// only reaches subscribers inside the serving process, and Lantern has none)",
        ))
    } else {
        Err(err(""))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_vllms() {
        let c = KvEventsConfig::from_json("{}").unwrap();
        assert_eq!(c, KvEventsConfig::default());
        assert_eq!(c.endpoint, "tcp://*:5557");
        assert_eq!(c.publisher(), PublisherKind::Null);
        assert_eq!(c.resolve(Layout::Map).unwrap(), None);
    }

    #[test]
    fn the_issue_example_enables_a_zmq_publisher() {
        let c = KvEventsConfig::from_json(
            r#"{"enable_kv_cache_events":true,"publisher":"zmq","endpoint":"tcp://*:5557","topic":"kv@HOST@MODEL"}"#,
        )
        .unwrap();
        let s = c.resolve(Layout::Map).unwrap().unwrap();
        assert_eq!(s.topic, "kv@HOST@MODEL");
        assert_eq!(s.hwm, 100_000);
        assert_eq!(s.max_queue_size, 100_000);
        assert_eq!(s.buffer_steps, 10_000);
        assert_eq!(s.replay_endpoint, None);
        // `publisher` unset means zmq once enabled.
        let c = KvEventsConfig::from_json(r#"{"enable_kv_cache_events":true}"#).unwrap();
        assert_eq!(c.publisher(), PublisherKind::Zmq);
        assert!(c.resolve(Layout::Array).unwrap().is_some());
    }

    #[test]
    fn null_publisher_or_disabled_means_no_events() {
        let c = KvEventsConfig::from_json(r#"{"enable_kv_cache_events":true,"publisher":"null"}"#)
            .unwrap();
        assert_eq!(c.resolve(Layout::Map).unwrap(), None);
        let c = KvEventsConfig::from_json(r#"{"publisher":"zmq"}"#).unwrap();
        assert_eq!(c.resolve(Layout::Map).unwrap(), None);
    }

    #[test]
    fn bad_values_are_named() {
        let e = |j: &str| {
            KvEventsConfig::from_json(j)
                .and_then(|c| c.resolve(Layout::Map))
                .unwrap_err()
                .to_string()
        };
        assert!(e(r#"{"enable_kv_cache_events":true,"publisher":"kafka"}"#)
            .contains("unknown variant `kafka`, expected `null` or `zmq`"));
        assert!(
            e(r#"{"enable_kv_cache_events":true,"toppic":"x"}"#).contains("unknown field `toppic`")
        );
        assert!(e(r#"{"hwm":-1}"#).contains("invalid value"));
        assert!(e(r#"{"hwm":4000000000}"#).contains("hwm is 4000000000"));
        assert!(e(r#"{"max_queue_size":0}"#).contains("max_queue_size must be at least 1"));
        assert!(e(r#"{"endpoint":"inproc://x"}"#).contains("inproc:// only reaches"));
        assert!(e(r#"{"endpoint":"udp://x:1"}"#).contains("endpoint `udp://x:1` is not supported"));
        assert!(e(r#"{"endpoint":"tcp://*"}"#).contains("needs HOST:PORT"));
        assert!(e(r#"{"replay_endpoint":"tcp://*:5558","buffer_steps":0}"#)
            .contains("buffer_steps must be at least 1"));
        assert!(e("[1]").contains("not a valid KVEventsConfig"));
        assert!(e(r#"{"enable_kv_cache_events":"yes"}"#).contains("expected a boolean"));
    }

    #[test]
    fn endpoints_vllm_accepts_are_accepted() {
        for ep in [
            "tcp://*:5557",
            "tcp://*:0",
            "tcp://127.0.0.1:5557",
            "tcp://[::1]:5557",
            "tcp://broker.local:5557",
            "ipc:///tmp/kv.sock",
        ] {
            let c = KvEventsConfig {
                enable_kv_cache_events: true,
                endpoint: ep.to_string(),
                replay_endpoint: Some(ep.to_string()),
                ..KvEventsConfig::default()
            };
            assert!(c.resolve(Layout::Map).unwrap().is_some(), "{ep}");
        }
    }
}
