//! Wiring of the `run` command: metrics recorder, HTTP server, signal
//! handling and the pipeline, with a clean stop.

use std::sync::{Arc, RwLock};

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::clock::SystemClock;
use crate::config::{LogFormat, Settings};
use crate::kafka::Health;
use crate::metrics as m;
use crate::metrics::View;
use crate::pipeline;
use crate::shutdown::{Shutdown, Trigger};

/// Sets up `tracing` from RUST_LOG (default `info`) in text or JSON.
pub fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// Installs the process-wide Prometheus recorder.
pub fn install_recorder() -> crate::error::Result<PrometheusHandle> {
    let recorder =
        |e: metrics_exporter_prometheus::BuildError| crate::error::Error::Recorder(e.to_string());
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full(m::END_TO_END_DELAY.to_string()),
            &m::DELAY_BUCKETS,
        )
        .map_err(recorder)?
        .set_buckets_for_metric(
            Matcher::Full(m::CASE_FIRST_CONTACT.to_string()),
            &m::FIRST_CONTACT_BUCKETS,
        )
        .map_err(recorder)?
        .install_recorder()
        .map_err(recorder)?;
    m::describe();
    metrics::gauge!(m::BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    Ok(handle)
}

/// Runs the service until `shutdown` fires. `view` receives the refreshed
/// state every second (the demo prints from it).
pub async fn run(
    settings: Settings,
    trigger: Trigger,
    shutdown: Shutdown,
    view: Arc<RwLock<View>>,
    keep_table: bool,
) -> crate::error::Result<()> {
    let prometheus = install_recorder()?;
    m::set_targets(&settings.targets);
    metrics::gauge!(m::SNAPSHOT_FORMAT_WRITTEN).set(f64::from(settings.engine.snapshot_format));
    crate::shutdown::watchdog(shutdown.clone(), settings.shutdown_timeout);
    crate::shutdown::restart_on_change(
        crate::shutdown::Watched::new(&settings.restart_on_change),
        std::time::Duration::from_secs(10),
        trigger.clone(),
        shutdown.clone(),
    );
    let health = Health::new();
    health.heartbeats.set_bound(settings.stall_timeout);
    let server = crate::http::serve(
        settings.metrics_addr,
        prometheus.clone(),
        view.clone(),
        health.clone(),
        settings.input_topic.clone(),
        shutdown.clone(),
    )
    .await?;
    let upkeep = {
        let mut stop = shutdown.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(5));
            loop {
                tokio::select! {
                    _ = stop.recv() => break,
                    _ = tick.tick() => prometheus.run_upkeep(),
                }
            }
        })
    };
    // Case tracking beside the pipeline, on a task of its own (its
    // blocking moments, such as a rebalance, must not hold up the main
    // loop): an error there (topics not co-partitioned, not creatable)
    // stops both.
    let cases = {
        let (settings, shutdown, health) = (settings.clone(), shutdown.clone(), health.clone());
        let view = view.clone();
        let trigger = trigger.clone();
        tokio::spawn(async move {
            let r =
                crate::tracker::run(settings, Arc::new(SystemClock), shutdown, health, view).await;
            if r.is_err() {
                trigger.fire();
            }
            r
        })
    };
    let result = pipeline::run(
        settings,
        Arc::new(SystemClock),
        shutdown,
        view,
        health,
        keep_table,
    )
    .await;
    // Whatever ended the pipeline ends the rest too.
    trigger.fire();
    let cases = cases.await.unwrap_or_else(|e| {
        tracing::error!(error = %e, "case tracking task failed");
        Ok(())
    });
    let result = cases.and(result);
    let _ = upkeep.await;
    let _ = server.await;
    result
}
