//! The HTTP surface on the metrics port: /metrics (Prometheus text),
//! /healthz (alive: 503 when a consuming loop has stalled), /readyz (partitions assigned and
//! brokers reachable; 503 otherwise), the live page (/) and its JSON API
//! (/api/v1/segments, /api/v1/summary, /api/v1/themes, /api/v1/root-causes).

mod api;
pub use api::{SegmentPage, SegmentRow, Summary};

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;

use crate::kafka::Health;
use crate::metrics as m;
use crate::metrics::View;
use crate::shutdown::Shutdown;

#[derive(Clone)]
struct AppState {
    prometheus: PrometheusHandle,
    view: Arc<RwLock<View>>,
    health: Arc<Health>,
    input_topic: String,
}

/// Bytes of text rendered per chunk of the /metrics body, each under a
/// short read lock of the view.
const CHUNK_BYTES: usize = 64 * 1024;

/// /metrics: the exporter's series, then the per-segment series rendered
/// from the view chunk by chunk as the body is sent (10,000 segments make
/// about 20 MB of text, never held whole), then the lag.
async fn metrics(State(s): State<AppState>) -> impl IntoResponse {
    let head = s.prometheus.render();
    let case_lags = s.health.case_lags();
    let input = s.health.lags();
    let lag = m::render_lag(
        input
            .iter()
            .map(|&(p, lag)| (s.input_topic.as_str(), p, lag))
            .chain(case_lags.iter().map(|(t, p, lag)| (t.as_str(), *p, *lag))),
    );
    let view = s.view.clone();
    let mut cursor = m::RenderCursor::default();
    let mut done = false;
    let series = std::iter::from_fn(move || {
        if done {
            return None;
        }
        let mut out = String::with_capacity(CHUNK_BYTES + CHUNK_BYTES / 4);
        match view.read() {
            Ok(v) => {
                while out.len() < CHUNK_BYTES {
                    if !v.series.render_some(&mut cursor, 32, &mut out) {
                        done = true;
                        break;
                    }
                }
            }
            Err(_) => done = true,
        }
        (!out.is_empty()).then_some(out)
    });
    let figures = s.view.read().map_or_else(
        |_| String::new(),
        |v| {
            let mut out = String::new();
            let products = v.series.segments().map(|(p, _, _)| p);
            m::render_breakdowns(
                &v.breakdowns,
                &v.window_names,
                &v.benchmarks,
                products,
                &mut out,
            );
            out
        },
    );
    let chunks = std::iter::once(head)
        .chain(series)
        .chain(std::iter::once(lag))
        .chain(std::iter::once(figures))
        .map(Ok::<_, std::convert::Infallible>);
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        Body::from_stream(futures::stream::iter(chunks)),
    )
}

/// The live page: one self-contained file (HTML, CSS and script inline,
/// nothing fetched from elsewhere) that polls the API.
const PAGE: &str = include_str!("page.html");

async fn page() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        PAGE,
    )
}

fn json<T: serde::Serialize>(status: StatusCode, body: &T) -> axum::response::Response {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    (
        status,
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        bytes,
    )
        .into_response()
}

fn view_gone() -> axum::response::Response {
    json(
        StatusCode::SERVICE_UNAVAILABLE,
        &api::ApiError {
            error: "the view is unavailable".into(),
        },
    )
}

type Params = Result<
    axum::extract::Query<std::collections::BTreeMap<String, String>>,
    axum::extract::rejection::QueryRejection,
>;

/// An API answer: 400 with what is wrong for a refused query, else what
/// `answer` reads from the view.
fn api_answer<T: serde::Serialize>(
    s: &AppState,
    params: Params,
    answer: impl FnOnce(&View, &std::collections::BTreeMap<String, String>) -> Result<T, api::ApiError>,
) -> axum::response::Response {
    let params = match params {
        Ok(axum::extract::Query(p)) => p,
        Err(e) => {
            return json(
                StatusCode::BAD_REQUEST,
                &api::ApiError {
                    error: e.body_text(),
                },
            );
        }
    };
    let Ok(view) = s.view.read() else {
        return view_gone();
    };
    match answer(&view, &params) {
        Ok(body) => json(StatusCode::OK, &body),
        Err(e) => json(StatusCode::BAD_REQUEST, &e),
    }
}

async fn api_segments(State(s): State<AppState>, params: Params) -> axum::response::Response {
    api_answer(&s, params, |view, params| {
        api::segments(view, &api::SegmentQuery::parse(params)?)
    })
}

async fn api_themes(State(s): State<AppState>, params: Params) -> axum::response::Response {
    api_answer(&s, params, |view, params| {
        api::themes(view, &api::ThemeQuery::parse(params)?)
    })
}

async fn api_breakdown(
    State(s): State<AppState>,
    axum::extract::Path(label): axum::extract::Path<String>,
    params: Params,
) -> axum::response::Response {
    let known = s.view.read().is_ok_and(|v| api::has_breakdown(&v, &label));
    if !known {
        return json(
            StatusCode::NOT_FOUND,
            &api::ApiError {
                error: format!("no breakdown `{label}` ([[breakdowns]] labels)"),
            },
        );
    }
    api_answer(&s, params, |view, params| {
        api::breakdown(view, &label, params)
    })
}

/// A trend: the request checked under the view's lock, the engine read
/// after letting it go (the refresh takes the engine's lock, then the
/// view's).
fn trend_answer(
    s: &AppState,
    params: Params,
    request: impl for<'p> FnOnce(
        &View,
        &'p std::collections::BTreeMap<String, String>,
    ) -> Result<api::TrendRequest<'p>, api::TrendError>,
) -> axum::response::Response {
    let params = match params {
        Ok(axum::extract::Query(p)) => p,
        Err(e) => {
            let error = e.body_text();
            return json(StatusCode::BAD_REQUEST, &api::ApiError { error });
        }
    };
    let (checked, source) = {
        let Ok(view) = s.view.read() else {
            return view_gone();
        };
        (request(&view, &params), view.trends.clone())
    };
    let answer = checked.and_then(|r| {
        let points = source.and_then(|source| (source.0)(r.of, r.read));
        api::trend(&r, points)
    });
    match answer {
        Ok(t) => json(StatusCode::OK, &t),
        Err(api::TrendError::Bad(e)) => json(StatusCode::BAD_REQUEST, &e),
        Err(api::TrendError::NotFound(e)) => json(StatusCode::NOT_FOUND, &e),
    }
}

async fn api_segment_trend(State(s): State<AppState>, params: Params) -> axum::response::Response {
    trend_answer(&s, params, api::segment_request)
}

async fn api_value_trend(
    State(s): State<AppState>,
    axum::extract::Path(label): axum::extract::Path<String>,
    params: Params,
) -> axum::response::Response {
    trend_answer(&s, params, |view, params| {
        api::value_request(view, &label, params)
    })
}

async fn api_benchmarks(State(s): State<AppState>, params: Params) -> axum::response::Response {
    api_answer(&s, params, api::benchmarks)
}

async fn api_root_causes(State(s): State<AppState>, params: Params) -> axum::response::Response {
    api_answer(&s, params, api::root_causes)
}

async fn api_summary(State(s): State<AppState>) -> axum::response::Response {
    let Ok(view) = s.view.read() else {
        return view_gone();
    };
    json(StatusCode::OK, &api::summary(&view))
}

/// Alive unless a consuming loop has stalled (`liveness`): 503
/// naming the loops.
async fn healthz(State(s): State<AppState>) -> (StatusCode, String) {
    let stalled = s.health.heartbeats.stalled(std::time::Instant::now());
    if stalled.is_empty() {
        (StatusCode::OK, "ok\n".into())
    } else {
        let names = stalled.join(", ");
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("stalled: {names}\n"),
        )
    }
}

async fn readyz(State(s): State<AppState>) -> (StatusCode, &'static str) {
    if s.health.ready() {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}

/// Connections served at once; more are closed as soon as they are
/// accepted. Generous for Prometheus, a few browsers and probes, and a
/// bound on what idle or hostile clients can hold.
pub const MAX_CONNECTIONS: usize = 512;
/// How long a client may take to send a request's headers (slowloris):
/// past it the connection is closed, so idle or trickling connections do
/// not pile up to the cap.
pub const HEADER_READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
/// Largest request head read (request line and headers); a larger one is
/// answered 431.
pub const MAX_HEAD_BYTES: usize = 16 * 1024;

/// Binds `addr` (failing at once if it cannot) and serves until shutdown:
/// each connection on a task of its own, at most `MAX_CONNECTIONS` at
/// once, each given `HEADER_READ_TIMEOUT` to send its headers of at most
/// `MAX_HEAD_BYTES`. Unknown paths answer 404, other methods than GET 405.
pub async fn serve(
    addr: SocketAddr,
    prometheus: PrometheusHandle,
    view: Arc<RwLock<View>>,
    health: Arc<Health>,
    input_topic: String,
    mut shutdown: Shutdown,
) -> crate::error::Result<tokio::task::JoinHandle<()>> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| crate::error::Error::Listen { addr, source })?;
    tracing::info!(%addr, "serving /metrics, /healthz, /readyz, the live page (/) and /api/v1");
    let app = Router::new()
        .route("/", get(page))
        .route("/api/v1/segments", get(api_segments))
        .route("/api/v1/summary", get(api_summary))
        .route("/api/v1/themes", get(api_themes))
        .route("/api/v1/root-causes", get(api_root_causes))
        .route("/api/v1/breakdowns/{label}", get(api_breakdown))
        .route("/api/v1/breakdowns/{label}/trend", get(api_value_trend))
        .route("/api/v1/segments/trend", get(api_segment_trend))
        .route("/api/v1/benchmarks", get(api_benchmarks))
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(AppState {
            prometheus,
            view,
            health,
            input_topic,
        });
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    Ok(tokio::spawn(async move {
        loop {
            let stream = tokio::select! {
                _ = shutdown.recv() => break,
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        // Out of file descriptors, for instance: wait a
                        // little rather than spin.
                        tracing::debug!(error = %e, "accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                tracing::debug!("connection refused: {MAX_CONNECTIONS} already open");
                drop(stream);
                continue;
            };
            let service = hyper_util::service::TowerToHyperService::new(app.clone());
            tokio::spawn(async move {
                let served = hyper::server::conn::http1::Builder::new()
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(HEADER_READ_TIMEOUT)
                    .max_buf_size(MAX_HEAD_BYTES)
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
                if let Err(e) = served {
                    tracing::debug!(error = %e, "connection ended");
                }
                drop(slot);
            });
        }
    }))
}

/// `nps-stream healthcheck`: GET `url` (http://HOST:PORT/PATH) and return
/// its status code. For container health checks in images without curl;
/// a probe, not a general HTTP client.
pub fn probe(url: &str, timeout: std::time::Duration) -> crate::error::Result<u16> {
    use std::io::{Read, Write};
    use std::net::ToSocketAddrs;

    let fail = |reason: String| crate::error::Error::Probe {
        url: url.to_string(),
        reason,
    };
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| fail("not an http:// URL".into()))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let addr = authority
        .to_socket_addrs()
        .map_err(|e| fail(format!("cannot resolve `{authority}`: {e}")))?
        .next()
        .ok_or_else(|| fail(format!("`{authority}` has no address")))?;
    let mut stream = std::net::TcpStream::connect_timeout(&addr, timeout)
        .map_err(|e| fail(format!("connecting to {addr}: {e}")))?;
    let io = |e: std::io::Error| fail(e.to_string());
    stream.set_read_timeout(Some(timeout)).map_err(io)?;
    stream.set_write_timeout(Some(timeout)).map_err(io)?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n"
    )
    .map_err(io)?;
    let mut head = [0u8; 64];
    let mut len = 0;
    while len < 12 {
        let n = stream
            .read(&mut head[len..])
            .map_err(|e| fail(format!("reading the answer: {e}")))?;
        if n == 0 {
            break;
        }
        len += n;
    }
    // "HTTP/1.1 200 OK"
    std::str::from_utf8(&head[..len])
        .ok()
        .and_then(|s| s.split(' ').nth(1))
        .and_then(|c| c.parse::<u16>().ok())
        .ok_or_else(|| fail("not an HTTP answer".into()))
}
