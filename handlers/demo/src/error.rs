//! What can stop the demo. Each variant says which step failed; the cause is its `source`, so a
//! report walking the chain says each thing once.

/// The demo could not run or write its report.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// A file or directory operation (the message names the path).
    #[error("{what}")]
    Io {
        /// What was being done, with the path.
        what: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// `--out` names a place the demo will not write to (the message says why and what to do).
    #[error("{0}")]
    Refused(String),
    /// The emulator's scenario (the built-in one plus the demo's additions) is invalid.
    #[error("the demo's scenario")]
    Scenario(#[from] batch_emulator::ScenarioError),
    /// The demo's policy does not parse (a bug in the demo).
    #[error("the demo policy: {0}")]
    Policy(String),
    /// The pipeline could not be built from the demo's settings.
    #[error("the demo's pipeline settings")]
    Settings(#[from] pipeline::settings::SettingsError),
    /// The Batch client for the emulator could not be configured.
    #[error("the Batch client for the emulator")]
    BatchConfig(#[from] batch_client::ConfigError),
    /// The pipeline refused or failed a whole payload.
    #[error("the pipeline")]
    Triage(#[from] pipeline::triage::TriageError),
    /// The demo's own Batch call (terminating the stuck job between the sweeps) failed.
    #[error("terminating the demo's stuck job")]
    Batch(#[from] batch_client::BatchError),
    /// The timer's tick failed as a whole.
    #[error("the timer's sweep")]
    Tick(#[from] pipeline::tick::TickError),
    /// The operator's silence could not be added to the store.
    #[error("adding the operator's silence")]
    Silence(#[from] pipeline::silences::SilenceError),
    /// The report of the demo's store could not be built.
    #[error("the report of the demo's store")]
    StoreReport(#[from] report::ReportError),
    /// `report.json` could not be serialised.
    #[error("serialising the report")]
    Json(#[from] serde_json::Error),
}

impl DemoError {
    /// An I/O error with what was being done.
    pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let what = what.into();
        move |source| Self::Io { what, source }
    }
}
