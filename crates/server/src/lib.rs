//! Lantern's OpenAI-compatible HTTP server (axum).
//!
//! Layout, following one request:
//! - [`routes`]: [`routes::router`] builds the routes over a shared [`AppState`]; the model
//!   may still be loading (`/health` answers 503 until [`AppState::ready`] is set). One
//!   module per endpoint family: `chat`, `completions` (both through the shared `output`
//!   path: submit, merge, per-choice accumulator, JSON body or SSE chunks), `tokenize`,
//!   `admin` (models, LoRA load/unload) and `health` (health, version, metrics).
//! - [`protocol`]: the wire format. Request bodies are parsed with the path of any type
//!   error (a 400 names the field); every response body and stream chunk is a typed
//!   `Serialize` struct in [`protocol::response`].
//! - [`validate`]: request fields into engine parameters ([`lantern_engine::GenerationParams`]);
//!   the ranges are checked by the engine's one validator ([`lantern_engine::validation`]).
//! - [`generate`]: the [`Generate`] trait, all the routes ask of the engine. Implemented for
//!   [`lantern_engine::EngineHandle`] (the default type parameter of [`AppState`] and
//!   [`Ready`]); tests implement it with scripted events and drive the router in-process.
//! - [`error::ApiError`] is the one error-to-HTTP mapping; only this crate knows JSON and
//!   HTTP status codes.
//! - [`tools`]: `tools` / `tool_choice` checked as vLLM checks them, and the JSON schema a
//!   forced choice constrains the output to; [`assistant`]: the output split into reasoning,
//!   content and tool calls (whole or streamed), with the parsers of `lantern-parsers`.
//! - [`metrics`]: Prometheus exposition (`prometheus-client`); [`chat_template`]: the
//!   model's Jinja chat template.
//! - [`serve`] runs the server with graceful shutdown: stop accepting, let in-flight
//!   requests finish up to a deadline, then abort them through the engine.

pub mod assistant;
pub mod chat_template;
pub mod defaults;
pub mod error;
pub mod generate;
pub mod metrics;
pub mod protocol;
pub mod routes;
pub mod tools;
pub mod validate;

pub use generate::Generate;
pub use routes::{router, AppState, Ready, ServerConfig};

use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// Serves until `shutdown` resolves, then drains: in-flight requests get
/// `config.shutdown_timeout` to finish before the engine aborts them.
pub async fn serve<G: Generate>(
    listener: tokio::net::TcpListener,
    state: Arc<AppState<G>>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = router(state.clone());
    let st = state.clone();
    let signal = async move {
        shutdown.await;
        tracing::info!("shutting down: no new requests; draining in-flight ones");
        st.shutting_down.store(true, Ordering::Relaxed);
        let deadline = st.config.shutdown_timeout;
        let st2 = st.clone();
        tokio::spawn(async move {
            tokio::time::sleep(deadline).await;
            if let Some(r) = st2.ready.get() {
                tracing::warn!("shutdown deadline reached: aborting in-flight requests");
                r.engine.shutdown();
            }
        });
    };
    use axum::serve::ListenerExt;
    // Token streams are many small writes: disable Nagle so a chunk is not held back
    // waiting for the client's delayed ACK on kept-alive connections.
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
    });
    axum::serve(listener, app)
        .with_graceful_shutdown(signal)
        .await?;
    if let Some(r) = state.ready.get() {
        r.engine.shutdown();
    }
    Ok(())
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
