//! Maps a raw request path to a Batch operation.
//!
//! Routing is done by hand rather than with axum's router so that every failure (bad
//! percent-encoding, unknown path, wrong verb) gets the Batch error body, and so that file paths
//! may contain encoded `/` (`wd%2Fout.txt`, as the Python SDK sends) or `\`.

use percent_encoding::percent_decode_str;

use crate::error::ApiError;
use crate::files::normalize_path;

/// A Batch resource addressed by a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Route {
    /// `/jobs`
    Jobs,
    /// `/jobs/{job}`
    Job(String),
    /// `/jobs/{job}/terminate`
    TerminateJob(String),
    /// `/jobs/{job}/disable`
    DisableJob(String),
    /// `/jobs/{job}/enable`
    EnableJob(String),
    /// `/jobs/{job}/tasks`
    Tasks(String),
    /// `/jobs/{job}/tasks/{task}`
    Task(String, String),
    /// `/jobs/{job}/tasks/{task}/terminate`
    TerminateTask(String, String),
    /// `/jobs/{job}/taskcounts`
    TaskCounts(String),
    /// `/jobs/{job}/jobpreparationandreleasetaskstatus`
    PrepRelease(String),
    /// `/jobs/{job}/tasks/{task}/files`
    TaskFiles(String, String),
    /// `/jobs/{job}/tasks/{task}/files/{path}` (path normalized)
    TaskFile(String, String, String),
    /// `/pools/{pool}/nodes/{node}/files`
    NodeFiles(String, String),
    /// `/pools`
    Pools,
    /// `/pools/{pool}`
    Pool(String),
    /// `/pools/{pool}/nodes`
    Nodes(String),
    /// `/pools/{pool}/nodes/{node}`
    Node(String, String),
    /// `/pools/{pool}/removenodes`
    RemoveNodes(String),
    /// `/pools/{pool}/nodes/{node}/reimage`
    ReimageNode(String, String),
    /// `/pools/{pool}/nodes/{node}/uploadbatchservicelogs`
    UploadLogs(String, String),
    /// `/nodecounts`
    NodeCounts,
    /// `/pools/{pool}/nodes/{node}/files/{path}` (path normalized)
    NodeFile(String, String, String),
}

impl Route {
    /// The HTTP methods the operation supports.
    pub(crate) fn methods(&self) -> &'static [&'static str] {
        match self {
            Route::TerminateJob(_)
            | Route::DisableJob(_)
            | Route::EnableJob(_)
            | Route::TerminateTask(..)
            | Route::RemoveNodes(_)
            | Route::ReimageNode(..)
            | Route::UploadLogs(..) => &["POST"],
            Route::TaskFile(..) | Route::NodeFile(..) => &["GET", "HEAD"],
            _ => &["GET"],
        }
    }
}

/// Parses a raw (percent-encoded) path.
pub(crate) fn parse(raw_path: &str) -> Result<Route, ApiError> {
    let mut segments = Vec::new();
    for raw in raw_path.split('/').skip(1) {
        let decoded = percent_decode_str(raw)
            .decode_utf8()
            .map_err(|_| ApiError::invalid_uri())?;
        segments.push(decoded.into_owned());
    }
    // A trailing slash names the same resource.
    while segments.last().is_some_and(String::is_empty) {
        segments.pop();
    }
    let s: Vec<&str> = segments.iter().map(String::as_str).collect();
    let file_path =
        |rest: &[&str]| normalize_path(&rest.join("/")).ok_or_else(ApiError::invalid_uri);
    let lower: Vec<String> = s.iter().map(|x| x.to_ascii_lowercase()).collect();
    let l: Vec<&str> = lower.iter().map(String::as_str).collect();
    let route = match l.as_slice() {
        ["jobs"] => Route::Jobs,
        ["jobs", _] => Route::Job(s[1].to_owned()),
        ["jobs", _, "terminate"] => Route::TerminateJob(s[1].to_owned()),
        ["jobs", _, "disable"] => Route::DisableJob(s[1].to_owned()),
        ["jobs", _, "enable"] => Route::EnableJob(s[1].to_owned()),
        ["jobs", _, "tasks"] => Route::Tasks(s[1].to_owned()),
        ["jobs", _, "taskcounts"] => Route::TaskCounts(s[1].to_owned()),
        ["jobs", _, "jobpreparationandreleasetaskstatus"] => Route::PrepRelease(s[1].to_owned()),
        ["jobs", _, "tasks", _] => Route::Task(s[1].to_owned(), s[3].to_owned()),
        ["jobs", _, "tasks", _, "terminate"] => {
            Route::TerminateTask(s[1].to_owned(), s[3].to_owned())
        }
        ["jobs", _, "tasks", _, "files"] => Route::TaskFiles(s[1].to_owned(), s[3].to_owned()),
        ["jobs", _, "tasks", _, "files", ..] => {
            Route::TaskFile(s[1].to_owned(), s[3].to_owned(), file_path(&s[5..])?)
        }
        ["pools"] => Route::Pools,
        ["pools", _] => Route::Pool(s[1].to_owned()),
        ["pools", _, "nodes"] => Route::Nodes(s[1].to_owned()),
        ["pools", _, "removenodes"] => Route::RemoveNodes(s[1].to_owned()),
        ["pools", _, "nodes", _] => Route::Node(s[1].to_owned(), s[3].to_owned()),
        ["pools", _, "nodes", _, "reimage"] => Route::ReimageNode(s[1].to_owned(), s[3].to_owned()),
        ["pools", _, "nodes", _, "uploadbatchservicelogs"] => {
            Route::UploadLogs(s[1].to_owned(), s[3].to_owned())
        }
        ["nodecounts"] => Route::NodeCounts,
        ["pools", _, "nodes", _, "files"] => Route::NodeFiles(s[1].to_owned(), s[3].to_owned()),
        ["pools", _, "nodes", _, "files", ..] => {
            Route::NodeFile(s[1].to_owned(), s[3].to_owned(), file_path(&s[5..])?)
        }
        _ => return Err(ApiError::resource_not_found()),
    };
    Ok(route)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert_eq!(parse("/jobs").unwrap(), Route::Jobs);
        assert_eq!(parse("/jobs/").unwrap(), Route::Jobs);
        assert_eq!(parse("/jobs/j1").unwrap(), Route::Job("j1".into()));
        assert_eq!(
            parse("/jobs/j1/tasks/t1/files/wd%2Fout.txt").unwrap(),
            Route::TaskFile("j1".into(), "t1".into(), "wd/out.txt".into())
        );
        assert_eq!(
            parse("/jobs/j1/tasks/t1/files/wd%5Cout.txt").unwrap(),
            Route::TaskFile("j1".into(), "t1".into(), "wd/out.txt".into())
        );
        assert_eq!(
            parse("/pools/p/nodes/n/files/workitems/j/job-1/jobpreparation/stdout.txt").unwrap(),
            Route::NodeFile(
                "p".into(),
                "n".into(),
                "workitems/j/job-1/jobpreparation/stdout.txt".into()
            )
        );
        assert_eq!(parse("/pools").unwrap(), Route::Pools);
        assert_eq!(parse("/nodecounts").unwrap(), Route::NodeCounts);
        assert_eq!(
            parse("/pools/P/nodes/tvm-1").unwrap(),
            Route::Node("P".into(), "tvm-1".into())
        );
        assert_eq!(
            parse("/pools/p/nodes/n/UploadBatchServiceLogs").unwrap(),
            Route::UploadLogs("p".into(), "n".into())
        );
        assert_eq!(
            parse("/pools/p/removenodes").unwrap(),
            Route::RemoveNodes("p".into())
        );
        assert_eq!(
            parse("/pools/p/nodes/n/reimage").unwrap(),
            Route::ReimageNode("p".into(), "n".into())
        );
        assert_eq!(
            parse("/jobs/j1/tasks/t1/files/").unwrap(),
            Route::TaskFiles("j1".into(), "t1".into())
        );
    }

    #[test]
    fn hostile_paths() {
        assert_eq!(parse("/jobs/%FF").unwrap_err().code, "InvalidUri");
        assert_eq!(
            parse("/jobs/j/tasks/t/files/..%2F..%2Fetc")
                .unwrap_err()
                .code,
            "InvalidUri"
        );
        assert_eq!(parse("/nope").unwrap_err().code, "ResourceNotFound");
        assert_eq!(parse("/").unwrap_err().code, "ResourceNotFound");
    }
}
