//! `batch-triage emulator`: serves the local Batch REST emulator (a built-in scenario, or one from
//! a file) until interrupted, for trying the CLI, the official SDKs or the Azure CLI against it.

use std::io::Write;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use batch_emulator::{Emulator, Scenario, WELL_KNOWN_ACCOUNT_KEY, WELL_KNOWN_ACCOUNT_NAME};

pub(crate) const EXAMPLES: &str = "\
Examples:
  batch-triage emulator --port 8089
  batch-triage emulator --scenario shared/batch-emulator/scenarios/builtin.json --port 8089

Then, from another terminal, with the well-known account:
  export AZURE_BATCH_ENDPOINT=http://127.0.0.1:8089 AZURE_BATCH_ACCOUNT=devbatch1
  export AZURE_BATCH_ACCESS_KEY='mjKm6b5f7cz+1Z87ZQTzqewMgLsXqKvuJqfrLzWEpg27VruihOB6mXgex29Mi/scsRrX5vb19ODbFU0ZvQTWRg=='";

/// Arguments of `emulator`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// A scenario file (JSON; see shared/batch-emulator's docs). Without it, the built-in scenario:
    /// jobs and tasks in every failure class.
    #[arg(long, value_name = "FILE")]
    scenario: Option<PathBuf>,

    /// The address to listen on. Keep it on loopback: the emulator has an unauthenticated admin API.
    #[arg(long, default_value = "127.0.0.1")]
    host: IpAddr,

    /// The port to listen on (0 picks a free one and prints it).
    #[arg(long)]
    port: u16,
}

pub(crate) fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let scenario = match &args.scenario {
        Some(path) => Scenario::from_json_file(path)
            .with_context(|| format!("--scenario {}", path.display()))?,
        None => Scenario::builtin(),
    };
    let emulator = Emulator::new(scenario).context("the scenario is not consistent")?;
    crate::runtime()?.block_on(async {
        let listener = tokio::net::TcpListener::bind((args.host, args.port))
            .await
            .with_context(|| format!("cannot listen on {}:{}", args.host, args.port))?;
        let address = listener.local_addr()?;
        let account = emulator.account_name().to_owned();
        // The banner is best effort: a server must keep serving when whoever started it stops
        // reading its output (println! would panic on a closed pipe).
        let mut banner = format!("Batch emulator listening on http://{address} (account {account}); Ctrl-C stops it.\n");
        if account == WELL_KNOWN_ACCOUNT_NAME {
            banner.push_str(&format!(
                "  AZURE_BATCH_ENDPOINT=http://{address} AZURE_BATCH_ACCOUNT={WELL_KNOWN_ACCOUNT_NAME} AZURE_BATCH_ACCESS_KEY={WELL_KNOWN_ACCOUNT_KEY}\n"
            ));
        }
        let mut stdout = std::io::stdout();
        let _ = stdout.write_all(banner.as_bytes()).and_then(|()| stdout.flush());
        let shutdown = async {
            let _ = tokio::signal::ctrl_c().await;
        };
        batch_emulator::serve(listener, emulator, shutdown).await.context("the emulator stopped")
    })?;
    Ok(ExitCode::SUCCESS)
}
