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

/// Makes glibc return large freed blocks (Argon2's 19 MiB work areas) to the system at once
/// instead of keeping them in per-thread arenas, which would hold ~20 MiB per thread that
/// ever hashed a password.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)] // libc has no safe mallopt
fn release_large_allocations() {
    // SAFETY: mallopt only changes allocator tuning; called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn release_large_allocations() {}

fn main() -> anyhow::Result<()> {
    release_large_allocations();
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
