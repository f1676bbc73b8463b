//! `batch-triage emulator`: serves the local Batch REST emulator (a built-in scenario, or one from
//! a file) until interrupted, for trying the CLI, the official SDKs or the Azure CLI against it.

use std::io::Write;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use batch_emulator::{Emulator, Scenario, WELL_KNOWN_ACCOUNT_KEY};

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

/// What to tell whoever started the emulator: where it is and how to sign. The well-known key is
/// public (it is in the README and the emulator's docs) and is printed; any other key came from a
/// scenario file, may be one somebody reuses elsewhere, and is never printed (like every account
/// key): the banner says where it is instead. The banner is the key actually in use either way.
fn banner(address: &str, account: &str, key: &str, scenario: Option<&std::path::Path>) -> String {
    let mut banner = format!(
        "Batch emulator listening on http://{address} (account {account}); Ctrl-C stops it.\n  \
         AZURE_BATCH_ENDPOINT=http://{address} AZURE_BATCH_ACCOUNT={account} "
    );
    if key == WELL_KNOWN_ACCOUNT_KEY {
        banner.push_str(&format!("AZURE_BATCH_ACCESS_KEY={WELL_KNOWN_ACCOUNT_KEY}"));
    } else {
        let file = scenario.map_or_else(|| "the scenario".to_owned(), |p| p.display().to_string());
        banner.push_str(&format!(
            "AZURE_BATCH_ACCESS_KEY=<account.key in {file}, not printed>"
        ));
    }
    banner
}

pub(crate) fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let scenario = match &args.scenario {
        Some(path) => Scenario::from_json_file(path)
            .with_context(|| format!("--scenario {}", path.display()))?,
        None => Scenario::builtin(),
    };
    // What clients sign with, for the banner; taken before the scenario is handed over.
    let account = scenario.account.name.clone();
    let key = scenario.account.key.clone();
    let emulator = Emulator::new(scenario).context("the scenario is not consistent")?;
    crate::runtime()?.block_on(async {
        let listener = tokio::net::TcpListener::bind((args.host, args.port))
            .await
            .with_context(|| format!("cannot listen on {}:{}", args.host, args.port))?;
        let address = listener.local_addr()?;
        // The banner is best effort: a server must keep serving when whoever started it stops
        // reading its output (println! would panic on a closed pipe).
        let mut banner = banner(
            &address.to_string(),
            &account,
            &key,
            args.scenario.as_deref(),
        );
        banner.push('\n');
        let mut stdout = std::io::stdout();
        let _ = stdout
            .write_all(banner.as_bytes())
            .and_then(|()| stdout.flush());
        let shutdown = async {
            let _ = tokio::signal::ctrl_c().await;
        };
        batch_emulator::serve(listener, emulator, shutdown)
            .await
            .context("the emulator stopped")
    })?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_banner_shows_the_well_known_key_and_never_a_scenario_key() {
        let builtin = banner("127.0.0.1:1", "devbatch1", WELL_KNOWN_ACCOUNT_KEY, None);
        assert!(builtin.contains(&format!("AZURE_BATCH_ACCESS_KEY={WELL_KNOWN_ACCOUNT_KEY}")));
        assert!(builtin.contains("AZURE_BATCH_ACCOUNT=devbatch1"));

        // The well-known account name with a key of its own: the old banner printed the
        // well-known key, which the emulator would then refuse.
        let path = std::path::Path::new("my-scenario.json");
        for account in ["devbatch1", "acct2"] {
            let own = banner("127.0.0.1:1", account, "c2NlbmFyaW8ta2V5", Some(path));
            assert!(!own.contains("c2NlbmFyaW8ta2V5"), "{own}");
            assert!(!own.contains(WELL_KNOWN_ACCOUNT_KEY), "{own}");
            assert!(
                own.contains(&format!("AZURE_BATCH_ACCOUNT={account}")),
                "{own}"
            );
            assert!(own.contains("account.key in my-scenario.json"), "{own}");
        }
    }
}
