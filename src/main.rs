//! The `nps-stream` binary: parses the command line, sets up logging and
//! hands over to the library. See `nps-stream --help`.

use std::process::ExitCode;
use std::sync::{Arc, RwLock};

use clap::Parser;
use nps_stream::config::{Cli, Command, Settings};
use nps_stream::error::Error;
use nps_stream::{demo, http, send, service, shutdown};

/// jemalloc, which the `jemalloc` feature (on by default) also makes the
/// C allocator of librdkafka: see Cargo.toml.
#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run(args) => {
            // Flags and config are checked before anything connects.
            let settings = match Settings::resolve(&args, false) {
                Ok(s) => s,
                Err(e) => return usage_error(&e),
            };
            service::init_tracing(settings.log_format);
            block_on(async move {
                let (trigger, stop) = shutdown::channel();
                tokio::spawn(shutdown::on_signals(trigger.clone()));
                service::run(
                    settings,
                    trigger,
                    stop,
                    Arc::new(RwLock::new(Default::default())),
                    false,
                )
                .await
            })
        }
        Command::CheckConfig(args) => match Settings::resolve(&args, false) {
            Ok(s) => {
                println!("{:#?}", s.redacted());
                let bound = nps_stream::sizing::Bound::of(&s, 1);
                println!(
                    "memory bound holding one input partition (docs/deploying.md, \"Memory\"):\n{bound}"
                );
                println!("configuration OK");
                ExitCode::SUCCESS
            }
            Err(e) => usage_error(&e),
        },
        Command::Healthcheck(args) => match args
            .resolved_url()
            .map_err(Error::from)
            .and_then(|url| Ok((http::probe(&url, args.timeout)?, url)))
        {
            Ok((code, _)) if (200..300).contains(&code) => ExitCode::SUCCESS,
            Ok((code, url)) => {
                eprintln!("{url}: HTTP {code}");
                ExitCode::FAILURE
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Demo(args) => {
            service::init_tracing(args.log_format);
            block_on(demo::run(args))
        }
        Command::Send(args) => {
            service::init_tracing(Default::default());
            match send::run(&args) {
                Ok(report) => report.exit_code(),
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::from(2)
                }
            }
        }
    }
}

/// A refused configuration: one line naming the flag, exit code 2.
fn usage_error(e: &nps_stream::config::ConfigError) -> ExitCode {
    eprintln!("error: {e}");
    ExitCode::from(2)
}

fn block_on(fut: impl std::future::Future<Output = Result<(), Error>>) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(fut) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "exiting");
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
