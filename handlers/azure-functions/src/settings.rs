//! Configuration from app settings only (the Functions host passes them as environment
//! variables). The pipeline's settings are shared by every handler (`pipeline::settings`); the
//! one this handler adds is the port the host chose.

use pipeline::settings::Settings as PipelineSettings;

/// The settings, read once at start.
pub struct Settings {
    /// `FUNCTIONS_CUSTOMHANDLER_PORT`.
    pub port: u16,
    /// Everything else (README, "Settings").
    pub pipeline: PipelineSettings,
}

impl Settings {
    /// Reads the settings through `get` (the process environment in production).
    pub fn from_env(get: impl Fn(&str) -> Option<String>) -> anyhow::Result<Self> {
        let port = get("FUNCTIONS_CUSTOMHANDLER_PORT")
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "FUNCTIONS_CUSTOMHANDLER_PORT is not set: the Functions host sets it"
                )
            })?
            .parse()
            .map_err(|_| anyhow::anyhow!("FUNCTIONS_CUSTOMHANDLER_PORT is not a port number"))?;
        Ok(Self {
            port,
            pipeline: PipelineSettings::from_env(get)?,
        })
    }
}
