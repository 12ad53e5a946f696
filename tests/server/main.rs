//! End-to-end tests of `lantern serve` over HTTP: the real binary, the tiny-llama fixture,
//! outputs compared with transformers (and peft) references, SSE streams, the engine's own
//! limits, metrics, disconnects, concurrency, graceful shutdown and LoRA adapters. The
//! HTTP layer's validation and error answers are tested in-process, without a model, in
//! `crates/server/tests/api`.
//!
//! One server (`shared()`) serves every test that does not need special flags or a quiet
//! engine; tests that need their own flags (API key, tiny queue, small body limit, shutdown)
//! or exact idle metrics start their own. Every server dies with the test process
//! (`PR_SET_PDEATHSIG`) and per-test servers are also killed on drop.
//!
//! Modules: `common` (fixtures, server processes, HTTP, SSE, Prometheus scraping),
//! `shapes` (response checks), then the tests by area.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod shapes;

mod chat;
mod completions;
mod endpoints;
mod errors;
mod lifecycle;
mod lora;
mod metrics;
