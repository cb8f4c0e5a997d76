//! Logging: the format (text or JSON lines) and the level filter (RUST_LOG syntax).

use std::io::IsTerminal;

use tracing_subscriber::{EnvFilter, fmt, prelude::*};

/// The filter used when neither `--log-level` nor `RUST_LOG` is given.
pub const DEFAULT_LOG_LEVEL: &str = "info,kube=warn";

/// How log lines are written to stdout.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines (coloured on a terminal).
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// Checks a filter in RUST_LOG syntax (e.g. `info,deployer_operator=debug,kube=warn`); for use
/// as a clap value parser, so that a bad filter stops the operator at start.
pub fn parse_filter(filter: &str) -> Result<String, String> {
    EnvFilter::builder()
        .parse(filter)
        .map(|_| filter.to_string())
        .map_err(|e| format!("not a RUST_LOG-style filter (e.g. info,kube=warn): {e}"))
}

/// Installs the global subscriber. `filter` must have passed [`parse_filter`].
pub fn init(format: LogFormat, filter: &str) {
    let filter = EnvFilter::builder().parse_lossy(filter);
    let registry = tracing_subscriber::registry().with(filter);
    match format {
        LogFormat::Text => registry.with(fmt::layer().with_ansi(std::io::stdout().is_terminal())).init(),
        LogFormat::Json => registry.with(fmt::layer().json()).init(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_in_rust_log_syntax_are_accepted_and_garbage_is_not() {
        assert!(parse_filter(DEFAULT_LOG_LEVEL).is_ok());
        assert!(parse_filter("debug").is_ok());
        assert!(parse_filter("info,deployer_operator::controller=trace").is_ok());
        assert!(parse_filter("info,kube=loud").is_err());
        assert!(parse_filter("[{").is_err());
    }
}
