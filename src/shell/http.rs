//! The operator's HTTP endpoints: `/metrics`, `/healthz` and `/readyz`.
//!
//! - `/metrics`: [`Metrics`] as OpenMetrics text.
//! - `/healthz` (liveness): 200 whenever the process and its async runtime answer.
//! - `/readyz` (readiness): 200 when the process does its job: a standby waiting for the lease
//!   is ready (it must be, or a rolling update of the operator would never finish); a process
//!   that runs the controller is ready once its caches (Deployers and owned Deployments) are
//!   synced. 503 otherwise, e.g. while a new leader lists its objects.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use axum::{
    Router,
    extract::State,
    http::{StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use tokio::net::TcpListener;
use tracing::{info, warn};

use crate::{
    Error, Result,
    metrics::{CONTENT_TYPE, Metrics},
};

/// What `/readyz` answers from.
#[derive(Debug, Default)]
pub struct Health {
    standby: AtomicBool,
    synced: AtomicBool,
}

impl Health {
    /// Marks this process as a standby waiting for the lease (or not).
    pub fn set_standby(&self, standby: bool) {
        self.standby.store(standby, Ordering::SeqCst);
    }

    /// Marks the controller's caches as synced (or not).
    pub fn set_synced(&self, synced: bool) {
        self.synced.store(synced, Ordering::SeqCst);
    }

    /// Whether `/readyz` answers 200.
    pub fn ready(&self) -> bool {
        self.standby.load(Ordering::SeqCst) || self.synced.load(Ordering::SeqCst)
    }
}

#[derive(Clone)]
struct Shared {
    metrics: Arc<Metrics>,
    health: Arc<Health>,
}

/// Binds the listening socket (port 0 picks a free port) and logs `listening on <addr>` with the
/// address actually bound.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener> {
    let listener = TcpListener::bind(addr).await.map_err(|source| Error::Listen { addr, source })?;
    let bound = listener.local_addr().map_err(|source| Error::Listen { addr, source })?;
    info!("listening on {bound}");
    Ok(listener)
}

/// Serves the endpoints on `listener` for the life of the process.
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>, health: Arc<Health>) {
    let app = Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz_handler))
        .with_state(Shared { metrics, health });
    if let Err(err) = axum::serve(listener, app).await {
        warn!(%err, "the HTTP server stopped");
    }
}

async fn metrics_handler(State(shared): State<Shared>) -> Response {
    match shared.metrics.encode() {
        Ok(text) => ([(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response(),
        Err(err) => {
            (StatusCode::INTERNAL_SERVER_ERROR, format!("cannot encode the metrics: {err}\n")).into_response()
        }
    }
}

async fn readyz_handler(State(shared): State<Shared>) -> (StatusCode, &'static str) {
    if shared.health.ready() {
        (StatusCode::OK, "ok\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "caches not synced yet\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_standby_is_ready_and_a_controller_only_once_synced() {
        let health = Health::default();
        assert!(!health.ready(), "nothing started yet");
        health.set_standby(true);
        assert!(health.ready(), "a standby serves its purpose: waiting");
        health.set_standby(false);
        assert!(!health.ready(), "a new leader lists its objects first");
        health.set_synced(true);
        assert!(health.ready());
    }

    #[tokio::test]
    async fn the_endpoints_answer_over_http() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};

        let listener = bind("127.0.0.1:0".parse().expect("an address")).await.expect("binds");
        let addr = listener.local_addr().expect("bound");
        let health = Arc::new(Health::default());
        tokio::spawn(serve(listener, Arc::new(Metrics::new(false)), health.clone()));
        let get = |path: &'static str| async move {
            let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connects");
            let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
            stream.write_all(request.as_bytes()).await.expect("writes");
            let mut response = String::new();
            stream.read_to_string(&mut response).await.expect("reads");
            response
        };
        assert!(get("/healthz").await.starts_with("HTTP/1.1 200"));
        assert!(get("/readyz").await.starts_with("HTTP/1.1 503"));
        health.set_synced(true);
        assert!(get("/readyz").await.starts_with("HTTP/1.1 200"));
        let metrics = get("/metrics").await;
        assert!(metrics.starts_with("HTTP/1.1 200"), "{metrics}");
        assert!(metrics.to_lowercase().contains(&format!("content-type: {CONTENT_TYPE}")), "{metrics}");
        assert!(metrics.contains("deployer_reconciles_total 0"), "{metrics}");
        assert!(get("/nope").await.starts_with("HTTP/1.1 404"));
    }
}
