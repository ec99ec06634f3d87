//! The optional loopback HTTP endpoint: `/metrics` (Prometheus text) and `/healthz`.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use crate::daemon::Metrics;

/// Binds `listen` (validated as loopback by the config) and serves the endpoint in the
/// background. Fails at once when the address cannot be bound.
pub async fn serve(listen: &str, metrics: Arc<Metrics>) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let m = metrics.clone();
    let app = Router::new()
        .route(
            "/metrics",
            get(move || {
                let m = m.clone();
                async move {
                    (
                        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                        m.render(),
                    )
                }
            }),
        )
        .route(
            "/healthz",
            get(move || {
                let m = metrics.clone();
                async move {
                    if m.mailbox_connected.load(Ordering::Relaxed) {
                        (StatusCode::OK, "ok: mailbox connected\n").into_response()
                    } else {
                        (StatusCode::SERVICE_UNAVAILABLE, "mailbox not connected\n").into_response()
                    }
                }
            }),
        );
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "metrics endpoint stopped");
        }
    });
    Ok(())
}
