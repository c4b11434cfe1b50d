//! TLS to the brokers trusts the system's CA store when no CA is named.
//!
//! OpenSSL is linked into the binary (vendored), and its built-in CA path
//! is its build prefix (`/usr/local/ssl`), which Debian, and so the
//! debian-slim image, does not fill. A TLS listener on 127.0.0.1 presents
//! a certificate signed by a CA made here; the CA is put into the system
//! store (`/etc/ssl/certs/ca-certificates.crt`) of a private mount
//! namespace only (nothing on the machine changes), and nps-stream, with
//! `security.protocol=SSL` and no `ssl.ca.location`, must complete the
//! handshake. Without the CA in the store the same run must fail it, which
//! shows the check can fail.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::*;

const LISTENER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/py/tls_listener.py");
const SYSTEM_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// A CA and a server certificate for 127.0.0.1 that it signed.
struct Pki {
    dir: PathBuf,
}

impl Pki {
    fn new() -> Pki {
        let dir = std::env::temp_dir().join(format!("nps-tls-{}", rand_suffix()));
        std::fs::create_dir_all(&dir).unwrap();
        let openssl = |args: &[&str]| {
            run_ok(Command::new("openssl").args(args).current_dir(&dir));
        };
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=nps-stream test CA",
        ]);
        openssl(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=127.0.0.1",
        ]);
        std::fs::write(dir.join("ext"), "subjectAltName=IP:127.0.0.1\n").unwrap();
        openssl(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "ext",
        ]);
        Pki { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Runs `nps-stream run` against the listener with `extra` flags, with
/// `bundle` as the system CA bundle when given; returns the listener's
/// first verdict on a handshake.
fn first_handshake(pki: &Pki, bundle: Option<&Path>, extra: &[&str]) -> String {
    let mut listener = Command::new("python3")
        .arg(LISTENER)
        .arg(pki.path("server.pem"))
        .arg(pki.path("server.key"))
        .arg("60")
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3");
    let (tx, rx) = mpsc::channel();
    let out = listener.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let first = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("listener up");
    let port = first.strip_prefix("port ").expect("port line");

    let metrics = format!("127.0.0.1:{}", free_port());
    let broker = format!("127.0.0.1:{port}");
    let mut args: Vec<&str> = vec![
        "run",
        "--brokers",
        &broker,
        "--metrics-addr",
        &metrics,
        "-X",
        "security.protocol=SSL",
    ];
    args.extend_from_slice(extra);
    let mut cmd = match bundle {
        // The bundle replaces the system one in this process's mount
        // namespace only.
        Some(b) => {
            let mut c = Command::new("unshare");
            // Without root, a user namespace of its own maps this user to
            // root inside it, which may then mount in its namespace.
            // SAFETY: geteuid has no preconditions.
            if unsafe { libc::geteuid() } != 0 {
                c.args(["--user", "--map-root-user"]);
            }
            c.args(["--mount", "--propagation", "private", "sh", "-c"])
                .arg(format!(
                    "mount --bind \"$0\" {SYSTEM_BUNDLE} && exec \"$@\""
                ))
                .arg(b)
                .arg(BIN);
            c
        }
        None => Command::new(BIN),
    };
    let mut svc = cmd
        .args(&args)
        .env_remove("SSL_CERT_FILE")
        .env_remove("SSL_CERT_DIR")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("nps-stream");
    let verdict = loop {
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(line) if line.starts_with("handshake") => break line,
            Ok(_) => continue,
            Err(_) => break "no connection in 30 s".to_string(),
        }
    };
    let _ = svc.kill();
    let _ = svc.wait();
    let _ = listener.kill();
    let _ = listener.wait();
    verdict
}

fn can_run() -> bool {
    have_tool("openssl") && have_tool("python3") && have_tool("unshare")
}

#[test]
fn tls_trusts_a_ca_in_the_system_store_without_ssl_ca_location() {
    let _heavy = heavy();
    if !can_run() {
        return;
    }
    let pki = Pki::new();
    let verdict = first_handshake(&pki, Some(&pki.path("ca.pem")), &[]);
    assert_eq!(verdict, "handshake ok");
}

#[test]
fn tls_refuses_a_broker_whose_ca_is_in_no_store() {
    let _heavy = heavy();
    if !can_run() {
        return;
    }
    let pki = Pki::new();
    let verdict = first_handshake(&pki, None, &[]);
    assert!(
        verdict.starts_with("handshake failed") && verdict.contains("UNKNOWN_CA"),
        "{verdict}"
    );
    // Named explicitly, the same CA is trusted.
    let ca = format!("ssl.ca.location={}", pki.path("ca.pem").display());
    assert_eq!(first_handshake(&pki, None, &["-X", &ca]), "handshake ok");
}
