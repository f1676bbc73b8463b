//! Parsing the growth and escalation options: `renotify_on_growth` in a `grouping` table and a
//! rule's `escalate` table, with every problem at its line and column.

use serde::Deserialize;
use toml::Spanned;

use super::DEFAULT_RENOTIFY_ON_GROWTH;
use super::escalate::Escalation;
use super::parse::Errors;
use crate::classes::Severity;

/// A rule's `escalate = { severity = "critical", min_count = 1000, min_job_percent = 20 }`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawEscalate {
    #[serde(default)]
    severity: Option<Spanned<String>>,
    #[serde(default)]
    min_count: Option<Spanned<i64>>,
    #[serde(default)]
    min_job_percent: Option<Spanned<f64>>,
}

/// `renotify_on_growth`: a factor above 1 (`2` or `2.0`), `true` for the default, or `false`
/// to leave growth to `repeat_interval`.
pub(super) fn renotify_on_growth(
    value: Spanned<toml::Value>,
    errors: &mut Errors<'_>,
) -> Option<f64> {
    let span = value.span();
    #[allow(clippy::cast_precision_loss)]
    let factor = match value.into_inner() {
        toml::Value::Boolean(false) => return None,
        toml::Value::Boolean(true) => return Some(DEFAULT_RENOTIFY_ON_GROWTH),
        toml::Value::Integer(n) => n as f64,
        toml::Value::Float(f) => f,
        _ => {
            errors.at(
                span,
                "renotify_on_growth must be a factor above 1 (2.0: the count doubled), or false",
            );
            return Some(DEFAULT_RENOTIFY_ON_GROWTH);
        }
    };
    if factor.is_finite() && factor > 1.0 {
        Some(factor)
    } else {
        errors.at(
            span,
            format!(
                "renotify_on_growth = {factor} must be more than 1 (2.0: the count doubled), or false"
            ),
        );
        Some(DEFAULT_RENOTIFY_ON_GROWTH)
    }
}

/// A rule's escalation: a severity (default `critical`) and at least one threshold.
pub(super) fn escalation(
    spanned: Spanned<RawEscalate>,
    errors: &mut Errors<'_>,
) -> Option<Escalation> {
    let table_span = spanned.span();
    let raw = spanned.into_inner();
    if raw.min_count.is_none() && raw.min_job_percent.is_none() {
        errors.at(
            table_span,
            "escalate needs a threshold: min_count, min_job_percent or both",
        );
        return None;
    }
    let severity = match &raw.severity {
        None => Severity::Critical,
        Some(text) => match Severity::parse(text.get_ref().trim()) {
            Some(severity) if severity > Severity::Info => severity,
            _ => {
                errors.at(
                    text.span(),
                    format!(
                        "escalate.severity {:?} must be warning, error or critical",
                        text.get_ref()
                    ),
                );
                Severity::Critical
            }
        },
    };
    let min_count = raw
        .min_count
        .and_then(|n| match u64::try_from(*n.get_ref()) {
            Ok(value) if value >= 2 => Some(value),
            _ => {
                errors.at(
                    n.span(),
                    "escalate.min_count must be at least 2 (one failure is the diagnosis's own severity)",
                );
                None
            }
        });
    let min_job_percent = raw.min_job_percent.and_then(|p| {
        let value = *p.get_ref();
        if value > 0.0 && value < 100.0 {
            Some(value)
        } else {
            errors.at(
                p.span(),
                "escalate.min_job_percent must be more than 0 and less than 100",
            );
            None
        }
    });
    (min_count.is_some() || min_job_percent.is_some()).then_some(Escalation {
        severity,
        min_count,
        min_job_percent,
    })
}
