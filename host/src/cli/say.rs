//! weft's own status lines on stderr. For a person at a terminal they are
//! `weft: ...` lines; with `--log-format json` they are events of the
//! host's one JSON log (a JSON object per line, with `level`, `fields.message`
//! and `target: "weft"`), beside its other log events, for a log collector.
//! A program's own output is never rewritten: `weft run` passes its stdout
//! and stderr through as the program wrote them.

use std::fmt::Display;
use std::sync::atomic::{AtomicBool, Ordering};

static JSON: AtomicBool = AtomicBool::new(false);

/// How weft writes its log and status lines.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// `weft: ...` status lines; log events as text (`RUST_LOG`, default warnings only).
    #[default]
    Text,
    /// One JSON object per line, status lines included (`RUST_LOG`; default
    /// weft's own events from info, other crates' from warn).
    Json,
}

/// Installs the log subscriber for `format`; call once, first thing.
pub fn init(format: LogFormat) {
    let filter =
        |default: &str| tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| default.into());
    let builder = tracing_subscriber::fmt().with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder
            .with_env_filter(filter("warn"))
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        LogFormat::Json => {
            JSON.store(true, Ordering::Relaxed);
            builder.json().with_env_filter(filter("warn,weft=info,weft_host=info")).with_ansi(false).init()
        }
    }
}

/// A status line: the host started, stopped, serves something.
pub fn info(message: impl Display) {
    match JSON.load(Ordering::Relaxed) {
        true => tracing::info!(target: "weft", "{message}"),
        false => eprintln!("weft: {message}"),
    }
}

/// Something the operator should know but that does not stop weft.
pub fn warn(message: impl Display) {
    match JSON.load(Ordering::Relaxed) {
        true => tracing::warn!(target: "weft", "{message}"),
        false => eprintln!("weft: {message}"),
    }
}

/// Why weft, or the program it ran, failed.
pub fn error(message: impl Display) {
    match JSON.load(Ordering::Relaxed) {
        true => tracing::error!(target: "weft", "{message}"),
        false => eprintln!("weft: {message}"),
    }
}
