//! The ceiling for the ingestion benchmarks: an axum server on the same runtime settings as
//! costmeter whose `POST /v1/events` reads the body and answers 202, and whose
//! `POST /v1/traces` reads the body and answers an empty OTLP success, doing nothing else.
//!
//! `cargo run --release --example bare_202 -- 127.0.0.1:18100`

/// The same allocator as costmeter, so the ratio compares the work done, not the allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use axum::Router;
use axum::body::Bytes;
use axum::http::StatusCode;
use axum::routing::post;

fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:18100".to_string());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let app = Router::new()
            .route(
                "/v1/events",
                post(|body: Bytes| async move {
                    (
                        StatusCode::ACCEPTED,
                        format!(
                            "{{\"accepted\":{},\"duplicates\":0,\"rejected\":[]}}",
                            usize::from(!body.is_empty())
                        ),
                    )
                }),
            )
            .route(
                "/v1/traces",
                post(|body: Bytes| async move {
                    (
                        StatusCode::OK,
                        [("content-type", "application/x-protobuf")],
                        if body.is_empty() { "x" } else { "" },
                    )
                }),
            );
        let listener = tokio::net::TcpListener::bind(&addr).await?;
        axum::serve(listener, app).await
    })
}
