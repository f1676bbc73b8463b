//! The Lambda function: reads the settings from the environment, builds the pipeline once per
//! execution environment, and serves invocations from the Runtime API until Lambda stops it.
//! Everything else is in the library.

use std::sync::Arc;

use batch_triage_aws_lambda::handler::Handler;
use batch_triage_aws_lambda::init_error::report_init_error;
use batch_triage_aws_lambda::lambda_deadline;
use batch_triage_aws_lambda::settings::Settings;
use batch_triage_aws_lambda::verdict::NON_RETRYABLE;
use lambda_runtime::{Diagnostic, LambdaEvent, service_fn};
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    init_tracing();
    let handler = match build() {
        Ok(handler) => handler,
        Err(message) => {
            tracing::error!(%message, "cannot start");
            let diagnostic = Diagnostic {
                error_type: NON_RETRYABLE.to_owned(),
                error_message: message.clone(),
            };
            if let Err(error) = report_init_error(&diagnostic).await {
                tracing::error!(%error, "could not report the init error to the Runtime API");
            }
            return Err(message.into());
        }
    };
    let handler = &handler;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        let deadline = lambda_deadline(&event.context);
        handler.handle(&event.payload, deadline).await
    }))
    .await
}

fn build() -> Result<Handler, String> {
    let settings = Settings::from_env(|name| std::env::var(name).ok())
        .map_err(|error| format!("configuration: {error}"))?;
    let budget = settings.pipeline.invocation_budget;
    let triage = settings
        .pipeline
        .build()
        .map_err(|error| format!("building the pipeline from the settings: {error}"))?;
    Ok(Handler::new(Arc::new(triage), settings.webhook_key, budget))
}

/// Lambda's log format and level controls (`AWS_LAMBDA_LOG_FORMAT`, `AWS_LAMBDA_LOG_LEVEL`),
/// except that `lambda_runtime` never logs below DEBUG: at TRACE it prints each raw event, and a
/// webhook request carries the shared key in its query string.
fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    use tracing_subscriber::filter::LevelFilter;

    let level = std::env::var("AWS_LAMBDA_LOG_LEVEL")
        .or_else(|_| std::env::var("RUST_LOG"))
        .ok()
        .and_then(|level| level.trim().parse::<LevelFilter>().ok())
        .unwrap_or(LevelFilter::INFO);
    let mut filter = EnvFilter::builder()
        .with_default_directive(level.into())
        .parse_lossy("");
    // A target directive overrides the default level, so it is the lower of the two.
    if let Ok(cap) = format!("lambda_runtime={}", level.min(LevelFilter::DEBUG)).parse() {
        filter = filter.add_directive(cap);
    }
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .without_time()
        .with_ansi(false);
    if std::env::var("AWS_LAMBDA_LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("json")) {
        subscriber.json().init();
    } else {
        subscriber.init();
    }
}
