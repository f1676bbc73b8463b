//! Reporting a failed start to Lambda. `lambda_runtime` reports invocation errors itself, but a
//! function that cannot even build its pipeline (a missing setting, an unreadable policy) must
//! say so on the Runtime API's `/runtime/init/error`; otherwise Lambda only sees the process
//! exit and the cause is lost.

use lambda_runtime::Diagnostic;
use lambda_runtime_api_client::{PooledClient, body::Body, build_request};

/// Posts `diagnostic` to `/2018-06-01/runtime/init/error` of the Runtime API named by
/// `AWS_LAMBDA_RUNTIME_API`. Best effort: a failure to report is returned for the caller to log,
/// and the caller exits either way.
pub async fn report_init_error(diagnostic: &Diagnostic) -> Result<(), String> {
    if std::env::var_os("AWS_LAMBDA_RUNTIME_API").is_none() {
        return Err("AWS_LAMBDA_RUNTIME_API is not set: not running under Lambda".to_owned());
    }
    let body = serde_json::to_vec(diagnostic).map_err(|e| e.to_string())?;
    let request = build_request()
        .method("POST")
        .uri("/2018-06-01/runtime/init/error")
        .header("Lambda-Runtime-Function-Error-Type", "Runtime.InitError")
        .header("Content-Type", "application/json")
        .body(Body::from(body))
        .map_err(|e| e.to_string())?;
    let response = PooledClient::builder()
        .build()
        .call(request)
        .await
        .map_err(|e| e.to_string())?;
    if response.status().is_success() {
        Ok(())
    } else {
        Err(format!("the Runtime API answered {}", response.status()))
    }
}
