//! The `storegate` binary: argument parsing and output (`cli`), the demo wiring (`demo`) and the
//! benchmark (`bench`). Everything they run is the `storegate` library; `anyhow` lives here
//! only, at the edge where errors become messages and exit codes.

use std::io::IsTerminal;

use clap::Parser;

#[cfg(feature = "bench")]
mod bench;
mod cli;
#[cfg(feature = "embedded-broker")]
mod demo;
#[cfg(feature = "bench")]
mod fleet_sim;

/// See the `postgres` feature in Cargo.toml: the build for central at fleet scale.
#[cfg(feature = "postgres")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    let cli = cli::Cli::parse();
    // rumqttd logs every probe connection and client drop as an ERROR; it is only our loopback
    // broker, so it stays quiet unless STOREGATE_LOG asks for it.
    // `Targets` takes the same `level,target=level` syntax as RUST_LOG without pulling a regex
    // engine into the binary; a malformed STOREGATE_LOG falls back to the default.
    const DEFAULT_LOG: &str = "info,rumqttd=off,rumqttc=warn";
    let filter: tracing_subscriber::filter::Targets = std::env::var("STOREGATE_LOG")
        .ok()
        .and_then(|spec| spec.parse().ok())
        .unwrap_or_else(|| DEFAULT_LOG.parse().unwrap_or_default());
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::stderr().is_terminal()),
        )
        .with(filter)
        .init();
    match cli::run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("storegate: {}", report(&error));
            std::process::ExitCode::FAILURE
        }
    }
}

/// The error and each cause once: many errors already print their source in their own
/// message, and anyhow's `{:#}` would print it again.
fn report(error: &anyhow::Error) -> String {
    let mut message = error.to_string();
    for cause in error.chain().skip(1) {
        let text = cause.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
    }
    message
}
