//! The HTTP surface on the metrics port under clients that misbehave,
//! driven with raw sockets against a running instance (no broker: the
//! surface does not need one): unknown paths and methods, oversized
//! headers, many idle and trickling (slowloris) connections, and the
//! connection cap.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;

/// README's limits of the metrics port, as numbers: at most 512
/// connections at once, 5 s to send the request headers, heads of at most
/// 16 KiB.
const MAX_CONNECTIONS: usize = 512;
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_HEAD_BYTES: usize = 16 * 1024;

/// An instance with no reachable broker: alive, serving, not ready.
fn instance(name: &str) -> Service {
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let dead = format!("127.0.0.1:{}", free_port());
    let mut svc = Service::start(
        &["run", "--brokers", &dead, "--metrics-addr", &addr],
        port,
        name,
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while svc.status("/healthz") != Some(200) {
        assert!(Instant::now() < deadline, "{}", svc.logs());
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = &mut svc;
    svc
}

/// Sends `request` as is on a new connection; the status of the answer.
fn raw(addr: &str, request: &[u8]) -> Option<u16> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(request).ok()?;
    let mut head = [0u8; 64];
    let mut len = 0;
    while len < 12 {
        match s.read(&mut head[len..]) {
            Ok(0) | Err(_) => break,
            Ok(n) => len += n,
        }
    }
    std::str::from_utf8(&head[..len])
        .ok()?
        .split(' ')
        .nth(1)?
        .parse()
        .ok()
}

/// GET `path`, timed.
fn timed_get(addr: &str, path: &str) -> (Option<u16>, Duration) {
    let t = Instant::now();
    let status = http_get(addr, path).map(|(c, _)| c);
    (status, t.elapsed())
}

#[test]
fn unknown_paths_are_404_and_other_methods_405() {
    let _heavy = heavy();
    let mut svc = instance("http-paths");
    let a = svc.metrics_addr.clone();
    assert_eq!(
        raw(
            &a,
            b"GET /nowhere HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        ),
        Some(404)
    );
    assert_eq!(
        raw(
            &a,
            b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        ),
        Some(405)
    );
    assert_eq!(
        raw(
            &a,
            b"DELETE /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        ),
        Some(405)
    );
    assert_eq!(
        raw(
            &a,
            b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        ),
        Some(200)
    );
    assert!(svc.terminate(Duration::from_secs(30)).success());
}

#[test]
fn a_request_head_over_the_limit_is_refused_with_431() {
    let _heavy = heavy();
    let mut svc = instance("http-431");
    let a = svc.metrics_addr.clone();
    let big = "x".repeat(MAX_HEAD_BYTES + 1024);
    let request = format!("GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\n\r\n");
    assert_eq!(raw(&a, request.as_bytes()), Some(431));
    // A head 1 KiB under it is served.
    let fits = "x".repeat(MAX_HEAD_BYTES - 1024);
    let request =
        format!("GET /healthz HTTP/1.1\r\nHost: x\r\nX-Fits: {fits}\r\nConnection: close\r\n\r\n");
    assert_eq!(raw(&a, request.as_bytes()), Some(200));
    assert!(svc.terminate(Duration::from_secs(30)).success());
}

#[test]
fn idle_and_trickling_connections_do_not_delay_others_and_are_closed() {
    let _heavy = heavy();
    let mut svc = instance("http-slowloris");
    let a = svc.metrics_addr.clone();
    // 200 connections that send nothing, 40 that trickle a header byte
    // at a time.
    let idle: Vec<TcpStream> = (0..200).map(|_| TcpStream::connect(&a).unwrap()).collect();
    // The server's clock for slow[0] starts when it connects, so ours
    // does too: measured from after all 40 connect, a loaded machine
    // made the close look early (4.0 s of 5 s).
    let started = Instant::now();
    let mut slow: Vec<TcpStream> = (0..40)
        .map(|_| {
            let mut s = TcpStream::connect(&a).unwrap();
            s.write_all(b"GET /metrics HTTP/1.1\r\nX-Slow: ").unwrap();
            s
        })
        .collect();
    let mut closed_by_server = false;
    while started.elapsed() < HEADER_READ_TIMEOUT + Duration::from_secs(5) {
        for s in &mut slow {
            let _ = s.write_all(b"a");
        }
        // Others are served all along: a request held up behind the slow
        // connections would wait for them to expire, the header timeout.
        for path in ["/healthz", "/metrics", "/readyz"] {
            let (status, took) = timed_get(&a, path);
            assert!(status.is_some(), "{path}: no answer");
            assert!(
                took < HEADER_READ_TIMEOUT - Duration::from_millis(500),
                "{path} took {took:?}"
            );
        }
        // The server closes what has not sent its headers in time.
        let mut probe = [0u8; 1];
        let s = &slow[0];
        s.set_read_timeout(Some(Duration::from_millis(10))).unwrap();
        if let Ok(0) = (&*s).read(&mut probe) {
            closed_by_server = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    let took = started.elapsed();
    assert!(
        closed_by_server,
        "a trickling connection still open after {took:?}"
    );
    assert!(
        took >= HEADER_READ_TIMEOUT - Duration::from_millis(500),
        "closed before its time: {took:?}"
    );
    drop(idle);
    assert!(svc.terminate(Duration::from_secs(30)).success());
}

#[test]
fn connections_beyond_the_cap_are_closed_and_others_served_once_they_expire() {
    let _heavy = heavy();
    let mut svc = instance("http-cap");
    let a = svc.metrics_addr.clone();
    let started = Instant::now();
    let held: Vec<TcpStream> = (0..MAX_CONNECTIONS)
        .map(|_| TcpStream::connect(&a).unwrap())
        .collect();
    // One more is accepted by the kernel, then closed by the server, once
    // the server has taken the held ones: the first extra closed shows it
    // has, and from then on every extra is closed.
    let mut closed = 0;
    while closed < 4 {
        let outcome = extra_connection(&a);
        assert!(
            outcome != Extra::Hung,
            "a connection beyond the cap was neither served nor closed"
        );
        if outcome == Extra::Closed {
            closed += 1;
        } else {
            assert_eq!(closed, 0, "served beyond the cap after closing one");
            assert!(
                started.elapsed() < Duration::from_secs(3),
                "served beyond the cap"
            );
        }
    }
    // The held ones send nothing and expire; then service resumes.
    let deadline = Instant::now() + HEADER_READ_TIMEOUT + Duration::from_secs(10);
    loop {
        if svc.status("/healthz") == Some(200) {
            break;
        }
        assert!(Instant::now() < deadline, "never served again");
        std::thread::sleep(Duration::from_millis(200));
    }
    drop(held);
    assert!(svc.terminate(Duration::from_secs(30)).success());
}

#[derive(Debug, PartialEq, Eq)]
enum Extra {
    Served,
    Closed,
    Hung,
}

/// A GET on a new connection: answered, closed by the server (end of
/// stream or reset), or neither within 3 s.
fn extra_connection(addr: &str) -> Extra {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let _ = s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
    let mut buf = [0u8; 16];
    match s.read(&mut buf) {
        Ok(0) => Extra::Closed,
        Ok(_) => Extra::Served,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
            ) =>
        {
            Extra::Closed
        }
        Err(_) => Extra::Hung,
    }
}

/// /healthz answers 503 naming a consuming loop that has not turned for
/// longer than `--stall-timeout` (outside a rebalance), and 200 again once
/// it turns: the liveness probe can fail.
#[test]
fn healthz_fails_while_a_consuming_loop_is_stalled() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(stalled_loop_fails_healthz());
}

async fn stalled_loop_fails_healthz() {
    use nps_stream::kafka::Health;
    let health = Health::new();
    health.heartbeats.set_bound(Duration::from_secs(5));
    let now = Instant::now();
    let long_ago = now.checked_sub(Duration::from_secs(30)).unwrap();
    let pipeline = health.heartbeats.beat("pipeline", long_ago);
    let tracker = health.heartbeats.beat("case tracker", now);
    let port = free_port();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let (trigger, shutdown) = nps_stream::shutdown::channel();
    let prometheus = metrics_exporter_prometheus::PrometheusBuilder::new()
        .build_recorder()
        .handle();
    let view = std::sync::Arc::new(std::sync::RwLock::new(Default::default()));
    let server = nps_stream::http::serve(addr, prometheus, view, health, "in".into(), shutdown)
        .await
        .unwrap();
    let get = |path: &'static str| {
        let addr = addr.to_string();
        tokio::task::spawn_blocking(move || get_body(&addr, path))
    };
    let (status, body) = get("/healthz").await.unwrap();
    assert_eq!(status, Some(503), "{body}");
    assert!(
        body.contains("stalled: pipeline") && !body.contains("case tracker"),
        "{body}"
    );
    // Inside a rebalance (a long restore) it is not a stall.
    pipeline.rebalancing(true, Instant::now());
    assert_eq!(get("/healthz").await.unwrap().0, Some(200));
    pipeline.rebalancing(false, Instant::now());
    assert_eq!(get("/healthz").await.unwrap().0, Some(200));
    tracker.turn(Instant::now());
    trigger.fire();
    server.await.unwrap();
}

/// The status and body of a plain GET.
fn get_body(addr: &str, path: &str) -> (Option<u16>, String) {
    let Ok(mut s) = TcpStream::connect(addr) else {
        return (None, String::new());
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    if s.write_all(req.as_bytes()).is_err() {
        return (None, String::new());
    }
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    let status = out.split(' ').nth(1).and_then(|c| c.parse().ok());
    (status, out)
}
