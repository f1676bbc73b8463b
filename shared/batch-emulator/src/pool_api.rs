//! The pool and node operations: list/get pools and nodes, pool node counts, Remove Nodes and
//! Reimage Node (`uploadbatchservicelogs` is in [`crate::agent_logs`]).

use axum::http::StatusCode;
use axum::response::Response;
use bytes::Bytes;
use serde_json::{Map, Value};

use crate::api::{body_object, entity_headers, shaped};
use crate::emulator::Emulator;
use crate::error::ApiError;
use crate::filter::Target;
use crate::paging::{ListParams, list_body, list_response, take_page};
use crate::render;
use crate::server::{Ctx, empty_response, json_response, set_header};
use crate::state::{Deallocation, MAX_REMOVE_NODES, key};

/// Default and largest page of `GET /nodecounts` (the service's limit is 10, not 1000).
const NODE_COUNTS_PAGE: usize = 10;

pub(crate) fn list_pools(emulator: &Emulator, ctx: &Ctx) -> Result<Response, ApiError> {
    let params = ListParams::parse(&ctx.query, Target::Pools)?;
    let mut state = emulator.state();
    state.tick_pools(ctx.now, None);
    let rows = state.pools.iter().map(|(k, pool)| (k.as_str(), pool));
    Ok(list_response(
        ctx,
        &params,
        "pools",
        rows,
        |pool| &pool.json,
        |pool| render::pool(&ctx.base, pool),
    ))
}

pub(crate) fn get_pool(
    emulator: &Emulator,
    ctx: &Ctx,
    pool_id: &str,
) -> Result<Response, ApiError> {
    let mut state = emulator.state();
    let pool = state.read_pool(pool_id, ctx.now)?;
    let body = shaped(ctx, render::pool(&ctx.base, pool), "pools");
    let mut response = json_response(StatusCode::OK, &body);
    entity_headers(&mut response, &pool.json);
    Ok(response)
}

pub(crate) fn list_nodes(
    emulator: &Emulator,
    ctx: &Ctx,
    pool_id: &str,
) -> Result<Response, ApiError> {
    let params = ListParams::parse(&ctx.query, Target::Nodes)?;
    let mut state = emulator.state();
    state.read_pool(pool_id, ctx.now)?;
    let pool_key = key(pool_id);
    Ok(list_response(
        ctx,
        &params,
        "nodes",
        state.pool_nodes(&pool_key),
        |node| &node.json,
        |node| render::node(&ctx.base, pool_id, node),
    ))
}

pub(crate) fn get_node(
    emulator: &Emulator,
    ctx: &Ctx,
    pool_id: &str,
    node_id: &str,
) -> Result<Response, ApiError> {
    let mut state = emulator.state();
    let node = state.read_node(pool_id, node_id, ctx.now)?;
    let body = shaped(ctx, render::node(&ctx.base, pool_id, node), "nodes");
    Ok(json_response(StatusCode::OK, &body))
}

pub(crate) fn node_counts(emulator: &Emulator, ctx: &Ctx) -> Result<Response, ApiError> {
    let mut params = ListParams::parse(&ctx.query, Target::NodeCounts)?;
    match ctx.query.get("maxresults") {
        None => params.max = NODE_COUNTS_PAGE,
        Some(text) if params.max > NODE_COUNTS_PAGE => {
            return Err(ApiError::invalid_query_parameter(
                "maxresults",
                text,
                "maxresults must be an integer from 1 to 10.",
            ));
        }
        Some(_) => {}
    }
    // Counts carry no `$select`.
    params.select = None;
    let mut state = emulator.state();
    state.tick_pools(ctx.now, None);
    let rows = state.node_counts();
    let rows = rows.iter().map(|(k, row)| (k.as_str(), row));
    let (page, next) = take_page(rows, &params, |row| params.keep(row));
    let value = page
        .into_iter()
        .map(|(_, row)| Value::Object(row.clone()))
        .collect();
    Ok(json_response(
        StatusCode::OK,
        &list_body(ctx, "poolnodecounts", value, next),
    ))
}

/// Reads `name` (`nodeDeallocationOption`, `nodeReimageOption`); `requeue` when absent.
fn deallocation(
    body: Option<&Map<String, Value>>,
    name: &str,
) -> Result<(Deallocation, String), ApiError> {
    match body.and_then(|map| map.get(name)) {
        None | Some(Value::Null) => Deallocation::parse("requeue")
            .ok_or_else(|| ApiError::invalid_property(name, "requeue")),
        Some(Value::String(text)) => {
            Deallocation::parse(text).ok_or_else(|| ApiError::invalid_property(name, text))
        }
        Some(other) => Err(ApiError::invalid_property(name, &other.to_string())),
    }
}

/// A 202 with `DataServiceId` naming what was acted on.
fn accepted(id_url: &str) -> Response {
    let mut response = empty_response(StatusCode::ACCEPTED);
    set_header(&mut response, "DataServiceId", id_url);
    response
}

pub(crate) fn remove_nodes(
    emulator: &Emulator,
    ctx: &Ctx,
    pool_id: &str,
    body: &Bytes,
) -> Result<Response, ApiError> {
    let body = body_object(body)?;
    let node_ids: Vec<String> = match body.as_ref().and_then(|map| map.get("nodeList")) {
        None | Some(Value::Null) => return Err(ApiError::missing_property("nodeList")),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| match item {
                Value::String(id) if !id.is_empty() => Ok(id.clone()),
                other => Err(ApiError::invalid_property("nodeList", &other.to_string())),
            })
            .collect::<Result<_, _>>()?,
        Some(other) => return Err(ApiError::invalid_property("nodeList", &other.to_string())),
    };
    if node_ids.is_empty() || node_ids.len() > MAX_REMOVE_NODES {
        return Err(ApiError::invalid_property(
            "nodeList",
            &format!("{} nodes", node_ids.len()),
        ));
    }
    let option = deallocation(body.as_ref(), "nodeDeallocationOption")?;
    let mut state = emulator.state();
    if let Some(pool) = state.pools.get(&key(pool_id)) {
        let etag = pool
            .json
            .get("eTag")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let modified = pool
            .json
            .get("lastModified")
            .and_then(Value::as_str)
            .and_then(crate::clock::parse_time);
        crate::api::check_conditions(&ctx.headers, etag, modified, false)?;
    }
    state.remove_nodes(pool_id, &node_ids, option, ctx.now)?;
    let mut response = accepted(&render::pool_url(&ctx.base, pool_id));
    if let Some(pool) = state.pools.get(&key(pool_id)) {
        entity_headers(&mut response, &pool.json);
    }
    Ok(response)
}

pub(crate) fn reimage_node(
    emulator: &Emulator,
    ctx: &Ctx,
    pool_id: &str,
    node_id: &str,
    body: &Bytes,
) -> Result<Response, ApiError> {
    let body = body_object(body)?;
    let option = deallocation(body.as_ref(), "nodeReimageOption")?;
    emulator
        .state()
        .reimage_node(pool_id, node_id, option, ctx.now)?;
    Ok(accepted(&render::node_url(&ctx.base, pool_id, node_id)))
}
