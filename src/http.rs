//! The HTTP surface on the metrics port: /metrics (Prometheus text),
//! /healthz (the process is alive) and /readyz (partitions assigned and
//! brokers reachable; 503 otherwise).

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;

use crate::kafka::Health;
use crate::metrics as m;
use crate::pipeline::View;
use crate::shutdown::Shutdown;

#[derive(Clone)]
struct AppState {
    prometheus: PrometheusHandle,
    view: Arc<RwLock<View>>,
    health: Arc<Health>,
    input_topic: String,
}

async fn metrics(State(s): State<AppState>) -> impl IntoResponse {
    let mut body = s.prometheus.render();
    if let Ok(v) = s.view.read() {
        body.push_str(&v.window_text);
    }
    body.push_str(&m::render_lag(&s.input_topic, &s.health.lags()));
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(s): State<AppState>) -> (StatusCode, &'static str) {
    if s.health.ready() {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}

/// Binds `addr` (failing at once if it cannot) and serves until shutdown.
pub async fn serve(
    addr: SocketAddr,
    prometheus: PrometheusHandle,
    view: Arc<RwLock<View>>,
    health: Arc<Health>,
    input_topic: String,
    mut shutdown: Shutdown,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("--metrics-addr: cannot listen on {addr}: {e}"))?;
    tracing::info!(%addr, "serving /metrics, /healthz, /readyz");
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(AppState {
            prometheus,
            view,
            health,
            input_topic,
        });
    Ok(tokio::spawn(async move {
        let server =
            axum::serve(listener, app).with_graceful_shutdown(async move { shutdown.recv().await });
        if let Err(e) = server.await {
            tracing::error!(error = %e, "metrics server stopped");
        }
    }))
}

/// `nps-stream healthcheck`: GET `url` (http://HOST:PORT/PATH) and return
/// its status code. For container health checks in images without curl;
/// a probe, not a general HTTP client.
pub fn probe(url: &str, timeout: std::time::Duration) -> anyhow::Result<u16> {
    use anyhow::Context;
    use std::io::{Read, Write};
    use std::net::ToSocketAddrs;

    let rest = url
        .strip_prefix("http://")
        .with_context(|| format!("--url: `{url}` is not an http:// URL"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let addr = authority
        .to_socket_addrs()
        .with_context(|| format!("--url: cannot resolve `{authority}`"))?
        .next()
        .with_context(|| format!("--url: `{authority}` has no address"))?;
    let mut stream = std::net::TcpStream::connect_timeout(&addr, timeout)
        .with_context(|| format!("connecting to {addr}"))?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n"
    )?;
    let mut head = [0u8; 64];
    let mut len = 0;
    while len < 12 {
        let n = stream
            .read(&mut head[len..])
            .context("reading the answer")?;
        if n == 0 {
            break;
        }
        len += n;
    }
    // "HTTP/1.1 200 OK"
    let status = std::str::from_utf8(&head[..len])
        .ok()
        .and_then(|s| s.split(' ').nth(1))
        .and_then(|c| c.parse::<u16>().ok())
        .with_context(|| format!("{url}: not an HTTP answer"))?;
    Ok(status)
}
