//! Resumable file downloads: stream the body, and when the connection drops mid-body, ask again
//! with `ocp-range` from the byte reached, but only if the file is still the same version.

use bytes::Bytes;
use foundation::Deadline;
use futures::StreamExt;
use reqwest::Method;
use reqwest::header::{self, HeaderMap, HeaderName, HeaderValue};
use url::Url;

use crate::api::{DownloadOptions, FileDownload, FileInfo};
use crate::client::BatchClient;
use crate::error::BatchError;
use crate::operations::file_info;
use crate::request::{Call, Expect, transport_error};

/// A response whose body is about to be streamed.
struct Opened {
    /// The response, body unread.
    response: reqwest::Response,
    /// The file's properties; `size` is the whole file's size.
    info: FileInfo,
    /// Bytes at the start of the body to drop, when the service ignored the range.
    skip: u64,
}

/// Where a download is.
struct State {
    /// The client, for resumes.
    client: BatchClient,
    /// Operation name for logs.
    op: &'static str,
    /// The file URL (already checked).
    url: Url,
    /// The call's deadline.
    deadline: Deadline,
    /// The response being read; `None` after a drop, until resumed.
    response: Option<reqwest::Response>,
    /// Absolute offset of the next byte to yield.
    offset: u64,
    /// The file as first seen: size, Last-Modified, ETag.
    expected: FileInfo,
    /// Bytes still to drop from the current body.
    skip: u64,
    /// Resumes left.
    resumes_left: u32,
    /// Resumes done, for logs.
    resumes_done: u32,
}

/// Opens the download and returns its stream.
pub(crate) async fn start(
    client: BatchClient,
    op: &'static str,
    url: Url,
    options: &DownloadOptions,
    deadline: Deadline,
) -> Result<FileDownload, BatchError> {
    let opened = open(&client, op, &url, options.offset, None, deadline).await?;
    let info = opened.info.clone();
    let state = State {
        client,
        op,
        url,
        deadline,
        response: Some(opened.response),
        offset: options.offset,
        expected: opened.info,
        skip: opened.skip,
        resumes_left: options.max_resumes,
        resumes_done: 0,
    };
    Ok(FileDownload {
        info,
        offset: options.offset,
        chunks: futures::stream::try_unfold(state, next_chunk).boxed(),
    })
}

/// Sends the GET for the bytes from `offset`; on a resume (`expected` set) also checks that the
/// file has not changed.
async fn open(
    client: &BatchClient,
    op: &'static str,
    url: &Url,
    offset: u64,
    expected: Option<&FileInfo>,
    deadline: Deadline,
) -> Result<Opened, BatchError> {
    let mut call = Call {
        op,
        method: Method::GET,
        url: url.clone(),
        headers: HeaderMap::new(),
        body: None,
    };
    if offset > 0 {
        let range = HeaderValue::from_str(&format!("bytes={offset}-"))
            .map_err(|_| BatchError::bad_argument(op, "invalid range"))?;
        call.headers
            .insert(HeaderName::from_static("ocp-range"), range);
    }
    if let Some(since) = expected
        .and_then(|e| e.last_modified.as_deref())
        .and_then(|lm| HeaderValue::from_str(lm).ok())
    {
        call.headers.insert(header::IF_UNMODIFIED_SINCE, since);
    }
    let reply = match client.request(&call, Expect::Stream, deadline).await {
        Ok(reply) => reply,
        // On a resume, "modified since" and "range no longer satisfiable" both mean the file
        // is not the one we started reading.
        Err(BatchError::PreconditionFailed(info)) if expected.is_some() => {
            return Err(BatchError::FileChanged(info));
        }
        Err(BatchError::BadRequest(info)) if expected.is_some() && info.status == Some(416) => {
            return Err(BatchError::FileChanged(info));
        }
        Err(error) => return Err(error),
    };
    let Some(response) = reply.response else {
        return Err(BatchError::other(op, "no response body"));
    };
    let mut info = file_info(&reply.headers);
    let length = info.size;
    let (start, total) = match content_range(&reply.headers) {
        Some((start, Some(total))) => (start, total),
        Some((start, None)) => (start, start.saturating_add(length)),
        // No Content-Range: a full body if its length is the whole file we know of (the range
        // was ignored), else the range we asked for.
        None => match expected {
            Some(expected) if offset > 0 && length == expected.size => (0, length),
            _ => (offset, offset.saturating_add(length)),
        },
    };
    if start > offset {
        return Err(BatchError::other(
            op,
            format!("the service sent bytes from {start}, not from {offset}"),
        ));
    }
    info.size = total;
    if let Some(expected) = expected {
        let changed = total != expected.size
            || differs(&info.last_modified, &expected.last_modified)
            || differs(&info.etag, &expected.etag);
        if changed {
            let mut error = BatchError::FileChanged(Box::new(crate::error::ErrorInfo::local(
                op,
                format!(
                    "the file changed since the download began (size {} → {total}, \
                     Last-Modified {:?} → {:?}); {} bytes were read",
                    expected.size, expected.last_modified, info.last_modified, offset
                ),
            )));
            error.info_mut().request_id = reply
                .headers
                .get("request-id")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            return Err(error);
        }
    }
    Ok(Opened {
        response,
        info,
        skip: offset - start,
    })
}

/// Whether two optional header values are both present and different.
fn differs(a: &Option<String>, b: &Option<String>) -> bool {
    matches!((a, b), (Some(a), Some(b)) if a != b)
}

/// `Content-Range: bytes start-end/total` → `(start, total)` (`total` is `None` for `*`).
fn content_range(headers: &HeaderMap) -> Option<(u64, Option<u64>)> {
    let value = headers.get(header::CONTENT_RANGE)?.to_str().ok()?.trim();
    let rest = value.strip_prefix("bytes")?.trim_start();
    let (range, total) = rest.split_once('/')?;
    let (start, _end) = range.trim().split_once('-')?;
    let start = start.trim().parse().ok()?;
    let total = match total.trim() {
        "*" => None,
        total => Some(total.parse().ok()?),
    };
    Some((start, total))
}

/// Yields the next chunk, resuming after a dropped connection.
async fn next_chunk(mut state: State) -> Result<Option<(Bytes, State)>, BatchError> {
    loop {
        if state.offset >= state.expected.size {
            return Ok(None);
        }
        let why = match state.response.as_mut() {
            None => "not connected".to_owned(),
            Some(response) => {
                match tokio::time::timeout_at(state.deadline.instant(), response.chunk()).await {
                    Err(_) => {
                        return Err(BatchError::transient(
                            state.op,
                            format!(
                                "deadline reached during the download at byte {} of {}",
                                state.offset, state.expected.size
                            ),
                        ));
                    }
                    Ok(Ok(Some(mut chunk))) => {
                        if state.skip > 0 {
                            let drop = state.skip.min(chunk.len() as u64) as usize;
                            let _ = chunk.split_to(drop);
                            state.skip -= drop as u64;
                        }
                        if chunk.is_empty() {
                            continue;
                        }
                        let room = state.expected.size - state.offset;
                        if chunk.len() as u64 > room {
                            chunk.truncate(room as usize);
                        }
                        state.offset += chunk.len() as u64;
                        return Ok(Some((chunk, state)));
                    }
                    Ok(Ok(None)) => "the body ended early".to_owned(),
                    Ok(Err(error)) => transport_error(state.op, &error).info().message.clone(),
                }
            }
        };
        state.response = None;
        if state.resumes_left == 0 {
            return Err(BatchError::transient(
                state.op,
                format!(
                    "connection lost at byte {} of {} after {} resumes: {why}",
                    state.offset, state.expected.size, state.resumes_done
                ),
            ));
        }
        state.resumes_left -= 1;
        state.resumes_done += 1;
        tracing::warn!(
            operation = state.op,
            path = %state.url.path(),
            offset = state.offset,
            size = state.expected.size,
            resume = state.resumes_done,
            reason = %why,
            "download interrupted; resuming from the byte reached"
        );
        let opened = open(
            &state.client,
            state.op,
            &state.url,
            state.offset,
            Some(&state.expected),
            state.deadline,
        )
        .await?;
        state.response = Some(opened.response);
        state.skip = opened.skip;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_range_forms() {
        let mut headers = HeaderMap::new();
        assert_eq!(content_range(&headers), None);
        headers.insert(
            header::CONTENT_RANGE,
            HeaderValue::from_static("bytes 10-19/100"),
        );
        assert_eq!(content_range(&headers), Some((10, Some(100))));
        headers.insert(
            header::CONTENT_RANGE,
            HeaderValue::from_static("bytes 10-19/*"),
        );
        assert_eq!(content_range(&headers), Some((10, None)));
        headers.insert(header::CONTENT_RANGE, HeaderValue::from_static("garbage"));
        assert_eq!(content_range(&headers), None);
    }
}
