use std::io::IsTerminal;

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = storegate::cli::Cli::parse();
    // rumqttd logs every probe connection and client drop as an ERROR; it is only our loopback
    // broker, so it stays quiet unless STOREGATE_LOG asks for it.
    let filter = tracing_subscriber::EnvFilter::try_from_env("STOREGATE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,rumqttd=off,rumqttc=warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    match storegate::cli::run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("storegate: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
