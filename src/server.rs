//! The HTTP listener, hardened against slow and hostile clients: a cap on open connections,
//! a deadline for each request's headers (which also closes idle keep-alive connections) and
//! one for its body. `axum::serve` has neither, so the accept loop is our own.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower_http::timeout::RequestBodyDeadlineLayer;
use tracing::{debug, warn};

/// Limits on what clients may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Connections open at once; beyond it new ones wait in the kernel's backlog.
    pub max_connections: usize,
    /// Time a client has to send a request's headers, counted from when the server starts
    /// waiting for them: a connection that sends nothing is closed after it.
    pub header_timeout: Duration,
    /// Time a client has to send a request's whole body, from when its headers arrived.
    pub body_timeout: Duration,
}

/// File descriptors kept back from the connection caps: the store and its WAL, readers, the
/// sampler's /proc reads, pidfds, the log, the webhook and span exporter.
pub const FD_RESERVE: u64 = 128;

/// Raises the open-file limit to its hard limit; returns the soft limit now in force.
pub fn raise_fd_limit() -> u64 {
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile);
    let raised = rustix::process::Rlimit {
        current: limit.maximum,
        maximum: limit.maximum,
    };
    if limit.current != limit.maximum
        && rustix::process::setrlimit(rustix::process::Resource::Nofile, raised).is_ok()
    {
        return limit.maximum.unwrap_or(u64::MAX);
    }
    limit.current.unwrap_or(u64::MAX)
}

/// The connection cap each of `listeners` may use under a soft fd limit, keeping
/// [`FD_RESERVE`] for everything else. Pure.
pub fn clamp_connections(configured: usize, soft_limit: u64, listeners: u64) -> usize {
    let room = soft_limit.saturating_sub(FD_RESERVE) / listeners.max(1);
    configured.min(usize::try_from(room).unwrap_or(usize::MAX).max(1))
}

/// How long open connections get to finish when the daemon stops.
const DRAIN: Duration = Duration::from_secs(5);

/// Serves `app` until `shutdown` resolves, then lets open requests finish (up to [`DRAIN`]).
/// With `tls`, every connection is https (the handshake within the header deadline).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    tls: Option<crate::tls::ServerTls>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let app = app.layer(RequestBodyDeadlineLayer::new(limits.body_timeout));
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .keep_alive(true);
    tokio::pin!(shutdown);
    let mut warned_full = false;
    loop {
        let permit = tokio::select! {
            () = &mut shutdown => break,
            permit = slots.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // EMFILE and friends: back off instead of spinning.
                    warn!(%error, "accept failed; retrying in 100ms");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        if slots.available_permits() == 0 && !warned_full {
            warned_full = true;
            warn!(
                max_connections = limits.max_connections,
                "connection cap reached; further clients wait until a connection closes"
            );
        } else if slots.available_permits() > limits.max_connections / 2 {
            warned_full = false;
        }
        let _ = stream.set_nodelay(true);
        let (builder, app, tls, watcher) = (
            builder.clone(),
            app.clone(),
            tls.clone(),
            graceful.watcher(),
        );
        tokio::spawn(async move {
            let stream =
                match crate::tls::MaybeTls::accept(stream, tls.as_ref(), limits.header_timeout)
                    .await
                {
                    Ok(stream) => stream,
                    Err(error) => {
                        debug!(%peer, %error, "TLS handshake failed");
                        return;
                    }
                };
            let connection =
                builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(app));
            if let Err(error) = watcher.watch(connection).await {
                debug!(%peer, %error, "connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    if tokio::time::timeout(DRAIN, graceful.shutdown())
        .await
        .is_err()
    {
        warn!("open connections did not finish within {DRAIN:?}; closing them");
    }
    Ok(())
}

/// Why a request body could not be read.
#[derive(Debug, PartialEq, Eq)]
pub enum BodyProblem {
    TooLarge,
    TimedOut,
    Broken(String),
}

/// Reads a whole request body, at most `limit` bytes, telling a slow client from a big one.
pub async fn read_body(body: axum::body::Body, limit: usize) -> Result<bytes::Bytes, BodyProblem> {
    axum::body::to_bytes(body, limit).await.map_err(|error| {
        let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(&error);
        while let Some(current) = cause {
            if current.is::<tower_http::timeout::TimeoutError>() {
                return BodyProblem::TimedOut;
            }
            if current.is::<http_body_util::LengthLimitError>() {
                return BodyProblem::TooLarge;
            }
            cause = current.source();
        }
        BodyProblem::Broken(error.to_string())
    })
}

/// Whether an `Authorization` value carries the expected bearer token, compared in time
/// independent of where it differs. Always true when no token is expected.
pub fn bearer_matches(expected: Option<&str>, authorization: Option<&str>) -> bool {
    let Some(expected) = expected else {
        return true;
    };
    let given = authorization
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    let difference = given
        .bytes()
        .zip(expected.bytes())
        .fold(0u8, |acc, (a, b)| acc | (a ^ b));
    given.len() == expected.len() && difference == 0
}

#[cfg(test)]
mod tests {
    use super::{bearer_matches, clamp_connections};

    #[test]
    fn connection_caps_leave_room_below_the_fd_limit() {
        assert_eq!(clamp_connections(1024, 1024, 1), 896);
        assert_eq!(clamp_connections(1024, 1024, 2), 448);
        assert_eq!(clamp_connections(1024, 1_048_576, 2), 1024);
        assert_eq!(clamp_connections(1024, 100, 1), 1, "never zero");
    }

    #[test]
    fn only_the_exact_bearer_token_passes() {
        assert!(bearer_matches(None, None));
        assert!(bearer_matches(Some("s3cret"), Some("Bearer s3cret")));
        assert!(!bearer_matches(Some("s3cret"), Some("Bearer s3cre")));
        assert!(!bearer_matches(Some("s3cret"), Some("Bearer s3cret2")));
        assert!(!bearer_matches(Some("s3cret"), Some("s3cret")));
        assert!(!bearer_matches(Some("s3cret"), None));
    }
}
