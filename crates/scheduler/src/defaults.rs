//! Serving defaults, in one place: [`crate::SchedulerConfig::default`], the engine's
//! `EngineConfig::default` and the CLI flags (`lantern serve --max-num-seqs ...`) all read
//! them from here.

/// Most requests running at once (`--max-num-seqs`).
pub const MAX_NUM_SEQS: usize = 256;
/// Token budget of one step (`--max-num-batched-tokens`).
pub const MAX_NUM_BATCHED_TOKENS: usize = 2048;
/// Tokens per KV block (`--block-size`).
pub const BLOCK_SIZE: usize = 16;
/// Requests allowed to wait before `add_request` answers `QueueFull`
/// (`--max-waiting-requests`).
pub const MAX_WAITING_REQUESTS: usize = 1024;
/// Largest prefill chunk of one request per step; 0 = only the step budget
/// (`--long-prefill-token-threshold`).
pub const LONG_PREFILL_TOKEN_THRESHOLD: usize = 0;
