use std::io::IsTerminal;

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = storegate::cli::Cli::parse();
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
    match storegate::cli::run(cli) {
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
