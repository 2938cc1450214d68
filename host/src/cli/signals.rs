//! SIGTERM and ctrl-c: how `weft` processes learn to stop (as a
//! container's PID 1 they get no default action).

/// Completes on SIGTERM or ctrl-c. On Unix both are caught from this call
/// on, not from the first poll: a signal that comes while the caller is
/// still busy (a program printing its first line) is neither lost nor, at
/// PID 1 in a container, ignored.
pub(super) fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{Signal, SignalKind, signal};
        let term = signal(SignalKind::terminate()).ok();
        let interrupt = signal(SignalKind::interrupt()).ok();
        let wait = |s: Option<Signal>| async move {
            match s {
                Some(mut s) => {
                    s.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        async move {
            tokio::select! {
                _ = wait(term) => {}
                _ = wait(interrupt) => {}
            }
        }
    }
    #[cfg(not(unix))]
    async {
        let _ = tokio::signal::ctrl_c().await;
    }
}
