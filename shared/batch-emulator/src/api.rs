//! The Batch operations: jobs, tasks, task counts, prep/release status (files are in
//! [`crate::file_api`]).

use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use bytes::Bytes;
use serde_json::{Map, Value};
use time::OffsetDateTime;

use crate::clock;
use crate::emulator::Emulator;
use crate::error::ApiError;
use crate::filter::Target;
use crate::paging::{ListParams, list_body, list_response, take_page};
use crate::render;
use crate::route::Route;
use crate::select::Select;
use crate::server::{Ctx, empty_response, json_response, set_header};
use crate::state::{DisableMode, key};
use crate::{agent_logs, file_api, pool_api};

/// Runs the operation a route names.
pub(crate) fn dispatch(
    emulator: &Emulator,
    ctx: &Ctx,
    route: Route,
    body: Bytes,
) -> Result<Response, ApiError> {
    match route {
        Route::Jobs => list_jobs(emulator, ctx),
        Route::Job(job) => get_job(emulator, ctx, &job),
        Route::TerminateJob(job) => terminate_job(emulator, ctx, &job, &body),
        Route::DisableJob(job) => disable_job(emulator, ctx, &job, &body),
        Route::EnableJob(job) => enable_job(emulator, ctx, &job),
        Route::Tasks(job) => list_tasks(emulator, ctx, &job),
        Route::Task(job, task) => get_task(emulator, ctx, &job, &task),
        Route::TerminateTask(job, task) => terminate_task(emulator, ctx, &job, &task),
        Route::TaskCounts(job) => task_counts(emulator, ctx, &job),
        Route::PrepRelease(job) => prep_release(emulator, ctx, &job),
        Route::TaskFiles(job, task) => file_api::list_task_files(emulator, ctx, &job, &task),
        Route::TaskFile(job, task, path) => {
            file_api::get_task_file(emulator, ctx, &job, &task, &path)
        }
        Route::NodeFiles(pool, node) => file_api::list_node_files(emulator, ctx, &pool, &node),
        Route::NodeFile(pool, node, path) => {
            file_api::get_node_file(emulator, ctx, &pool, &node, &path)
        }
        Route::Pools => pool_api::list_pools(emulator, ctx),
        Route::Pool(pool) => pool_api::get_pool(emulator, ctx, &pool),
        Route::Nodes(pool) => pool_api::list_nodes(emulator, ctx, &pool),
        Route::Node(pool, node) => pool_api::get_node(emulator, ctx, &pool, &node),
        Route::NodeCounts => pool_api::node_counts(emulator, ctx),
        Route::RemoveNodes(pool) => pool_api::remove_nodes(emulator, ctx, &pool, &body),
        Route::ReimageNode(pool, node) => {
            pool_api::reimage_node(emulator, ctx, &pool, &node, &body)
        }
        Route::UploadLogs(pool, node) => {
            agent_logs::upload_logs(emulator, ctx, &pool, &node, &body)
        }
    }
}

/// Outcome of the conditional headers.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Condition {
    /// Go ahead.
    Proceed,
    /// Answer 304 (reads only).
    NotModified,
}

/// Applies `If-Match`, `If-None-Match`, `If-Modified-Since` and `If-Unmodified-Since` to a
/// resource with `etag` and `last_modified`. Reads may answer 304; writes fail with 412.
pub(crate) fn check_conditions(
    headers: &HeaderMap,
    etag: &str,
    last_modified: Option<OffsetDateTime>,
    read: bool,
) -> Result<Condition, ApiError> {
    let value = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let matches = |list: &str| {
        list.split(',')
            .map(|tag| tag.trim().trim_start_matches("W/").trim_matches('"'))
            .any(|tag| tag == "*" || tag == etag)
    };
    if let Some(list) = value("if-match") {
        if !matches(list) {
            return Err(ApiError::condition_not_met());
        }
    }
    if let Some(list) = value("if-unmodified-since") {
        let since = clock::parse_http_date(list);
        if let (Some(since), Some(modified)) = (since, last_modified) {
            if modified.unix_timestamp() > since.unix_timestamp() {
                return Err(ApiError::condition_not_met());
            }
        }
    }
    if let Some(list) = value("if-none-match") {
        if matches(list) {
            return if read {
                Ok(Condition::NotModified)
            } else {
                Err(ApiError::condition_not_met())
            };
        }
    }
    if let Some(text) = value("if-modified-since") {
        let since = clock::parse_http_date(text);
        if let (Some(since), Some(modified)) = (since, last_modified) {
            if modified.unix_timestamp() <= since.unix_timestamp() {
                return if read {
                    Ok(Condition::NotModified)
                } else {
                    Err(ApiError::condition_not_met())
                };
            }
        }
    }
    Ok(Condition::Proceed)
}

fn etag_of(json: &Map<String, Value>) -> String {
    json.get("eTag")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

fn last_modified_of(json: &Map<String, Value>) -> Option<OffsetDateTime> {
    json.get("lastModified")
        .and_then(Value::as_str)
        .and_then(clock::parse_time)
}

/// Adds `ETag` and `Last-Modified` for a job or task.
pub(crate) fn entity_headers(response: &mut Response, json: &Map<String, Value>) {
    set_header(response, "ETag", &etag_of(json));
    if let Some(modified) = last_modified_of(json) {
        set_header(response, "Last-Modified", &clock::http_date(modified));
    }
}

/// A get's body with `odata.metadata` (`metadata` names the entity set) and `$select` applied.
pub(crate) fn shaped(ctx: &Ctx, mut body: Map<String, Value>, metadata: &str) -> Value {
    body.insert(
        "odata.metadata".into(),
        Value::String(format!("{}/$metadata#{metadata}/@Element", ctx.base)),
    );
    match ctx.query.get("$select").and_then(Select::parse) {
        Some(select) => Value::Object(select.apply(&body)),
        None => Value::Object(body),
    }
}

/// The answer to a get of a job or a task whose stored form is `json`: 304 when the request's
/// conditions say the caller has it, else the entity `render`s, [`shaped`], with its `ETag` and
/// `Last-Modified`.
fn entity_response(
    ctx: &Ctx,
    json: &Map<String, Value>,
    metadata: &str,
    render: impl FnOnce() -> Map<String, Value>,
) -> Result<Response, ApiError> {
    let condition = check_conditions(&ctx.headers, &etag_of(json), last_modified_of(json), true)?;
    if condition == Condition::NotModified {
        return Ok(not_modified(json));
    }
    let mut response = json_response(StatusCode::OK, &shaped(ctx, render(), metadata));
    entity_headers(&mut response, json);
    Ok(response)
}

fn not_modified(json: &Map<String, Value>) -> Response {
    let mut response = empty_response(StatusCode::NOT_MODIFIED);
    entity_headers(&mut response, json);
    response
}

fn list_jobs(emulator: &Emulator, ctx: &Ctx) -> Result<Response, ApiError> {
    let params = ListParams::parse(&ctx.query, Target::Jobs)?;
    let mut state = emulator.state();
    state.tick(ctx.now);
    let keys = {
        let rows = state.jobs.iter().map(|(k, job)| (k.as_str(), job));
        let (page, next) = take_page(rows, &params, |job| params.keep(&job.json));
        let keys: Vec<String> = page.iter().map(|(k, _)| (*k).to_owned()).collect();
        (keys, next)
    };
    let (keys, next) = keys;
    state.observe_jobs(&keys, ctx.now);
    let value = keys
        .iter()
        .filter_map(|k| state.jobs.get(k))
        .map(|job| params.shape(render::job(&ctx.base, job)))
        .collect();
    Ok(json_response(
        StatusCode::OK,
        &list_body(ctx, "jobs", value, next),
    ))
}

fn get_job(emulator: &Emulator, ctx: &Ctx, job_id: &str) -> Result<Response, ApiError> {
    let mut state = emulator.state();
    let job = state.job_mut(job_id, ctx.now, true)?;
    entity_response(ctx, &job.json, "jobs", || render::job(&ctx.base, job))
}

/// A 202 for a job action, with `DataServiceId` and the new ETag.
fn accepted(ctx: &Ctx, emulator: &Emulator, job_id: &str) -> Response {
    let mut response = empty_response(StatusCode::ACCEPTED);
    set_header(
        &mut response,
        "DataServiceId",
        &render::job_url(&ctx.base, job_id),
    );
    let state = emulator.state();
    if let Some(job) = state.jobs.get(&key(job_id)) {
        entity_headers(&mut response, &job.json);
    }
    response
}

/// Checks the conditional headers of a write against the job's current ETag.
fn check_job_write(emulator: &Emulator, ctx: &Ctx, job_id: &str) -> Result<(), ApiError> {
    let mut state = emulator.state();
    let job = state.job_mut(job_id, ctx.now, false)?;
    check_conditions(
        &ctx.headers,
        &etag_of(&job.json),
        last_modified_of(&job.json),
        false,
    )?;
    Ok(())
}

/// Parses an optional JSON object body.
pub(crate) fn body_object(body: &Bytes) -> Result<Option<Map<String, Value>>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(Some(map)),
        Ok(_) => Err(ApiError::invalid_body(
            "The request body must be a JSON object.",
        )),
        Err(error) => Err(ApiError::invalid_body(&format!(
            "The request body is not valid JSON: {error}"
        ))),
    }
}

fn terminate_job(
    emulator: &Emulator,
    ctx: &Ctx,
    job_id: &str,
    body: &Bytes,
) -> Result<Response, ApiError> {
    if let Some(force) = ctx.query.get("force") {
        if !force.eq_ignore_ascii_case("true") && !force.eq_ignore_ascii_case("false") {
            return Err(ApiError::invalid_query_parameter(
                "force",
                force,
                "force must be true or false.",
            ));
        }
    }
    let reason = match body_object(body)?.and_then(|mut map| map.remove("terminateReason")) {
        None | Some(Value::Null) => "UserTerminate".to_owned(),
        Some(Value::String(reason)) if reason.chars().count() <= 64 => reason,
        Some(other) => {
            return Err(ApiError::invalid_property(
                "terminateReason",
                &other.to_string(),
            ));
        }
    };
    check_job_write(emulator, ctx, job_id)?;
    emulator.state().terminate_job(job_id, reason, ctx.now)?;
    Ok(accepted(ctx, emulator, job_id))
}

fn disable_job(
    emulator: &Emulator,
    ctx: &Ctx,
    job_id: &str,
    body: &Bytes,
) -> Result<Response, ApiError> {
    let mode = match body_object(body)?.and_then(|mut map| map.remove("disableTasks")) {
        None | Some(Value::Null) => return Err(ApiError::missing_property("disableTasks")),
        Some(Value::String(text)) => DisableMode::parse(&text)
            .ok_or_else(|| ApiError::invalid_property("disableTasks", &text))?,
        Some(other) => {
            return Err(ApiError::invalid_property(
                "disableTasks",
                &other.to_string(),
            ));
        }
    };
    check_job_write(emulator, ctx, job_id)?;
    emulator.state().disable_job(job_id, mode, ctx.now)?;
    Ok(accepted(ctx, emulator, job_id))
}

fn enable_job(emulator: &Emulator, ctx: &Ctx, job_id: &str) -> Result<Response, ApiError> {
    check_job_write(emulator, ctx, job_id)?;
    emulator.state().enable_job(job_id, ctx.now)?;
    Ok(accepted(ctx, emulator, job_id))
}

fn list_tasks(emulator: &Emulator, ctx: &Ctx, job_id: &str) -> Result<Response, ApiError> {
    let params = ListParams::parse(&ctx.query, Target::Tasks)?;
    let mut state = emulator.state();
    let job = state.job_mut(job_id, ctx.now, false)?;
    let rows = job.tasks.iter().map(|(k, task)| (k.as_str(), task));
    Ok(list_response(
        ctx,
        &params,
        "tasks",
        rows,
        |task| &task.json,
        |task| render::task(&ctx.base, job_id, task),
    ))
}

fn get_task(
    emulator: &Emulator,
    ctx: &Ctx,
    job_id: &str,
    task_id: &str,
) -> Result<Response, ApiError> {
    let mut state = emulator.state();
    let job = state.job_mut(job_id, ctx.now, false)?;
    let task = job
        .tasks
        .get(&key(task_id))
        .ok_or_else(ApiError::task_not_found)?;
    entity_response(ctx, &task.json, "tasks", || {
        render::task(&ctx.base, job_id, task)
    })
}

fn terminate_task(
    emulator: &Emulator,
    ctx: &Ctx,
    job_id: &str,
    task_id: &str,
) -> Result<Response, ApiError> {
    {
        let mut state = emulator.state();
        let job = state.job_mut(job_id, ctx.now, false)?;
        let task = job
            .tasks
            .get(&key(task_id))
            .ok_or_else(ApiError::task_not_found)?;
        check_conditions(
            &ctx.headers,
            &etag_of(&task.json),
            last_modified_of(&task.json),
            false,
        )?;
        state.terminate_task(job_id, task_id, ctx.now)?;
    }
    let mut response = empty_response(StatusCode::NO_CONTENT);
    set_header(
        &mut response,
        "DataServiceId",
        &render::task_url(&ctx.base, job_id, task_id),
    );
    let state = emulator.state();
    if let Some(task) = state
        .jobs
        .get(&key(job_id))
        .and_then(|job| job.tasks.get(&key(task_id)))
    {
        entity_headers(&mut response, &task.json);
    }
    Ok(response)
}

fn task_counts(emulator: &Emulator, ctx: &Ctx, job_id: &str) -> Result<Response, ApiError> {
    let mut state = emulator.state();
    let job = state.job_mut(job_id, ctx.now, false)?;
    Ok(json_response(
        StatusCode::OK,
        &render::task_counts(&ctx.base, job),
    ))
}

fn prep_release(emulator: &Emulator, ctx: &Ctx, job_id: &str) -> Result<Response, ApiError> {
    let params = ListParams::parse(&ctx.query, Target::PrepRelease)?;
    let mut state = emulator.state();
    let job = state.job_mut(job_id, ctx.now, false)?;
    if !job.json.contains_key("jobPreparationTask") && !job.json.contains_key("jobReleaseTask") {
        return Err(ApiError::prep_not_specified());
    }
    let rows = job.prep_release.iter().map(|(k, row)| (k.as_str(), row));
    let (page, next) = take_page(rows, &params, |row| params.keep(row));
    let value = page
        .into_iter()
        .map(|(_, row)| params.shape(render::prep_release_row(&ctx.base, row)))
        .collect();
    Ok(json_response(
        StatusCode::OK,
        &list_body(ctx, "jobpreparationandreleasetaskstatuslist", value, next),
    ))
}
