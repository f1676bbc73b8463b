//! Task and node file operations: list, GET (streamed, with ranges) and HEAD.
//!
//! Ranges: `ocp-range: bytes=start-end` (or a standard `Range` header) is honoured the way the
//! Batch REST spec describes the operation: the answer is **200** (the only success status the
//! spec and the official SDKs accept for Get File; the Python SDK raises on anything else)
//! carrying just the requested bytes, with `Content-Length` equal to the range length. No
//! `Content-Range` is sent. A range that starts past the end gives 416 `InvalidRange`; a
//! malformed one 400 `InvalidHeaderValue`.

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use serde_json::{Map, Value};

use crate::api::{Condition, check_conditions};
use crate::clock;
use crate::emulator::Emulator;
use crate::error::ApiError;
use crate::files::{FileEntry, Listed, Lookup, RangeError, parse_range};
use crate::filter::Target;
use crate::paging::{ListParams, list_body, take_page};
use crate::render;
use crate::server::{Ctx, empty_response, json_response, set_header};

fn recursive(ctx: &Ctx) -> Result<bool, ApiError> {
    match ctx.query.get("recursive") {
        None => Ok(false),
        Some(v) if v.eq_ignore_ascii_case("true") => Ok(true),
        Some(v) if v.eq_ignore_ascii_case("false") => Ok(false),
        Some(v) => Err(ApiError::invalid_query_parameter(
            "recursive",
            v,
            "recursive must be true or false.",
        )),
    }
}

/// Renders a file listing page.
fn listing(ctx: &Ctx, url_base: &str, rows: &[Listed<'_>]) -> Result<Response, ApiError> {
    let params = ListParams::parse(&ctx.query, Target::Files)?;
    let named: Vec<(&str, Map<String, Value>, Option<&FileEntry>)> = rows
        .iter()
        .map(|row| {
            let mut map = Map::new();
            map.insert("name".into(), Value::String(row.name.clone()));
            (row.name.as_str(), map, row.file)
        })
        .collect();
    let iter = named.iter().map(|(name, map, file)| (*name, (map, *file)));
    let (page, next) = take_page(iter, &params, |(map, _)| params.keep(map));
    let value = page
        .into_iter()
        .map(|(name, (_, file))| Value::Object(render::file_row(url_base, name, file)))
        .collect();
    Ok(json_response(
        StatusCode::OK,
        &list_body(ctx, "files", value, next),
    ))
}

/// `GET /jobs/{job}/tasks/{task}/files`.
pub(crate) fn list_task_files(
    emulator: &Emulator,
    ctx: &Ctx,
    job_id: &str,
    task_id: &str,
) -> Result<Response, ApiError> {
    let recursive = recursive(ctx)?;
    ListParams::parse(&ctx.query, Target::Files)?;
    let url_base = format!("{}/files", render::task_url(&ctx.base, job_id, task_id));
    let mut state = emulator.state();
    match state.task_files(job_id, task_id, ctx.now)? {
        None => listing(ctx, &url_base, &[]),
        Some((node, root)) => listing(ctx, &url_base, &node.files.list(&root, recursive)),
    }
}

/// `GET /pools/{pool}/nodes/{node}/files`.
pub(crate) fn list_node_files(
    emulator: &Emulator,
    ctx: &Ctx,
    pool_id: &str,
    node_id: &str,
) -> Result<Response, ApiError> {
    let recursive = recursive(ctx)?;
    ListParams::parse(&ctx.query, Target::Files)?;
    let url_base = format!("{}/files", render::node_url(&ctx.base, pool_id, node_id));
    let state = emulator.state();
    let node = state.readable_node(pool_id, node_id)?;
    listing(ctx, &url_base, &node.files.list("", recursive))
}

/// `GET`/`HEAD /jobs/{job}/tasks/{task}/files/{path}`.
pub(crate) fn get_task_file(
    emulator: &Emulator,
    ctx: &Ctx,
    job_id: &str,
    task_id: &str,
    path: &str,
) -> Result<Response, ApiError> {
    let url = format!(
        "{}/files/{}",
        render::task_url(&ctx.base, job_id, task_id),
        render::file_path(path)
    );
    let found = {
        let mut state = emulator.state();
        match state.task_files(job_id, task_id, ctx.now)? {
            None => Found::Missing,
            Some((node, root)) if root.is_empty() => Found::from(node.files.lookup(path)),
            Some((node, root)) => Found::from(node.files.lookup(&format!("{root}/{path}"))),
        }
    };
    serve(ctx, found, &url)
}

/// `GET`/`HEAD /pools/{pool}/nodes/{node}/files/{path}`.
pub(crate) fn get_node_file(
    emulator: &Emulator,
    ctx: &Ctx,
    pool_id: &str,
    node_id: &str,
    path: &str,
) -> Result<Response, ApiError> {
    let url = format!(
        "{}/files/{}",
        render::node_url(&ctx.base, pool_id, node_id),
        render::file_path(path)
    );
    let found = {
        let state = emulator.state();
        let node = state.readable_node(pool_id, node_id)?;
        Found::from(node.files.lookup(path))
    };
    serve(ctx, found, &url)
}

/// A lookup result that owns what it needs, so the state lock is released before streaming.
enum Found {
    File(FileEntry),
    Directory,
    Missing,
}

impl From<Lookup<'_>> for Found {
    fn from(lookup: Lookup<'_>) -> Self {
        match lookup {
            Lookup::File(entry) => Found::File(entry.clone()),
            Lookup::Directory => Found::Directory,
            Lookup::Missing => Found::Missing,
        }
    }
}

fn serve(ctx: &Ctx, found: Found, url: &str) -> Result<Response, ApiError> {
    let entry = match found {
        Found::Missing => return Err(ApiError::file_not_found()),
        Found::Directory => {
            let mut response = empty_response(StatusCode::OK);
            set_header(&mut response, "ocp-batch-file-isdirectory", "true");
            set_header(&mut response, "ocp-batch-file-url", url);
            response
                .headers_mut()
                .insert(header::CONTENT_LENGTH, HeaderValue::from(0u64));
            return Ok(response);
        }
        Found::File(entry) => entry,
    };
    let etag = format!("0x{:X}", clock::ticks(entry.last_modified));
    let condition = check_conditions(&ctx.headers, &etag, Some(entry.last_modified), true)?;
    let len = entry.content.len();
    let range_header = ["ocp-range", "range"]
        .into_iter()
        .find_map(|name| ctx.headers.get(name).map(|v| (name, v)));
    let (start, end) = match range_header {
        None => (0, len),
        Some((name, value)) => {
            let text = value
                .to_str()
                .map_err(|_| ApiError::invalid_header(name, "<non-ASCII>"))?;
            parse_range(text, len).map_err(|error| match error {
                RangeError::Malformed => ApiError::invalid_header(name, text),
                RangeError::Unsatisfiable => ApiError::invalid_range(len),
            })?
        }
    };
    let mut response = if condition == Condition::NotModified {
        empty_response(StatusCode::NOT_MODIFIED)
    } else if ctx.method == axum::http::Method::HEAD {
        empty_response(StatusCode::OK)
    } else {
        let mut response = Response::new(Body::from_stream(entry.content.stream(start, end)));
        *response.status_mut() = StatusCode::OK;
        response
    };
    let headers = response.headers_mut();
    if condition == Condition::Proceed {
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(end - start));
    }
    if let Ok(value) = HeaderValue::from_str(&entry.content_type) {
        headers.insert(header::CONTENT_TYPE, value);
    }
    set_header(&mut response, "ETag", &etag);
    set_header(
        &mut response,
        "Last-Modified",
        &clock::http_date(entry.last_modified),
    );
    set_header(
        &mut response,
        "ocp-creation-time",
        &clock::http_date(entry.creation_time),
    );
    set_header(&mut response, "ocp-batch-file-isdirectory", "false");
    set_header(&mut response, "ocp-batch-file-url", url);
    if let Some(mode) = &entry.file_mode {
        set_header(&mut response, "ocp-batch-file-mode", mode);
    }
    Ok(response)
}
