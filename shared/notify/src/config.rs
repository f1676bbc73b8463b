//! Receiver settings: [`ReceiverConfig`] is the `[[receivers]]` entry of the policy TOML (the
//! policy parser embeds this type, so this module is the source of truth), and [`Receiver`] is
//! the same with its secrets read.
//!
//! ```toml
//! [[receivers]]
//! name = "ops-teams"
//! kind = "teams"
//! url_env = "TEAMS_WEBHOOK_URL"        # the Workflows trigger URL (secret)
//!
//! [[receivers]]
//! name = "ops-mail"
//! kind = "email"                       # SMTP
//! host = "smtp.office365.com"
//! port = 587                           # default: 587 starttls, 465 implicit, 25 none
//! tls = "starttls"                     # "starttls" | "implicit" | "none" (loopback only)
//! username_env = "SMTP_USERNAME"       # optional; with password_env
//! password_env = "SMTP_PASSWORD"
//! from = "batch-triage <alerts@contoso.com>"
//! to = ["oncall@contoso.com"]
//!
//! [[receivers]]
//! name = "ops-acs"
//! kind = "acs_email"
//! endpoint = "https://contoso.europe.communication.azure.com"
//! access_key_env = "ACS_ACCESS_KEY"    # base64 key for HMAC-SHA256 auth, or instead:
//! # entra = "managed_identity"         # or "developer_tools"; client_id = "…" for a user-assigned identity
//! sender = "DoNotReply@contoso.azurecomm.net"
//! to = ["oncall@contoso.com"]
//!
//! [[receivers]]
//! name = "siem"
//! kind = "webhook"
//! url_env = "SIEM_WEBHOOK_URL"
//! secret_env = "SIEM_WEBHOOK_SECRET"   # HMAC key for X-Batch-Triage-Signature
//!
//! [[receivers]]
//! name = "oncall"
//! kind = "pagerduty"                   # Events API v2
//! routing_key_env = "PAGERDUTY_ROUTING_KEY"   # the integration's routing key (secret)
//! # events_url = "https://events.eu.pagerduty.com/v2/enqueue"   # default: events.pagerduty.com
//! send_resolved = true                 # the default for pagerduty: close the incident
//!
//! [[receivers]]
//! name = "ops-slack"
//! kind = "slack"                       # incoming webhook, Block Kit
//! url_env = "SLACK_WEBHOOK_URL"        # https://hooks.slack.com/services/… (secret)
//! send_resolved = true                 # default false, except for pagerduty
//! ```

use std::sync::Arc;

use azure_core::credentials::TokenCredential;
use azure_identity::{
    DeveloperToolsCredential, ManagedIdentityCredential, ManagedIdentityCredentialOptions,
    UserAssignedId,
};
use foundation::Secret;
use serde::{Deserialize, Serialize};

use crate::egress::Allowlist;
use crate::error::NotifyError;

/// One receiver as written in the policy: a name the rules refer to, and its channel settings.
/// Secrets are never written inline: `*_env` fields name the environment variables holding them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceiverConfig {
    /// The name policy rules use to pick this receiver.
    pub name: String,
    /// Whether the receiver is told, once per group, when the failure state it was alerted
    /// about has ended. Unset: `true` for `pagerduty` (an incident left open pages nobody but
    /// misleads everyone), `false` for the others.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub send_resolved: Option<bool>,
    /// The channel and its settings.
    #[serde(flatten)]
    pub kind: ReceiverKind,
}

/// The channel of a receiver, tagged by `kind` in TOML.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum ReceiverKind {
    /// Microsoft Teams through a Workflows "When a Teams webhook request is received" trigger.
    Teams {
        /// The environment variable holding the trigger URL (it carries a `sig=`, so it is secret).
        url_env: String,
    },
    /// Email over SMTP.
    Email {
        /// The SMTP server host.
        host: String,
        /// The port; defaults by `tls`: 587, 465 or 25.
        #[serde(default)]
        port: Option<u16>,
        /// How the connection is protected.
        #[serde(default)]
        tls: SmtpTls,
        /// The environment variable holding the SMTP user name (optional: no AUTH without it).
        #[serde(default)]
        username_env: Option<String>,
        /// The environment variable holding the SMTP password.
        #[serde(default)]
        password_env: Option<String>,
        /// The sender mailbox, e.g. `batch-triage <alerts@contoso.com>`.
        from: String,
        /// The recipients.
        to: Vec<String>,
        /// A PEM file of an extra root CA to trust for the SMTP server's certificate, besides
        /// the system's (an internal relay signed by a company CA).
        #[serde(default)]
        ca_file: Option<String>,
    },
    /// Email through the Azure Communication Services email REST API.
    AcsEmail {
        /// The ACS resource endpoint, `https://<resource>.communication.azure.com`.
        endpoint: String,
        /// The environment variable holding the resource's access key (HMAC-SHA256 auth).
        /// Exactly one of this and `entra` is set.
        #[serde(default)]
        access_key_env: Option<String>,
        /// Microsoft Entra auth instead of a key: `"managed_identity"` (Functions, VMs) or
        /// `"developer_tools"` (Azure CLI / azd login on a developer machine).
        #[serde(default)]
        entra: Option<EntraSource>,
        /// The client id of a user-assigned managed identity (system-assigned when absent).
        #[serde(default)]
        client_id: Option<String>,
        /// The verified sender address (`DoNotReply@<domain>`).
        sender: String,
        /// The recipients.
        to: Vec<String>,
    },
    /// A generic JSON webhook, signed with HMAC-SHA256.
    Webhook {
        /// The environment variable holding the URL (treated as secret).
        url_env: String,
        /// The environment variable holding the signing key.
        secret_env: String,
    },
    /// PagerDuty through the Events API v2: `trigger` with the group's key as `dedup_key`, and
    /// `resolve` when the group resolves.
    #[serde(rename = "pagerduty")]
    PagerDuty {
        /// The environment variable holding the integration's routing key (secret).
        routing_key_env: String,
        /// The enqueue URL: `https://events.pagerduty.com/v2/enqueue` unless set (the EU
        /// service region, or a local receiver in tests). It obeys the allowlist.
        #[serde(default)]
        events_url: Option<String>,
    },
    /// Slack through an incoming webhook, as Block Kit blocks.
    Slack {
        /// The environment variable holding the webhook URL (it is the credential: secret).
        url_env: String,
    },
}

impl ReceiverKind {
    /// The `kind` name as written in TOML.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Teams { .. } => "teams",
            Self::Email { .. } => "email",
            Self::AcsEmail { .. } => "acs_email",
            Self::Webhook { .. } => "webhook",
            Self::PagerDuty { .. } => "pagerduty",
            Self::Slack { .. } => "slack",
        }
    }
}

/// Where Entra tokens for ACS come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntraSource {
    /// The managed identity of the host (App Service / Functions / IMDS).
    ManagedIdentity,
    /// The Azure CLI or Azure Developer CLI login.
    DeveloperTools,
}

/// How an SMTP connection is protected.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SmtpTls {
    /// Plain connection upgraded with STARTTLS (required, not opportunistic); port 587.
    #[default]
    Starttls,
    /// TLS from the first byte; port 465.
    Implicit,
    /// No TLS: only allowed to a loopback host (local relays and tests).
    None,
}

/// A receiver with its secrets read: what [`crate::send`] needs.
#[derive(Debug, Clone)]
pub struct Receiver {
    /// The receiver's name, for logs.
    pub name: String,
    /// Where and how to deliver.
    pub target: Target,
    /// Whether the group's "resolved" message goes to this receiver.
    pub send_resolved: bool,
}

/// Where a resolved receiver delivers.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Target {
    /// A Teams Workflows trigger.
    Teams {
        /// The trigger URL.
        url: Secret,
    },
    /// A signed generic webhook.
    Webhook {
        /// The URL.
        url: Secret,
        /// The HMAC key.
        secret: Secret,
    },
    /// SMTP.
    Smtp(SmtpTarget),
    /// ACS email.
    Acs(AcsTarget),
    /// PagerDuty Events API v2.
    PagerDuty {
        /// The integration's routing key.
        routing_key: Secret,
        /// The enqueue URL (not secret).
        events_url: String,
    },
    /// A Slack incoming webhook.
    Slack {
        /// The webhook URL.
        url: Secret,
    },
}

/// A resolved SMTP receiver.
#[derive(Debug, Clone)]
pub struct SmtpTarget {
    /// The server host.
    pub host: String,
    /// The server port.
    pub port: u16,
    /// The connection protection.
    pub tls: SmtpTls,
    /// User name and password, when the server wants AUTH.
    pub credentials: Option<(Secret, Secret)>,
    /// The sender mailbox.
    pub from: String,
    /// The recipients.
    pub to: Vec<String>,
    /// An extra trusted root CA (PEM), from `ca_file`.
    pub extra_root_pem: Option<Vec<u8>>,
}

/// How requests to ACS are authenticated.
#[derive(Clone)]
pub enum AcsAuth {
    /// HMAC-SHA256 with the resource's base64 access key.
    Key(Secret),
    /// A bearer token for `https://communication.azure.com/.default` from an Entra credential.
    Entra(Arc<dyn TokenCredential>),
}

impl std::fmt::Debug for AcsAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Key(key) => f.debug_tuple("Key").field(key).finish(),
            Self::Entra(_) => f.write_str("Entra(..)"),
        }
    }
}

/// A resolved ACS email receiver.
#[derive(Debug, Clone)]
pub struct AcsTarget {
    /// The resource endpoint (not secret).
    pub endpoint: String,
    /// The credentials.
    pub auth: AcsAuth,
    /// The sender address.
    pub sender: String,
    /// The recipients.
    pub to: Vec<String>,
}

impl Receiver {
    /// The channel kind.
    pub fn kind(&self) -> ReceiverKindName {
        match &self.target {
            Target::Teams { .. } => ReceiverKindName::Teams,
            Target::Webhook { .. } => ReceiverKindName::Webhook,
            Target::Smtp(_) => ReceiverKindName::Email,
            Target::Acs(_) => ReceiverKindName::AcsEmail,
            Target::PagerDuty { .. } => ReceiverKindName::PagerDuty,
            Target::Slack { .. } => ReceiverKindName::Slack,
        }
    }
}

/// The channel kind of a resolved receiver, for logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReceiverKindName {
    /// Teams.
    Teams,
    /// SMTP email.
    Email,
    /// ACS email.
    AcsEmail,
    /// Generic webhook.
    Webhook,
    /// PagerDuty Events API v2.
    PagerDuty,
    /// Slack incoming webhook.
    Slack,
}

impl ReceiverKindName {
    /// The TOML `kind` name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Teams => "teams",
            Self::Email => "email",
            Self::AcsEmail => "acs_email",
            Self::Webhook => "webhook",
            Self::PagerDuty => "pagerduty",
            Self::Slack => "slack",
        }
    }
}

impl ReceiverConfig {
    /// Interprets a `[[receivers]]` entry as the policy parser keeps it (name, kind, and the
    /// other keys raw). Errors name the receiver and the offending setting, never a value.
    pub fn from_policy(receiver: &diagnosis::policy::Receiver) -> Result<Self, NotifyError> {
        let mut table = receiver.settings.clone();
        table.insert("name".into(), toml::Value::String(receiver.name.clone()));
        table.insert("kind".into(), toml::Value::String(receiver.kind.clone()));
        Self::deserialize(toml::Value::Table(table)).map_err(|e| {
            NotifyError::Config(format!(
                "receiver {:?} (kind {:?}): {}",
                receiver.name,
                receiver.kind,
                e.message()
            ))
        })
    }

    /// Reads the receiver's secrets through `env` (the caller decides where variables come
    /// from) and checks the settings. Errors name the variable, never its value.
    ///
    /// Destinations are not checked against an allowlist here (the caller has it): see
    /// [`ReceiverConfig::check_destination`] and [`Receiver::check_destination`].
    pub fn resolve(&self, env: impl Fn(&str) -> Option<String>) -> Result<Receiver, NotifyError> {
        let secret = |var: &str| -> Result<Secret, NotifyError> {
            env(var)
                .filter(|v| !v.trim().is_empty())
                .map(|v| Secret::new(v.trim()))
                .ok_or_else(|| {
                    NotifyError::Config(format!(
                        "receiver {:?}: environment variable {var} is not set",
                        self.name
                    ))
                })
        };
        let target = match &self.kind {
            ReceiverKind::Teams { url_env } => Target::Teams {
                url: secret(url_env)?,
            },
            ReceiverKind::Webhook {
                url_env,
                secret_env,
            } => Target::Webhook {
                url: secret(url_env)?,
                secret: secret(secret_env)?,
            },
            ReceiverKind::Email { .. } => Target::Smtp(self.resolve_smtp(&secret)?),
            ReceiverKind::AcsEmail { .. } => Target::Acs(self.resolve_acs(&secret)?),
            ReceiverKind::PagerDuty {
                routing_key_env,
                events_url,
            } => Target::PagerDuty {
                routing_key: secret(routing_key_env)?,
                events_url: events_url
                    .clone()
                    .unwrap_or_else(|| crate::pagerduty::EVENTS_URL.to_owned()),
            },
            ReceiverKind::Slack { url_env } => Target::Slack {
                url: secret(url_env)?,
            },
        };
        Ok(Receiver {
            name: self.name.clone(),
            target,
            send_resolved: self
                .send_resolved
                .unwrap_or(matches!(self.kind, ReceiverKind::PagerDuty { .. })),
        })
    }

    /// Checks the destinations written in the policy against `allowlist`, before any secret is
    /// read or any connection made: an email receiver's SMTP host (an IP literal must be
    /// listed; loopback, private and link-local addresses are refused unless allowed) and an
    /// ACS endpoint. Teams and webhook URLs are secrets held in the environment: they are
    /// checked once resolved ([`Receiver::check_destination`]) and again before every send.
    pub fn check_destination(&self, allowlist: &Allowlist) -> Result<(), NotifyError> {
        match &self.kind {
            ReceiverKind::Email { host, tls, .. } => {
                crate::email::check_smtp_destination(allowlist, host, *tls)
            }
            ReceiverKind::AcsEmail { endpoint, .. } => {
                crate::email::check_acs_destination(allowlist, endpoint)
            }
            ReceiverKind::PagerDuty {
                events_url: Some(url),
                ..
            } => allowlist.check(&crate::egress::parse_url(&Secret::new(url.as_str()))?),
            ReceiverKind::Teams { .. }
            | ReceiverKind::Webhook { .. }
            | ReceiverKind::Slack { .. }
            | ReceiverKind::PagerDuty { .. } => Ok(()),
        }
    }

    /// Refuses a receiver without recipients.
    fn need_recipients(&self, to: &[String]) -> Result<(), NotifyError> {
        if to.is_empty() {
            Err(NotifyError::Config(format!(
                "receiver {:?}: `to` lists no recipient",
                self.name
            )))
        } else {
            Ok(())
        }
    }

    /// The SMTP target of an `email` receiver: port by `tls`, the extra root CA read, the
    /// credentials in pairs.
    fn resolve_smtp(
        &self,
        secret: &dyn Fn(&str) -> Result<Secret, NotifyError>,
    ) -> Result<SmtpTarget, NotifyError> {
        let ReceiverKind::Email {
            host,
            port,
            tls,
            username_env,
            password_env,
            from,
            to,
            ca_file,
        } = &self.kind
        else {
            return Err(NotifyError::Config(format!(
                "receiver {:?} is not an email receiver",
                self.name
            )));
        };
        self.need_recipients(to)?;
        let extra_root_pem = match ca_file {
            Some(path) => Some(std::fs::read(path).map_err(|e| {
                NotifyError::Config(format!("receiver {:?}: ca_file {path}: {e}", self.name))
            })?),
            None => None,
        };
        let credentials = match (username_env, password_env) {
            (Some(user), Some(password)) => Some((secret(user)?, secret(password)?)),
            (None, None) => None,
            _ => {
                return Err(NotifyError::Config(format!(
                    "receiver {:?}: username_env and password_env go together",
                    self.name
                )));
            }
        };
        Ok(SmtpTarget {
            host: host.clone(),
            port: port.unwrap_or(match tls {
                SmtpTls::Starttls => 587,
                SmtpTls::Implicit => 465,
                SmtpTls::None => 25,
            }),
            tls: *tls,
            credentials,
            from: from.clone(),
            to: to.clone(),
            extra_root_pem,
        })
    }

    /// The ACS target of an `acs_email` receiver: a key or an Entra credential, exactly one.
    fn resolve_acs(
        &self,
        secret: &dyn Fn(&str) -> Result<Secret, NotifyError>,
    ) -> Result<AcsTarget, NotifyError> {
        let ReceiverKind::AcsEmail {
            endpoint,
            access_key_env,
            entra,
            client_id,
            sender,
            to,
        } = &self.kind
        else {
            return Err(NotifyError::Config(format!(
                "receiver {:?} is not an acs_email receiver",
                self.name
            )));
        };
        self.need_recipients(to)?;
        let credential_error = |e: azure_core::Error| {
            NotifyError::Config(format!("receiver {:?}: Entra credential: {e}", self.name))
        };
        let auth = match (access_key_env, entra) {
            (Some(var), None) => AcsAuth::Key(secret(var)?),
            (None, Some(EntraSource::ManagedIdentity)) => {
                let options = ManagedIdentityCredentialOptions {
                    user_assigned_id: client_id.clone().map(UserAssignedId::ClientId),
                    ..Default::default()
                };
                AcsAuth::Entra(
                    ManagedIdentityCredential::new(Some(options)).map_err(credential_error)?,
                )
            }
            (None, Some(EntraSource::DeveloperTools)) => {
                AcsAuth::Entra(DeveloperToolsCredential::new(None).map_err(credential_error)?)
            }
            _ => {
                return Err(NotifyError::Config(format!(
                    "receiver {:?}: set exactly one of access_key_env and entra",
                    self.name
                )));
            }
        };
        Ok(AcsTarget {
            endpoint: endpoint.trim_end_matches('/').to_owned(),
            auth,
            sender: sender.clone(),
            to: to.clone(),
        })
    }
}

impl Receiver {
    /// Checks every destination of a resolved receiver against `allowlist`, before any
    /// connection: the Teams or webhook URL (scheme, host, IP literals), the SMTP host, the
    /// ACS endpoint. Sending checks again (and vets resolved addresses); this lets a handler
    /// refuse a bad configuration when it starts.
    pub fn check_destination(&self, allowlist: &Allowlist) -> Result<(), NotifyError> {
        match &self.target {
            Target::Teams { url } | Target::Webhook { url, .. } | Target::Slack { url } => {
                allowlist.check(&crate::egress::parse_url(url)?)
            }
            Target::PagerDuty { events_url, .. } => allowlist.check(&crate::egress::parse_url(
                &Secret::new(events_url.as_str()),
            )?),
            Target::Smtp(smtp) => {
                crate::email::check_smtp_destination(allowlist, &smtp.host, smtp.tls)
            }
            Target::Acs(acs) => crate::email::check_acs_destination(allowlist, &acs.endpoint),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_receivers_become_configs() {
        let policy = diagnosis::policy::Policy::parse(
            r#"
[[receivers]]
name = "ops"
kind = "teams"
url_env = "TEAMS_URL"

[[receivers]]
name = "mail"
kind = "email"
host = "smtp.example.com"
from = "a@example.com"
to = ["b@example.com"]

[[receivers]]
name = "typo"
kind = "teams"
uri_env = "TEAMS_URL"
"#,
        )
        .unwrap();
        let ops = ReceiverConfig::from_policy(&policy.receivers[0]).unwrap();
        assert_eq!(
            ops.kind,
            ReceiverKind::Teams {
                url_env: "TEAMS_URL".into()
            }
        );
        let mail = ReceiverConfig::from_policy(&policy.receivers[1]).unwrap();
        let Target::Smtp(smtp) = mail.resolve(|_| None).unwrap().target else {
            panic!("smtp")
        };
        assert_eq!((smtp.port, smtp.tls), (587, SmtpTls::Starttls));
        let error = ReceiverConfig::from_policy(&policy.receivers[2]).unwrap_err();
        assert!(error.to_string().contains("uri_env"), "{error}");
        let error = ops.resolve(|_| None).unwrap_err();
        assert!(error.to_string().contains("TEAMS_URL"));
        assert!(!error.is_retryable());
    }

    #[test]
    fn pagerduty_and_slack_receivers_parse_and_keep_their_keys_out_of_the_file() {
        let policy = diagnosis::policy::Policy::parse(
            r#"
[[receivers]]
name = "oncall"
kind = "pagerduty"
routing_key_env = "PD_KEY"

[[receivers]]
name = "chat"
kind = "slack"
url_env = "SLACK_URL"
send_resolved = true

[[receivers]]
name = "typo"
kind = "pagerduty"
routing_key_evn = "PD_KEY"
"#,
        )
        .unwrap();
        let pd = ReceiverConfig::from_policy(&policy.receivers[0]).unwrap();
        let resolved = pd.resolve(|_| Some("k".repeat(32))).unwrap();
        assert!(resolved.send_resolved, "pagerduty resolves by default");
        assert_eq!(resolved.kind(), ReceiverKindName::PagerDuty);
        let Target::PagerDuty { events_url, .. } = &resolved.target else {
            panic!("pagerduty")
        };
        assert_eq!(events_url, crate::pagerduty::EVENTS_URL);
        assert!(!format!("{resolved:?}").contains(&"k".repeat(32)));
        let slack = ReceiverConfig::from_policy(&policy.receivers[1]).unwrap();
        let resolved = slack.resolve(|_| Some("https://hooks.slack.com/services/x".into()));
        assert!(resolved.unwrap().send_resolved);
        let error = ReceiverConfig::from_policy(&policy.receivers[2]).unwrap_err();
        assert!(error.to_string().contains("routing_key_evn"), "{error}");

        // The key itself in the file is refused, with its line.
        let errors = diagnosis::policy::Policy::parse(
            "[[receivers]]\nname = \"oncall\"\nkind = \"pagerduty\"\nrouting_key = \"R0UT1NG\"\n",
        )
        .unwrap_err();
        assert!(errors.to_string().contains("routing_key"), "{errors}");
        assert!(!errors.to_string().contains("R0UT1NG"), "{errors}");
        assert_eq!(errors.errors[0].line, 2);
    }

    fn acs(endpoint: &str) -> ReceiverConfig {
        ReceiverConfig {
            name: "acs".into(),
            send_resolved: None,
            kind: ReceiverKind::AcsEmail {
                endpoint: endpoint.into(),
                access_key_env: Some("ACS_KEY".into()),
                entra: None,
                client_id: None,
                sender: "DoNotReply@contoso.net".into(),
                to: vec!["b@contoso.com".into()],
            },
        }
    }

    #[test]
    fn acs_endpoints_obey_the_allowlist() {
        let allowlist = Allowlist::default();
        acs("https://contoso.europe.communication.azure.com/")
            .check_destination(&allowlist)
            .unwrap();
        for endpoint in [
            "https://10.0.0.4",
            "https://169.254.169.254",
            "https://[::1]",
            "https://127.0.0.1",
            "https://20.50.2.1",
            "http://contoso.europe.communication.azure.com",
            "https://acs.evil.example",
            "not a url",
        ] {
            let error = acs(endpoint).check_destination(&allowlist).unwrap_err();
            assert!(
                matches!(
                    error,
                    NotifyError::HostNotAllowed { .. } | NotifyError::Config(_)
                ),
                "{endpoint}: {error:?}"
            );
            assert!(!error.is_retryable(), "{endpoint}");
        }
        // Resolved receivers are checked the same way, Teams and webhook URLs included.
        let resolved = acs("https://10.0.0.4")
            .resolve(|_| Some("a2V5".into()))
            .unwrap();
        assert!(resolved.check_destination(&allowlist).is_err());
        let teams = ReceiverConfig {
            name: "ops".into(),
            send_resolved: None,
            kind: ReceiverKind::Teams {
                url_env: "URL".into(),
            },
        };
        for (url, allowed) in [
            (
                "https://prod-1.westeurope.logic.azure.com/workflows/x?sig=s",
                true,
            ),
            ("https://20.50.2.1/workflows/x?sig=s", false),
            ("https://169.254.169.254/metadata", false),
        ] {
            let resolved = teams.resolve(|_| Some(url.into())).unwrap();
            assert_eq!(
                resolved.check_destination(&allowlist).is_ok(),
                allowed,
                "{url}"
            );
        }
    }
}
