//! The Azure Functions custom handler: reads the app settings, builds the pipeline once, and
//! serves the host on 127.0.0.1:`FUNCTIONS_CUSTOMHANDLER_PORT`. Everything else is in the library.

use std::sync::Arc;

use anyhow::Context;
use batch_triage_azure_functions::app::{AppState, app};
use batch_triage_azure_functions::settings::Settings;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // Info by default (RUST_LOG overrides): the one line per invocation that the alert queries
    // and README.md's "Monitoring" read is an info line.
    let filter = tracing_subscriber::EnvFilter::builder()
        .with_default_directive(tracing_subscriber::filter::LevelFilter::INFO.into())
        .from_env_lossy();
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .init();
    let settings = Settings::from_env(|name| std::env::var(name).ok())?;
    let (port, budget) = (settings.port, settings.pipeline.invocation_budget);
    let triage = settings
        .pipeline
        .build()
        .context("building the pipeline from the app settings")?;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .with_context(|| format!("cannot listen on 127.0.0.1:{port}"))?;
    tracing::info!(port, "batch-triage custom handler ready");
    axum::serve(
        listener,
        app(AppState {
            triage: Arc::new(triage),
            budget,
        }),
    )
    .await?;
    Ok(())
}
