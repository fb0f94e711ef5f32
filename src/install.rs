//! [`InstallError`]: why installing a global recorder failed (the Prometheus and live exporters
//! share it).

use std::fmt;

/// Why an install failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum InstallError {
    /// A global `metrics` recorder was already installed (by this crate or another); the
    /// process keeps that one. Combine recorders in a `Fanout` instead (`prometheus::builder`,
    /// `Live::recorder`).
    AlreadyInstalled,
    /// The Prometheus upkeep thread could not be spawned.
    Upkeep(std::io::Error),
}

impl fmt::Display for InstallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InstallError::AlreadyInstalled => {
                f.write_str("a global metrics recorder is already installed in this process")
            }
            InstallError::Upkeep(e) => write!(f, "could not start the upkeep thread: {e}"),
        }
    }
}

impl std::error::Error for InstallError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            InstallError::AlreadyInstalled => None,
            InstallError::Upkeep(e) => Some(e),
        }
    }
}
