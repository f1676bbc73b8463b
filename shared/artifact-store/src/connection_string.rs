//! Storage connection strings (`AccountName=…;AccountKey=…;BlobEndpoint=…`, or
//! `UseDevelopmentStorage=true` for Azurite) with the container added (`;Container=NAME`), as
//! `BATCH_TRIAGE_STORE` takes them.

use crate::blob::bad_spec;
use crate::{BlobAuth, DEFAULT_CONTAINER, DEVSTORE_ACCOUNT, DEVSTORE_KEY, StoreError};

/// A parsed storage connection string.
pub(crate) struct ConnectionString {
    pub(crate) container_url: String,
    pub(crate) auth: BlobAuth,
}

impl ConnectionString {
    pub(crate) fn parse(spec: &str) -> Result<Self, StoreError> {
        let mut fields = std::collections::HashMap::new();
        for part in spec.split(';').map(str::trim).filter(|p| !p.is_empty()) {
            let Some((k, v)) = part.split_once('=') else {
                return Err(bad_spec(
                    "invalid connection string: expected KEY=VALUE pairs separated by ';'",
                ));
            };
            fields.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
        }
        let get = |k: &str| fields.get(k).cloned().filter(|v| !v.is_empty());
        let container = get("container")
            .or_else(|| get("containername"))
            .unwrap_or_else(|| DEFAULT_CONTAINER.to_owned());
        let dev = get("usedevelopmentstorage").is_some_and(|v| v.eq_ignore_ascii_case("true"));
        let (account, key) = if dev {
            (
                get("accountname").unwrap_or_else(|| DEVSTORE_ACCOUNT.to_owned()),
                get("accountkey").unwrap_or_else(|| DEVSTORE_KEY.to_owned()),
            )
        } else {
            let account = get("accountname")
                .ok_or_else(|| bad_spec("the connection string has no AccountName"))?;
            (account, get("accountkey").unwrap_or_default())
        };
        let endpoint = match get("blobendpoint") {
            Some(endpoint) => endpoint,
            None if dev => format!("http://127.0.0.1:10000/{account}"),
            None => {
                let protocol =
                    get("defaultendpointsprotocol").unwrap_or_else(|| "https".to_owned());
                let suffix = get("endpointsuffix").unwrap_or_else(|| "core.windows.net".to_owned());
                format!("{protocol}://{account}.blob.{suffix}")
            }
        };
        let container_url = format!("{}/{container}", endpoint.trim_end_matches('/'));
        let auth = if let Some(sas) = get("sharedaccesssignature") {
            BlobAuth::Sas(sas)
        } else if !key.is_empty() {
            BlobAuth::AccountKey { account, key }
        } else {
            return Err(bad_spec(
                "the connection string has neither AccountKey nor SharedAccessSignature",
            ));
        };
        Ok(ConnectionString {
            container_url,
            auth,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_strings() {
        let cs = ConnectionString::parse("UseDevelopmentStorage=true").unwrap();
        assert_eq!(
            cs.container_url,
            "http://127.0.0.1:10000/devstoreaccount1/batch-triage"
        );
        assert!(
            matches!(cs.auth, BlobAuth::AccountKey { ref account, .. } if account == DEVSTORE_ACCOUNT)
        );
        let cs = ConnectionString::parse(
            "UseDevelopmentStorage=true;BlobEndpoint=http://127.0.0.1:4711/devstoreaccount1/;Container=logs",
        )
        .unwrap();
        assert_eq!(
            cs.container_url,
            "http://127.0.0.1:4711/devstoreaccount1/logs"
        );
        let cs = ConnectionString::parse(&format!(
            "DefaultEndpointsProtocol=https;AccountName=acct;AccountKey={DEVSTORE_KEY};EndpointSuffix=core.windows.net"
        ))
        .unwrap();
        assert_eq!(
            cs.container_url,
            "https://acct.blob.core.windows.net/batch-triage"
        );
        assert!(ConnectionString::parse("AccountName=acct").is_err());
        assert!(ConnectionString::parse("garbage").is_err());
    }
}
