//! Lantern's OpenAI-compatible HTTP server (axum).
//!
//! - [`routes::router`] builds the routes over a shared [`AppState`]; the model may still be
//!   loading (`/health` answers 503 until [`AppState::ready`] is set).
//! - Requests are parsed into protocol types ([`protocol`]), validated into engine
//!   parameters ([`validate`]) and submitted to the engine; only this crate knows JSON and
//!   HTTP status codes, and [`error::ApiError`] is the one error-to-HTTP mapping.
//! - [`serve`] runs the server with graceful shutdown: stop accepting, let in-flight
//!   requests finish up to a deadline, then abort them through the engine.

pub mod chat_template;
pub mod error;
pub mod metrics;
pub mod protocol;
pub mod routes;
pub mod validate;

pub use routes::{router, AppState, Ready, ServerConfig};

use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// Serves until `shutdown` resolves, then drains: in-flight requests get
/// `config.shutdown_timeout` to finish before the engine aborts them.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<AppState>,
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
