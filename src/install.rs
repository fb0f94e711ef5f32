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
}

impl fmt::Display for InstallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InstallError::AlreadyInstalled => {
                f.write_str("a global metrics recorder is already installed in this process")
            }
        }
    }
}

impl std::error::Error for InstallError {}
