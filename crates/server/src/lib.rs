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
pub mod prompt_cap;
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
/// `config.shutdown_timeout` to finish, then the engine aborts them and, a moment later,
/// connections still open (a client that stopped mid-request) are closed: the deadline is
/// hard. A second SIGINT/SIGTERM while draining returns at once.
///
/// Connections: at most `config.max_connections` at a time (more are closed on accept);
/// a request's headers must arrive within `config.header_read_timeout` (this also closes
/// idle keep-alive connections), its body within `config.body_read_timeout`.
pub async fn serve<G: Generate>(
    listener: tokio::net::TcpListener,
    state: Arc<AppState<G>>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioIo, TokioTimer};
    use hyper_util::server::graceful::GracefulShutdown;
    use hyper_util::service::TowerToHyperService;

    let app = router(state.clone());
    let cfg = state.config.clone();
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(tokio::sync::Semaphore::new(cfg.max_connections.max(1)));
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => {
                let (tcp, _) = match accepted {
                    Ok(c) => c,
                    Err(e) => {
                        // Out of file descriptors and the like: back off, keep serving.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                        continue;
                    }
                };
                let Ok(slot) = slots.clone().try_acquire_owned() else {
                    tracing::warn!(
                        max = cfg.max_connections,
                        "connection limit reached (--max-connections): closing a new connection"
                    );
                    continue;
                };
                // Token streams are many small writes: disable Nagle so a chunk is not held
                // back waiting for the client's delayed ACK on kept-alive connections.
                if let Err(e) = tcp.set_nodelay(true) {
                    tracing::debug!(error = %e, "cannot set TCP_NODELAY");
                }
                let mut http = hyper::server::conn::http1::Builder::new();
                http.timer(TokioTimer::new())
                    .header_read_timeout(cfg.header_read_timeout);
                let conn = http.serve_connection(TokioIo::new(tcp), TowerToHyperService::new(app.clone()));
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                    drop(slot);
                });
            }
        }
    }
    tracing::info!("shutting down: no new requests; draining in-flight ones");
    state.shutting_down.store(true, Ordering::Relaxed);
    drop(listener);
    let deadline = cfg.shutdown_timeout;
    let st = state.clone();
    let drained = tokio::select! {
        () = graceful.shutdown() => true,
        () = async {
            tokio::time::sleep(deadline).await;
            if let Some(r) = st.ready.get() {
                tracing::warn!("shutdown deadline reached: aborting in-flight requests");
                r.engine.shutdown();
            }
            // Aborted streams end at once; what is still open now is a client that stopped
            // sending (or reading): it does not get to keep the process alive.
            tokio::time::sleep(ABORT_GRACE).await;
        } => false,
        () = shutdown_signal() => {
            tracing::warn!("second shutdown signal: exiting now");
            false
        }
    };
    if !drained {
        tracing::warn!("closing the connections still open");
    }
    if let Some(r) = state.ready.get() {
        r.engine.shutdown();
    }
    Ok(())
}

/// After the shutdown deadline aborted the requests: how long their connections get to
/// send the end of the response before they are dropped.
const ABORT_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

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
