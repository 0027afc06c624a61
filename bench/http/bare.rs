//! The bare endpoint `bench/http.sh` compares tokenledger against: the same axum and tokio,
//! answering 200 with `{"ok":true}` and doing nothing else — no auth, no database, no
//! logging. Whatever tokenledger's console costs above this is its own (auth, the durable
//! use record, the command).
//!
//! It reads and discards the request body so it does the same socket work as a real handler.

use std::net::SocketAddr;

use axum::Router;
use axum::body::Bytes;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use clap::Parser;

/// The allocator tokenledger's binary uses, so the comparison is of the work, not the malloc.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(about = "Answer 200 {\"ok\":true} on GET / and POST /api/admin/console")]
struct Args {
    /// Address to listen on; port 0 picks a free one (the chosen address is printed once).
    #[arg(long, default_value = "127.0.0.1:0")]
    bind: SocketAddr,
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let app = Router::new()
        .route("/", get(ok))
        .route("/api/admin/console", post(ok));
    let listener = tokio::net::TcpListener::bind(args.bind).await?;
    println!("listening on {}", listener.local_addr()?);
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
}

/// `Bytes` drains the body before the handler runs.
async fn ok(_body: Bytes) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        r#"{"ok":true}"#,
    )
}
