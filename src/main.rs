//! The `perch` binary: the command line, `perch serve` (start-up, the
//! listeners, background work and shutdown), `perch bench`, and running as
//! a systemd service. Everything else lives in the crates under `crates/`;
//! see docs/ARCHITECTURE.md.

mod alloc;
mod bench;
mod cli;
mod server;
mod service;

use clap::Parser;

// glibc's allocator spent a third of the collector's time consolidating
// the many small label strings per message (measured with perf).
#[cfg(not(feature = "system-allocator"))]
#[global_allocator]
static ALLOCATOR: alloc::CountingMiMalloc = alloc::CountingMiMalloc;

use cli::{Cli, Command};

fn init_logging(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        // rumqttd logs routine client departures at error level; perch
        // logs connections itself. `log.level` may name rumqttd to see it.
        let level = if level.contains("rumqttd") {
            level.to_string()
        } else {
            format!("{level},rumqttd=off")
        };
        tracing_subscriber::EnvFilter::new(level)
    });
    // Under systemd the journal adds timestamps and does not want colours.
    use tracing_subscriber::prelude::*;
    let journal = std::env::var_os("JOURNAL_STREAM").is_some();
    let fmt = tracing_subscriber::fmt::layer()
        .with_ansi(!journal && std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    // The dashboard's "recent errors" see what the log sees.
    let registry = tracing_subscriber::registry()
        .with(filter)
        .with(base::events::RecentEventsLayer);
    if journal {
        registry.with(fmt.without_time()).init();
    } else {
        registry.with(fmt).init();
    }
}

fn main() -> std::process::ExitCode {
    alloc::tune();
    let cli = Cli::parse();
    let result: anyhow::Result<i32> = match cli.command {
        Command::Serve(args) => cli::serve_config(&args).and_then(|config| {
            init_logging(&config.log.level);
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .thread_name("perch")
                .build()?
                .block_on(server::serve(config))
                .map(|_| 0)
        }),
        Command::User(cmd) => {
            init_logging("warn");
            cli::user(cmd).map(|_| 0)
        }
        Command::Check { location, json } => {
            init_logging("warn");
            cli::check(&location, json)
        }
        Command::Restore { file, location } => {
            init_logging("warn");
            cli::restore(&file, &location).map(|_| 0)
        }
        Command::Forward(cmd) => {
            init_logging("warn");
            cli::forward(cmd).map(|_| 0)
        }
        Command::Rules(cmd) => {
            init_logging("warn");
            cli::rules(cmd)
        }
        Command::Bench(args) => {
            init_logging("warn");
            bench::run(args).map(|_| 0)
        }
    };
    match result {
        Ok(code) => std::process::ExitCode::from(code as u8),
        Err(e) => {
            // Errors that quote their source would print it twice in `{:#}`.
            let mut msg = String::new();
            for cause in e.chain() {
                let text = cause.to_string();
                if !msg.contains(&text) {
                    if !msg.is_empty() {
                        msg.push_str(": ");
                    }
                    msg.push_str(&text);
                }
            }
            eprintln!("perch: {msg}");
            // 78 (EX_CONFIG): systemd does not restart perch for a bad
            // config file (RestartPreventExitStatus=78 in perch.service).
            let config_error = e
                .chain()
                .any(|c| c.downcast_ref::<config::ConfigError>().is_some());
            std::process::ExitCode::from(if config_error { 78 } else { 2 })
        }
    }
}
