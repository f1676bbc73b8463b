//! What is folded into alert groups, one alert at a time.

use diagnosis::Diagnosis;
use diagnosis::policy::Plan;

/// One alert to fold into its groups: the diagnosis, its plan, and the incident of a subject
/// that can fail again after it recovered (a node), so a later incident counts anew.
#[derive(Debug, Clone, Copy)]
pub struct AlertInput<'a> {
    /// The diagnosis.
    pub diagnosis: &'a Diagnosis,
    /// Its plan (the receivers and their group keys).
    pub plan: &'a Plan,
    /// The subject's incident, if it has several over time.
    pub incident: Option<&'a str>,
}
