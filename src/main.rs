//! The `sagashop` binary: `serve` (default) runs the whole system; `migrate` prepares the
//! databases and exits; `loadgen` drives a running sagashop (it lives here, not in the
//! library, so the server does not link its HTTP client, progress bar and histogram crates);
//! `healthcheck` asks a node whether it is ready (a container's healthcheck).

mod healthcheck;
mod loadgen;

use clap::{Parser, Subcommand, ValueEnum};
use sagashop::config::{Config, DatabaseOptions, HealthcheckOptions};
use sagashop::telemetry::logs;

/// mimalloc rather than glibc's malloc: allocation was a tenth of the server's CPU per saga,
/// and glibc's per-thread arenas kept freed memory from many sagas in flight.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Orchestrated purchase sagas on actix.
///
/// The server's options belong to `serve` (`sagashop serve --help`). The older spelling with
/// the options before the command (`sagashop --listen ADDR [serve|migrate]`, or no command at
/// all) still works: the top level keeps hidden copies of them, and once one of them is given,
/// clap reads the rest of the line as top-level arguments (`args_conflicts_with_subcommands`),
/// where a hidden positional takes the command's name.
#[derive(Parser, Debug)]
#[command(
    name = "sagashop",
    version,
    about,
    long_about = None,
    after_help = "Without a command, runs `serve`.",
    args_conflicts_with_subcommands = true,
    mut_args = |arg: clap::Arg| arg.hide(true),
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// The command named after top-level options (the older spelling).
    #[arg(value_enum, value_name = "COMMAND")]
    legacy_command: Option<LegacyCommand>,
    /// Server options given before the command (the older spelling).
    #[command(flatten)]
    legacy_config: Config,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the API and every service (the default).
    Serve(Box<Config>),
    /// Create and migrate every database, then exit.
    Migrate(DatabaseOptions),
    /// Inspect and release sagas set aside because their stored log does not replay.
    #[command(subcommand)]
    Sagas(SagasCommand),
    /// Drive a running sagashop with purchases and report throughput and latency.
    Loadgen(loadgen::LoadgenArgs),
    /// Ask the node on this machine whether it is ready: exit 0 if so, else 1 with the
    /// reason (the container healthcheck; the image has no curl).
    Healthcheck(HealthcheckOptions),
}

/// The commands the older spelling may name after its options.
#[derive(ValueEnum, Clone, Copy, Debug)]
enum LegacyCommand {
    Serve,
    Migrate,
}

impl Cli {
    /// What to run, whichever spelling was used.
    fn into_command(self) -> Command {
        match (self.command, self.legacy_command) {
            (Some(command), _) => command,
            (None, Some(LegacyCommand::Migrate)) => Command::Migrate(self.legacy_config.databases),
            (None, Some(LegacyCommand::Serve) | None) => {
                Command::Serve(Box::new(self.legacy_config))
            }
        }
    }
}

#[derive(Subcommand, Debug)]
enum SagasCommand {
    /// List quarantined sagas with the reason each was set aside.
    Quarantined(DatabaseOptions),
    /// Run a quarantined saga again (after its cause is fixed).
    Retry {
        /// The purchase id.
        purchase_id: sagashop::domain::ids::PurchaseId,
        #[command(flatten)]
        databases: DatabaseOptions,
    },
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
    let command = Cli::parse().into_command();
    // `serve` installs its logs itself (format and trace export are among its settings).
    if !matches!(command, Command::Serve(_)) {
        logs::install_text();
    }
    actix_rt::System::new().block_on(async move {
        match command {
            Command::Serve(config) => sagashop::app::serve(*config).await,
            Command::Migrate(databases) => sagashop::app::migrate(databases).await,
            Command::Sagas(SagasCommand::Quarantined(databases)) => {
                sagashop::app::list_quarantined(&databases).await
            }
            Command::Sagas(SagasCommand::Retry {
                purchase_id,
                databases,
            }) => sagashop::app::retry_quarantined(&databases, purchase_id).await,
            Command::Loadgen(args) => loadgen::run(args).await,
            Command::Healthcheck(options) => healthcheck::run(&options).await,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Command, clap::Error> {
        Cli::try_parse_from(std::iter::once("sagashop").chain(args.iter().copied()))
            .map(Cli::into_command)
    }

    fn serve(args: &[&str]) -> Config {
        match parse(args).unwrap() {
            Command::Serve(config) => *config,
            other => panic!("{args:?} parsed as {other:?}"),
        }
    }

    fn migrate(args: &[&str]) -> DatabaseOptions {
        match parse(args).unwrap() {
            Command::Migrate(databases) => databases,
            other => panic!("{args:?} parsed as {other:?}"),
        }
    }

    /// The help text clap prints for `args` (which must end in `--help`).
    fn help(args: &[&str]) -> String {
        let err = parse(args).unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::DisplayHelp);
        err.to_string()
    }

    #[test]
    fn serve_takes_the_server_options_after_the_command() {
        let config = serve(&["serve", "--listen", "127.0.0.1:9000", "--data-dir", "/srv"]);
        assert_eq!(config.listen.to_string(), "127.0.0.1:9000");
        assert_eq!(config.databases.data_dir.to_str(), Some("/srv"));
    }

    #[test]
    fn the_older_spelling_with_options_first_still_serves() {
        for args in [
            &["--listen", "127.0.0.1:9000", "serve"][..],
            &["--listen", "127.0.0.1:9000"],
            &["--listen=127.0.0.1:9000", "serve", "--workers", "2"],
        ] {
            assert_eq!(serve(args).listen.to_string(), "127.0.0.1:9000", "{args:?}");
        }
        assert_eq!(serve(&[]).listen.to_string(), "127.0.0.1:8000");
    }

    #[test]
    fn migrate_takes_the_database_options_in_either_spelling() {
        let url = "mysql://root:pw@127.0.0.1:3306/shop_saga";
        let d = migrate(&["migrate", "--data-dir", "/srv", "--saga-database-url", url]);
        assert_eq!(d.data_dir.to_str(), Some("/srv"));
        assert_eq!(d.saga_database_url.as_ref().map(|u| u.expose()), Some(url));
        assert_eq!(
            migrate(&["--data-dir", "/old", "migrate"])
                .data_dir
                .to_str(),
            Some("/old")
        );
        assert!(parse(&["migrate", "--listen", "127.0.0.1:9000"]).is_err());
    }

    #[test]
    fn loadgen_takes_only_its_own_options() {
        let Command::Loadgen(args) = parse(&["loadgen", "--count", "5"]).unwrap() else {
            panic!("not loadgen");
        };
        assert_eq!(args.count, Some(5));
        assert!(parse(&["loadgen", "--listen", "127.0.0.1:9000"]).is_err());
        assert!(parse(&["--listen", "127.0.0.1:9000", "loadgen"]).is_err());
    }

    #[test]
    fn loadgen_takes_several_urls_comma_separated_or_repeated() {
        let urls = |args: &[&str]| match parse(args).unwrap() {
            Command::Loadgen(a) => a.url,
            _ => panic!("not loadgen"),
        };
        assert_eq!(urls(&["loadgen"]), ["http://127.0.0.1:8000"]);
        assert_eq!(
            urls(&["loadgen", "--url", "http://a:1,http://b:2"]),
            ["http://a:1", "http://b:2"]
        );
        assert_eq!(
            urls(&["loadgen", "--url", "http://a:1", "--url", "http://b:2"]),
            ["http://a:1", "http://b:2"]
        );
    }

    #[test]
    fn each_help_lists_the_options_of_its_command() {
        let serve = help(&["serve", "--help"]);
        for option in [
            "--listen",
            "--jwt-secret",
            "--workers",
            "--data-dir",
            "--saga-database-url",
        ] {
            assert!(
                serve.contains(option),
                "serve --help lacks {option}:\n{serve}"
            );
        }
        let migrate = help(&["migrate", "--help"]);
        assert!(migrate.contains("--account-database-url") && !migrate.contains("--listen"));
        let loadgen = help(&["loadgen", "--help"]);
        assert!(loadgen.contains("--concurrency"));
        for option in ["--listen", "--data-dir", "--jwt-secret"] {
            assert!(!loadgen.contains(option), "loadgen --help shows {option}");
        }
        let top = help(&["--help"]);
        assert!(top.contains("serve") && !top.contains("--listen"), "{top}");
    }
}
