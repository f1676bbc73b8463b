//! The admin API under `/_emulator/`, so a separate process (a Python test, a demo script) can
//! script faults and inspect what happened. Not authenticated, not logged, never faulted:
//! keep the emulator on 127.0.0.1.
//!
//! | Route | Effect |
//! |---|---|
//! | `GET /_emulator/health` | `{"status":"ok","account":…}` |
//! | `GET /_emulator/requests` · `DELETE` | the request log · clear it |
//! | `GET /_emulator/faults` | rules with `matched`/`fired` counters |
//! | `PUT /_emulator/faults` | replace all rules (body: a rule or an array of rules) |
//! | `POST /_emulator/faults` | append rules (same body) |
//! | `DELETE /_emulator/faults` | remove all rules |
//! | `POST /_emulator/nodes/{pool}/{node}/remove` | remove the node (files → 404 `NodeNotFound`) |
//! | `POST /_emulator/nodes/{pool}/{node}/state` | body `{"state": "available"\|"notReady"\|"removed"}` |
//! | `POST /_emulator/nodes/{pool}/{node}/recover` | the node recovers (`idle`, no errors, start task succeeded) |
//! | `POST /_emulator/pools/{pool}/finish-resize` | the pool grows to its target, `resizeErrors` cleared, `steady` |
//! | `POST /_emulator/pools/{pool}/autoscale-ok` | the pool's autoscale formula evaluates without error |
//! | `DELETE /_emulator/pools/{pool}` | the pool's deletion completes (it and its nodes answer 404) |
//! | `POST /_emulator/settle` | complete all pending job transitions, node removals and reimages |
//! | `GET /_emulator/jobs/{job}` | the job now, without counting as a read |
//! | `GET /_emulator/node-actions` | the node actions carried out (`poolId`, `nodeId`, `kind`: `remove`\|`reimage`, `option`) |
//! | `GET /_emulator/agent-log-uploads` | the `uploadbatchservicelogs` answered (destinations without their SAS query) |

use axum::body::Body;
use axum::http::{Method, StatusCode};
use axum::response::Response;
use percent_encoding::percent_decode_str;
use serde_json::{Value, json};

use crate::emulator::Emulator;
use crate::faults::FaultRule;
use crate::scenario::NodeState;
use crate::server::{MAX_BODY, empty_response, json_response};

fn problem(status: StatusCode, message: &str) -> Response {
    json_response(status, &json!({"error": message}))
}

/// Handles one admin request.
pub(crate) async fn handle(
    emulator: &Emulator,
    method: &Method,
    raw_path: &str,
    body: Body,
) -> Response {
    let Ok(body) = axum::body::to_bytes(body, MAX_BODY).await else {
        return problem(StatusCode::PAYLOAD_TOO_LARGE, "body too large");
    };
    let segments: Vec<String> = raw_path
        .split('/')
        .filter(|s| !s.is_empty())
        .skip(1)
        .map(|s| percent_decode_str(s).decode_utf8_lossy().into_owned())
        .collect();
    let s: Vec<&str> = segments.iter().map(String::as_str).collect();
    match (method.as_str(), s.as_slice()) {
        ("GET", ["health"]) => json_response(
            StatusCode::OK,
            &json!({"status": "ok", "account": emulator.account_name()}),
        ),
        ("GET", ["requests"]) => json_response(
            StatusCode::OK,
            &serde_json::to_value(emulator.requests()).unwrap_or(Value::Null),
        ),
        ("DELETE", ["requests"]) => {
            emulator.clear_requests();
            empty_response(StatusCode::NO_CONTENT)
        }
        ("GET", ["faults"]) => json_response(
            StatusCode::OK,
            &serde_json::to_value(emulator.faults()).unwrap_or(Value::Null),
        ),
        ("PUT" | "POST", ["faults"]) => match parse_rules(&body) {
            Ok(rules) => {
                if method == Method::PUT {
                    emulator.set_faults(rules);
                } else {
                    emulator.extend_faults(rules);
                }
                json_response(
                    StatusCode::OK,
                    &serde_json::to_value(emulator.faults()).unwrap_or(Value::Null),
                )
            }
            Err(message) => problem(StatusCode::BAD_REQUEST, &message),
        },
        ("DELETE", ["faults"]) => {
            emulator.clear_faults();
            empty_response(StatusCode::NO_CONTENT)
        }
        ("POST", ["nodes", pool, node, "remove"]) => {
            node_state(emulator, pool, node, NodeState::Removed)
        }
        ("POST", ["nodes", pool, node, "state"]) => {
            #[derive(serde::Deserialize)]
            struct Body {
                state: NodeState,
            }
            match serde_json::from_slice::<Body>(&body) {
                Ok(parsed) => node_state(emulator, pool, node, parsed.state),
                Err(error) => problem(StatusCode::BAD_REQUEST, &error.to_string()),
            }
        }
        ("POST", ["nodes", pool, node, "recover"]) => {
            found(emulator.recover_node(pool, node), "no such node")
        }
        ("POST", ["pools", pool, "finish-resize"]) => {
            found(emulator.finish_pool_resize(pool), "no such pool")
        }
        ("POST", ["pools", pool, "autoscale-ok"]) => {
            found(emulator.succeed_autoscale(pool), "no such pool")
        }
        ("DELETE", ["pools", pool]) => found(emulator.delete_pool(pool), "no such pool"),
        ("POST", ["settle"]) => {
            emulator.settle();
            empty_response(StatusCode::NO_CONTENT)
        }
        ("GET", ["node-actions"]) => json_response(
            StatusCode::OK,
            &serde_json::to_value(emulator.node_actions()).unwrap_or(Value::Null),
        ),
        ("GET", ["agent-log-uploads"]) => json_response(
            StatusCode::OK,
            &serde_json::to_value(emulator.agent_log_uploads()).unwrap_or(Value::Null),
        ),
        ("GET", ["jobs", job]) => match emulator.job(job) {
            Some(job) => json_response(StatusCode::OK, &job),
            None => problem(StatusCode::NOT_FOUND, "no such job"),
        },
        _ => problem(StatusCode::NOT_FOUND, "unknown admin route"),
    }
}

fn node_state(emulator: &Emulator, pool: &str, node: &str, state: NodeState) -> Response {
    found(emulator.set_node_state(pool, node, state), "no such node")
}

/// 204 when the control found its pool or node, else 404 with `missing`.
fn found(done: bool, missing: &str) -> Response {
    if done {
        empty_response(StatusCode::NO_CONTENT)
    } else {
        problem(StatusCode::NOT_FOUND, missing)
    }
}

/// A rule or an array of rules, each checked.
fn parse_rules(body: &[u8]) -> Result<Vec<FaultRule>, String> {
    let value: Value = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    let rules: Vec<FaultRule> = match value {
        Value::Array(_) => serde_json::from_value(value).map_err(|e| e.to_string())?,
        other => vec![serde_json::from_value(other).map_err(|e| e.to_string())?],
    };
    for rule in &rules {
        rule.validate()?;
    }
    Ok(rules)
}
