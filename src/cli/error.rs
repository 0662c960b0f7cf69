//! Why a subcommand failed, and the exit code each reason gives.

use std::io;

/// The one error type of the command line. Every variant has its exit code
/// (see [`CliError::exit_code`]); scripts rely on them, so they never change.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The daemon answered with an error status (exit 1). `message` is its
    /// `{"error": …}`, or the body as text when that is not JSON.
    #[error("{message} (HTTP {status})")]
    Refused { status: u16, message: String },
    /// The command could not do what it was asked for another reason: an
    /// unexpected answer, a drain that stopped on a hold (exit 1).
    #[error("{0}")]
    Failed(String),
    /// The configuration file is invalid; one error per line (exit 2).
    #[error("invalid configuration\n{0}")]
    Config(String),
    /// The daemon cannot be reached at all (exit 3).
    #[error("cannot reach sluice at {server}: is 'sluice serve' running?\n  ({cause})")]
    Unreachable { server: String, cause: String },
    /// The daemon answers over TLS but cannot be trusted: its certificate
    /// is not (exit 3, as for a daemon that is not there).
    #[error(
        "cannot reach sluice at {server} safely: {reason}\n  (trust its certificate \
         authority with --ca-file or SLUICE_CA_FILE)"
    )]
    Untrusted { server: String, reason: String },
    /// A command-line value that cannot be used (exit 2).
    #[error("{0}")]
    Usage(String),
    /// Standard output could not be written. A closed pipe
    /// (`sluice log SITE --follow | head`) is a normal end, not an error.
    #[error("cannot write the output: {0}")]
    Output(#[from] io::Error),
}

impl CliError {
    /// 0 success; 1 the daemon refused or the command failed; 2 usage or
    /// configuration errors; 3 the daemon cannot be reached.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Refused { .. } | CliError::Failed(_) => 1,
            CliError::Config(_) | CliError::Usage(_) => 2,
            CliError::Unreachable { .. } | CliError::Untrusted { .. } => 3,
            CliError::Output(e) if e.kind() == io::ErrorKind::BrokenPipe => 0,
            CliError::Output(_) => 1,
        }
    }

    /// Whether the error is worth a line on standard error (a reader that
    /// went away is not).
    pub fn is_quiet(&self) -> bool {
        matches!(self, CliError::Output(e) if e.kind() == io::ErrorKind::BrokenPipe)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_and_messages() {
        let refused = CliError::Refused {
            status: 409,
            message: "integration orders is paused".into(),
        };
        assert_eq!(refused.exit_code(), 1);
        assert_eq!(
            refused.to_string(),
            "integration orders is paused (HTTP 409)"
        );
        let config = CliError::Config("a.toml:3: listen: not an address".into());
        assert_eq!(config.exit_code(), 2);
        assert_eq!(
            config.to_string(),
            "invalid configuration\na.toml:3: listen: not an address"
        );
        let unreachable = CliError::Unreachable {
            server: "http://127.0.0.1:9".into(),
            cause: "Connection refused".into(),
        };
        assert_eq!(unreachable.exit_code(), 3);
        assert!(unreachable
            .to_string()
            .starts_with("cannot reach sluice at http://127.0.0.1:9: is 'sluice serve' running?"));
        let pipe = CliError::from(io::Error::from(io::ErrorKind::BrokenPipe));
        assert_eq!(pipe.exit_code(), 0);
        assert!(pipe.is_quiet());
        assert!(!refused.is_quiet());
    }
}
