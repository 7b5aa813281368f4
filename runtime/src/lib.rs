//! Process plumbing that every apiwitness service shares: the log set-up and
//! the shutdown signal. It holds no domain code, so depending on it keeps the
//! boundaries between the parts (the injector imports neither the interceptor
//! nor the aggregator, which share only `record`).

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// The HTTP and TLS libraries log header fields at their debug and trace
/// levels, and headers carry bearer tokens: they are capped at info, whatever
/// the filter asks for.
const HEADER_LOGGING_CAPS: [&str; 5] = [
    "h2=info",
    "hyper=info",
    "hyper_util=info",
    "rustls=info",
    "hyper_rustls=info",
];

/// Installs the tracing subscriber on standard error: an EnvFilter from
/// `filter` (with the header-logging caps), as text or JSON lines.
pub fn init_tracing(filter: &str, format: LogFormat) -> Result<(), String> {
    let builder = tracing_subscriber::fmt()
        .with_env_filter(env_filter(filter)?)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    }
    .map_err(|e| e.to_string())
}

fn env_filter(filter: &str) -> Result<tracing_subscriber::EnvFilter, String> {
    let mut parsed = tracing_subscriber::EnvFilter::try_new(filter)
        .map_err(|e| format!("--log {filter:?} is not a valid filter: {e}"))?;
    for cap in HEADER_LOGGING_CAPS {
        parsed = parsed.add_directive(cap.parse().map_err(|e| format!("{cap}: {e}"))?);
    }
    Ok(parsed)
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        // Without signal handlers the process still stops on the default action.
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

/// The calling package's directory, as cargo gives it to a running test or
/// bench, and the one compiled in where cargo does not. A test binary built
/// in another checkout that shares the target directory has that checkout's
/// directory compiled in.
#[macro_export]
macro_rules! manifest_dir {
    () => {
        ::std::env::var("CARGO_MANIFEST_DIR")
            .unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_string())
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_filter_is_named() {
        let err = env_filter("info,[[[").unwrap_err();
        assert!(err.contains("--log"), "{err}");
    }

    #[test]
    fn header_logging_stays_capped_at_info() {
        let filter = env_filter("trace").unwrap().to_string();
        for cap in HEADER_LOGGING_CAPS {
            assert!(filter.contains(cap), "{filter}");
        }
    }
}
