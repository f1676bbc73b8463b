//! Lists the jobs of a Batch account with the credentials the Azure CLI's environment variables
//! give: `AZURE_BATCH_ENDPOINT`, `AZURE_BATCH_ACCOUNT`, `AZURE_BATCH_ACCESS_KEY` (Shared Key), or
//! without a key, Microsoft Entra (managed identity when `IDENTITY_ENDPOINT`/`IDENTITY_HEADER` are
//! set, as on Azure Functions; a client secret; or the developer tools).
//!
//! `cargo run -p batch-triage-batch-client --example list_jobs`

use std::process::ExitCode;
use std::time::Duration;

use batch_client::{BatchApi, BatchClient, BatchConfig, Deadline, ListOptions, items};
use futures::TryStreamExt;

extern crate batch_triage_batch_client as batch_client;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let client = match BatchConfig::from_env_vars(|name| std::env::var(name).ok())
        .and_then(BatchClient::new)
    {
        Ok(client) => client,
        Err(error) => {
            eprintln!("list_jobs: {error}");
            return ExitCode::from(2);
        }
    };
    let options = ListOptions {
        select: Some("id,state".to_owned()),
        ..ListOptions::default()
    };
    let jobs = items(client.list_jobs(&options, Deadline::after(Duration::from_secs(60))));
    match jobs
        .try_for_each(|job| {
            println!(
                "{}\t{}",
                job.id.unwrap_or_default(),
                job.state.map(|s| s.to_string()).unwrap_or_default()
            );
            futures::future::ready(Ok(()))
        })
        .await
    {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("list_jobs: {error}");
            ExitCode::from(1)
        }
    }
}
