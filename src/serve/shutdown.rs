//! Graceful shutdown: at the first Ctrl-C or SIGTERM the server stops accepting connections, answers
//! readiness with 503, finishes the requests in flight (each bounded by `--timeout`) and exits 0. A
//! second signal ends the process at once (exit 130), for when a user really means it.

use super::state::Shared;

/// Resolves at the first signal, after marking the server as stopping.
pub async fn signalled(app: Shared) {
    next_signal().await;
    app.stop();
    eprintln!("mnist-tch serve: stopping: finishing the requests in flight (Ctrl-C again to stop at once)");
    tokio::spawn(async {
        next_signal().await;
        eprintln!("mnist-tch serve: stopped at once");
        std::process::exit(crate::signals::INTERRUPTED_EXIT_CODE);
    });
}

/// The next SIGINT or SIGTERM; never, for a signal whose handler cannot be installed.
async fn next_signal() {
    let interrupt = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signals) => {
                signals.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = interrupt => {}
        () = terminate => {}
    }
}
