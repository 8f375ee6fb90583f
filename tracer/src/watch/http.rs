//! The HTTP side of `tracer watch` (axum on the run's tokio runtime): `GET /metrics`,
//! `GET /healthz`, `GET /readyz`, `POST /dump`. `/dump` is an action: it answers clients on
//! this host, or anyone with the token of `--dump-token-file`; each request only queues a
//! dump (the watch loop rate-limits and writes it), so a request's work is bounded.
use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use anyhow::{Context as _, Result};
use axum::{
    Json, Router,
    extract::{ConnectInfo, State},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use tokio::sync::{mpsc, oneshot};

use super::metrics::Metrics;

/// What `/dump` asks the watch loop; the reply is the dump's path or why there is none.
pub struct DumpRequest {
    pub reply: oneshot::Sender<Result<std::path::PathBuf, (u16, String)>>,
}

#[derive(Clone)]
pub struct Shared {
    pub metrics: Arc<Mutex<Metrics>>,
    pub ready: Arc<std::sync::atomic::AtomicBool>,
    pub dumps: mpsc::Sender<DumpRequest>,
    pub token: Option<Arc<str>>,
}

/// `--listen`: None for `none`; binding now (before anything is attached) makes a port in
/// use one clear error.
pub fn bind(listen: &str) -> Result<Option<std::net::TcpListener>> {
    if listen == "none" {
        return Ok(None);
    }
    let addr: SocketAddr = listen.parse().with_context(|| format!("--listen {listen:?}: expected ADDR:PORT (e.g. 127.0.0.1:9477, [::1]:9477) or none"))?;
    let l = std::net::TcpListener::bind(addr).with_context(|| format!("--listen {listen}: cannot listen there (is another tracer watch or service using the port?); choose another --listen"))?;
    l.set_nonblocking(true)?;
    Ok(Some(l))
}

/// Serves until the runtime ends.
pub fn spawn(listener: std::net::TcpListener, shared: Shared) -> Result<()> {
    let listener = tokio::net::TcpListener::from_std(listener)?;
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/dump", post(dump))
        .with_state(shared);
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>()).await {
            eprintln!("tracer: error: the HTTP server stopped: {e}; metrics are no longer served, watching goes on");
        }
    });
    Ok(())
}

async fn metrics(State(s): State<Shared>, headers: HeaderMap) -> Response {
    let openmetrics = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).is_some_and(|a| a.contains("application/openmetrics-text"));
    let body = s.metrics.lock().unwrap_or_else(std::sync::PoisonError::into_inner).encode(openmetrics);
    match body {
        Ok(text) => {
            let ct = if openmetrics { "application/openmetrics-text; version=1.0.0; charset=utf-8" } else { prometheus_client::encoding::prometheus_text::CONTENT_TYPE };
            ([(header::CONTENT_TYPE, ct)], text).into_response()
        }
        Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, "cannot encode the metrics\n").into_response(),
    }
}

async fn readyz(State(s): State<Shared>) -> Response {
    if s.ready.load(std::sync::atomic::Ordering::Acquire) {
        "ready\n".into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "starting\n").into_response()
    }
}

async fn dump(State(s): State<Shared>, ConnectInfo(peer): ConnectInfo<SocketAddr>, headers: HeaderMap) -> Response {
    let bearer = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    let allowed = match &s.token {
        Some(t) => bearer.is_some_and(|b| constant_time_eq(b.trim().as_bytes(), t.as_bytes())),
        None => peer.ip().is_loopback(),
    };
    if !allowed {
        let why = if s.token.is_some() { "POST /dump needs `Authorization: Bearer TOKEN` (the token of --dump-token-file)" } else { "POST /dump is only answered on this host (give --dump-token-file to allow others)" };
        return error(StatusCode::FORBIDDEN, why);
    }
    let (tx, rx) = oneshot::channel();
    if s.dumps.try_send(DumpRequest { reply: tx }).is_err() {
        return error(StatusCode::SERVICE_UNAVAILABLE, "too many dump requests queued; try again");
    }
    match rx.await {
        Ok(Ok(path)) => (StatusCode::ACCEPTED, Json(serde_json::json!({ "path": path }))).into_response(),
        Ok(Err((code, why))) => error(StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR), &why),
        Err(_) => error(StatusCode::SERVICE_UNAVAILABLE, "the tracer is stopping"),
    }
}

fn error(code: StatusCode, why: &str) -> Response {
    (code, Json(serde_json::json!({ "error": why }))).into_response()
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
