//! Where Batch itself may write into the store: the node agent's logs, which Batch uploads on
//! request (`uploadbatchservicelogs`) to a container URL it is given.
//!
//! Batch needs a container URL it can write to, and nothing more: it must not read, list or
//! delete what the store already holds. So:
//! - a store with a storage account key (Azurite, a connection string) signs a **service SAS**
//!   on its container with permissions `cw` (create, write) only, expiring after a short
//!   lifetime and with no start time (clock skew between us and Batch must not make it
//!   "not yet valid"). A SAS on a flat-namespace account cannot be limited to a blob name
//!   prefix (only hierarchical-namespace accounts have directory SAS), so the prefix is
//!   enforced by what the SAS cannot do (read, list, delete), by its lifetime, and by where
//!   the pipeline tells Batch to write;
//! - a store signed in with Entra ID (managed identity) has no key to sign with: Batch is
//!   given the plain container URL and writes as a user-assigned identity the pipeline names
//!   (`identityReference`), which needs *Storage Blob Data Contributor* on the container;
//! - a local directory store gives a `file://` staging directory outside its keys, which the
//!   emulator writes into and the pipeline copies into the store;
//! - a store opened with a SAS of its own cannot make a narrower one, and never hands its own
//!   to Batch.
//!
//! A SAS is a secret: it is only ever held in a [`Secret`], so it reaches no log, error or
//! alert.

use std::path::PathBuf;
use std::time::Duration;

use base64::Engine;
use foundation::Secret;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::StoreError;

/// The storage service version the SAS is signed for.
const SAS_VERSION: &str = "2024-11-04";

/// The shortest and longest SAS lifetimes given out: the upload is asynchronous and must
/// finish before the SAS expires, but a leaked one must not stay useful for long.
pub const MIN_UPLOAD_LIFETIME: Duration = Duration::from_secs(5 * 60);
/// See [`MIN_UPLOAD_LIFETIME`].
pub const MAX_UPLOAD_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// The permissions of the SAS given to Batch: create and write, nothing else.
pub const UPLOAD_SAS_PERMISSIONS: &str = "cw";

/// How Batch can write files into this store.
#[derive(Debug, Clone)]
pub enum UploadTarget {
    /// The container URL with a write-only SAS (`containerUrl`). Files land at
    /// `{virtualDirectoryName}/…` in the store's container.
    ContainerSas {
        /// `https://…/container?sv=…&sig=…`: a secret.
        url: Secret,
    },
    /// The container URL without a secret; Batch writes as a user-assigned identity
    /// (`identityReference`) that the caller names.
    Identity {
        /// `https://…/container`.
        container_url: String,
    },
    /// A local staging directory (a `file://` URL for the emulator) outside the store's keys;
    /// the caller copies what arrives into the store.
    Directory {
        /// `file:///…/`.
        url: String,
        /// The same directory as a path.
        path: PathBuf,
    },
    /// This store cannot give Batch a write-only way in.
    Unsupported {
        /// Why, for people (no secret).
        reason: String,
    },
}

/// A container-level service SAS query string (`sr=c`) for `account`/`container`, with
/// `permissions`, expiring `lifetime` after `now_unix` (seconds), signed with the base64
/// account `key`. No start time, https only unless `allow_http` (Azurite on loopback).
pub fn container_service_sas(
    account: &str,
    key: &str,
    container: &str,
    permissions: &str,
    now_unix: i64,
    lifetime: Duration,
    allow_http: bool,
) -> Result<Secret, StoreError> {
    let key = base64::engine::general_purpose::STANDARD
        .decode(key.trim())
        .map_err(|_| StoreError::other("the storage account key is not valid base64"))?;
    let lifetime = lifetime.clamp(MIN_UPLOAD_LIFETIME, MAX_UPLOAD_LIFETIME);
    let expiry = time::OffsetDateTime::from_unix_timestamp(now_unix)
        .map_err(|e| StoreError::other(e.to_string()))?
        + lifetime;
    let format =
        time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
    let expiry = expiry
        .format(&format)
        .map_err(|e| StoreError::other(e.to_string()))?;
    let protocol = if allow_http { "https,http" } else { "https" };
    let resource = format!("/blob/{account}/{container}");
    // The service SAS string-to-sign of version 2020-12-06 and later: permissions, start,
    // expiry, resource, identifier, IP, protocol, version, resource type, snapshot time,
    // encryption scope and the five response headers, one per line.
    let string_to_sign = format!(
        "{permissions}\n\n{expiry}\n{resource}\n\n\n{protocol}\n{SAS_VERSION}\nc\n\n\n\n\n\n\n"
    );
    let mut mac = Hmac::<Sha256>::new_from_slice(&key)
        .map_err(|_| StoreError::other("invalid storage account key"))?;
    mac.update(string_to_sign.as_bytes());
    let signature = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    query
        .append_pair("sv", SAS_VERSION)
        .append_pair("sr", "c")
        .append_pair("sp", permissions)
        .append_pair("se", &expiry)
        .append_pair("spr", protocol)
        .append_pair("sig", &signature);
    Ok(Secret::new(query.finish()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = crate::DEVSTORE_KEY;

    #[test]
    fn the_sas_is_write_only_short_lived_and_without_a_start() {
        let sas = container_service_sas(
            "devstoreaccount1",
            KEY,
            "logs",
            UPLOAD_SAS_PERMISSIONS,
            1_800_000_000,
            Duration::from_secs(3600),
            false,
        )
        .unwrap();
        let pairs: Vec<(String, String)> = url::form_urlencoded::parse(sas.expose().as_bytes())
            .into_owned()
            .collect();
        let get = |k: &str| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("sp"), Some("cw"));
        assert_eq!(get("sr"), Some("c"));
        assert_eq!(get("spr"), Some("https"));
        assert_eq!(get("st"), None);
        // 1_800_000_000 is 2027-01-15T08:00:00Z; one hour later.
        assert_eq!(get("se"), Some("2027-01-15T09:00:00Z"));
        assert!(get("sig").is_some_and(|s| s.len() == 44));
        // Debug never shows it.
        assert_eq!(format!("{sas:?}"), "Secret(<redacted>)");
    }

    #[test]
    fn lifetimes_are_clamped_and_bad_keys_refused_without_echo() {
        let se = |lifetime| {
            let sas = container_service_sas("a", KEY, "c", "cw", 0, lifetime, true).unwrap();
            url::form_urlencoded::parse(sas.expose().as_bytes())
                .find(|(k, _)| k == "se")
                .map(|(_, v)| v.into_owned())
        };
        assert_eq!(se(Duration::ZERO).as_deref(), Some("1970-01-01T00:05:00Z"));
        assert_eq!(
            se(Duration::from_secs(30 * 24 * 3600)).as_deref(),
            Some("1970-01-02T00:00:00Z")
        );
        let error = container_service_sas("a", "not base64!!", "c", "cw", 0, Duration::ZERO, true)
            .unwrap_err()
            .to_string();
        assert!(!error.contains("not base64!!"), "{error}");
    }
}
