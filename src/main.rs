//! The `sagashop` binary: `serve` (default) runs the whole system; `migrate` prepares the
//! databases and exits.

use clap::{Parser, Subcommand};
use sagashop::config::Config;
use tracing_subscriber::EnvFilter;

/// Orchestrated purchase sagas on actix.
#[derive(Parser)]
#[command(name = "sagashop", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    config: Config,
}

#[derive(Subcommand)]
enum Command {
    /// Run the API and every service (the default).
    Serve,
    /// Create and migrate every database, then exit.
    Migrate,
    /// Drive a running sagashop with purchases and report throughput and latency.
    Loadgen(sagashop::loadgen::LoadgenArgs),
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    let cli = Cli::parse();
    actix_rt::System::new().block_on(async move {
        match cli.command.unwrap_or(Command::Serve) {
            Command::Serve => sagashop::app::serve(cli.config).await,
            Command::Migrate => sagashop::app::migrate(cli.config).await,
            Command::Loadgen(args) => sagashop::loadgen::run(args).await,
        }
    })
}
