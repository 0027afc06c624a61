//! The connection loop: hyper's HTTP/1.1 server under [`Limits`], in place of `axum::serve`,
//! which bounds nothing (a client sending its headers a byte at a time, or keeping an idle
//! connection, holds a socket and a task for as long as it likes).
//!
//! - **Connections**: a slot of a semaphore is taken *before* `accept`, so past
//!   `MAX_CONNECTIONS` the loop stops accepting and new connections wait in the kernel's
//!   listen backlog (or are refused by the kernel once it is full) until one closes. Nothing
//!   polls meanwhile.
//! - **Headers and idle keep-alive**: hyper's `header_read_timeout`, with a timer of ours. hyper
//!   starts that timer whenever it begins waiting for a request head: when the connection opens,
//!   and again as soon as a response is sent. On its own it would also cut every kept-alive
//!   connection after the header timeout, with no byte of a next request seen. [`HeadTimer`]
//!   keeps hyper's deadline for a connection's first request and, for later ones, counts the
//!   header timeout from the head's first byte and the keep-alive timeout until that byte.
//! - **Requests**: the router's `TimeoutLayer` (`crate::http`), which bounds reading the body.
//! - **Shutdown**: when `stop` completes the loop stops accepting, idle connections close, and
//!   in-flight requests finish ([`GracefulShutdown`]).

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper::rt::{Sleep, Timer};
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tower::ServiceExt as _;

use crate::config::Limits;

/// Serve `router` on `listener` under `limits` until `stop` completes, then finish in-flight
/// requests.
pub(super) async fn serve(
    listener: TcpListener,
    router: axum::Router,
    limits: Limits,
    stop: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    let mut stop = std::pin::pin!(stop);
    loop {
        let slot = tokio::select! {
            () = &mut stop => break,
            slot = slots.clone().acquire_owned() => slot,
        };
        // The semaphore is never closed.
        let Ok(slot) = slot else { break };
        let (stream, peer) = tokio::select! {
            () = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) if is_connection_error(&e) => continue,
                Err(e) => {
                    // Out of file descriptors, most likely: wait for some to close rather
                    // than retry at once.
                    tracing::error!(error = %e, "accept failed");
                    tokio::select! {
                        () = &mut stop => break,
                        () = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    }
                }
            },
        };
        let connection = connection(stream, peer, router.clone(), &limits);
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(%peer, error = %e, "connection closed");
            }
            drop(slot);
        });
    }
    drop(listener);
    // Every request in flight is answered within the request timeout; a connection still open
    // after it is a client not reading its answer, which must not hold the process up.
    if tokio::time::timeout(limits.request_timeout, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            after = ?limits.request_timeout,
            "connections still open at shutdown are dropped"
        );
    }
    Ok(())
}

/// A request handed to the router, with the client's address as `ConnectInfo`.
#[derive(Clone)]
struct Route {
    router: axum::Router,
    peer: SocketAddr,
}

impl hyper::service::Service<hyper::Request<Incoming>> for Route {
    type Response = axum::response::Response;
    type Error = std::convert::Infallible;
    type Future = tower::util::Oneshot<axum::Router, hyper::Request<Incoming>>;

    fn call(&self, mut request: hyper::Request<Incoming>) -> Self::Future {
        request.extensions_mut().insert(ConnectInfo(self.peer));
        self.router.clone().oneshot(request)
    }
}

/// One connection: HTTP/1.1 with keep-alive.
fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    router: axum::Router,
    limits: &Limits,
) -> http1::Connection<TokioIo<Counted>, Route> {
    let reads = Arc::new(Reads::default());
    let service = Route { router, peer };
    http1::Builder::new()
        .timer(HeadTimer {
            reads: reads.clone(),
            keep_alive: limits.keep_alive_timeout,
        })
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(true)
        .serve_connection(
            TokioIo::new(Counted {
                stream,
                reads,
                replacing: None,
            }),
            service,
        )
}

fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// What a connection's reads tell its [`HeadTimer`].
#[derive(Debug, Default)]
struct Reads {
    /// When the first byte arrived since hyper last began waiting for a head.
    first_byte: Mutex<Option<Instant>>,
    /// Heads hyper has waited for on this connection.
    heads: AtomicU64,
}

impl Reads {
    fn first_byte(&self) -> Option<Instant> {
        *self.first_byte.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn set_first_byte(&self, at: Option<Instant>) {
        *self.first_byte.lock().unwrap_or_else(|e| e.into_inner()) = at;
    }

    fn saw_bytes(&self) {
        let mut first = self.first_byte.lock().unwrap_or_else(|e| e.into_inner());
        if first.is_none() {
            *first = Some(Instant::now());
        }
    }
}

/// The socket, noting when bytes arrive, and answering hyper's own parse errors as the
/// service answers everything else.
struct Counted {
    stream: TcpStream,
    reads: Arc<Reads>,
    /// A replacement for hyper's answer to a request it could not parse, being written.
    replacing: Option<Replacement>,
}

struct Replacement {
    bytes: Vec<u8>,
    written: usize,
}

/// hyper answers a request it cannot parse (400) or whose head is too large (431) by itself,
/// with an empty body and none of the service's headers, and has no hook to change that. Its
/// answer is recognised as it is written (that status line with `content-length: 0`, which
/// the service never sends: every service error has a JSON body) and replaced by the
/// service's JSON error with a request id. hyper closes the connection after it.
fn parse_error_answer(head: &[u8]) -> Option<Vec<u8>> {
    let (status, message) = if head.starts_with(b"HTTP/1.1 400 Bad Request\r\n") {
        (
            "400 Bad Request",
            "Malformed request: its request line or headers could not be parsed",
        )
    } else if head.starts_with(b"HTTP/1.1 431 Request Header Fields Too Large\r\n") {
        (
            "431 Request Header Fields Too Large",
            "Request headers are too large",
        )
    } else {
        return None;
    };
    let empty = head
        .windows(b"\r\ncontent-length: 0\r\n".len())
        .any(|w| w.eq_ignore_ascii_case(b"\r\ncontent-length: 0\r\n"));
    if !empty {
        return None;
    }
    let body = serde_json::json!({ "error": message }).to_string();
    let id = uuid::Uuid::now_v7();
    tracing::info!(request_id = %id, status, "refused a request hyper could not parse");
    Some(
        format!(
            "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nx-request-id: {id}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )
        .into_bytes(),
    )
}

/// Whether a write starts with one of the status lines hyper's own parse errors use.
fn parse_error_answer_start(buf: &[u8]) -> bool {
    buf.starts_with(b"HTTP/1.1 400 Bad Request\r\n")
        || buf.starts_with(b"HTTP/1.1 431 Request Header Fields Too Large\r\n")
}

impl Counted {
    /// Write `buf`, or the replacement for it when it is hyper's parse-error answer.
    fn write_or_replace(&mut self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        if self.replacing.is_none()
            && let Some(bytes) = parse_error_answer(buf)
        {
            self.replacing = Some(Replacement { bytes, written: 0 });
        }
        let Some(r) = self.replacing.as_mut() else {
            return Pin::new(&mut self.stream).poll_write(cx, buf);
        };
        while r.written < r.bytes.len() {
            match Pin::new(&mut self.stream).poll_write(cx, &r.bytes[r.written..]) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => r.written += n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        // hyper's answer is taken whole; what it writes after it (nothing: it closes) too.
        Poll::Ready(Ok(buf.len()))
    }
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.stream).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.reads.saw_bytes();
        }
        polled
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.write_or_replace(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let first = bufs.iter().find(|b| !b.is_empty());
        let replace =
            self.replacing.is_some() || first.is_some_and(|b| parse_error_answer_start(b));
        if replace {
            let whole: Vec<u8> = bufs.iter().flat_map(|b| b.iter().copied()).collect();
            return self.write_or_replace(cx, &whole);
        }
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// The timer hyper's HTTP/1 server arms for `header_read_timeout` (its only use of a timer in
/// hyper 1.x).
/// Each sleep is one wait for a request head. For a connection's first head it ends at
/// hyper's deadline; for later ones, the header timeout counts from the head's first byte,
/// and until that byte the connection is idle and may wait `keep_alive`.
#[derive(Clone)]
struct HeadTimer {
    reads: Arc<Reads>,
    keep_alive: Duration,
}

impl Timer for HeadTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn Sleep>> {
        self.sleep_until(Instant::now() + duration)
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn Sleep>> {
        let armed = Instant::now();
        let header = deadline.saturating_duration_since(armed);
        let first = self.reads.heads.fetch_add(1, Ordering::Relaxed) == 0;
        // Bytes read before now belong to the previous request, or are already buffered (a
        // head that arrived partly with the previous request then waits at most `keep_alive`
        // for its next byte).
        self.reads.set_first_byte(None);
        Box::pin(HeadSleep {
            reads: self.reads.clone(),
            armed,
            header,
            idle: if first { header } else { self.keep_alive },
            sleep: Box::pin(tokio::time::sleep_until(deadline.into())),
        })
    }

    fn reset(&self, sleep: &mut Pin<Box<dyn Sleep>>, new_deadline: Instant) {
        *sleep = self.sleep_until(new_deadline);
    }
}

/// One wait for a request head; see [`HeadTimer`].
struct HeadSleep {
    reads: Arc<Reads>,
    armed: Instant,
    header: Duration,
    /// How long the wait may last with no byte of the head.
    idle: Duration,
    sleep: Pin<Box<tokio::time::Sleep>>,
}

impl Sleep for HeadSleep {}

impl Future for HeadSleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let first_byte = self.reads.first_byte();
        let deadline = match first_byte {
            Some(at) => at + self.header,
            None => self.armed + self.idle,
        };
        let deadline = tokio::time::Instant::from_std(deadline);
        if self.sleep.deadline() != deadline {
            self.sleep.as_mut().reset(deadline);
        }
        let fired = self.sleep.as_mut().poll(cx);
        if fired.is_ready() {
            // hyper then closes the connection; say which wait ran out.
            match first_byte {
                None => tracing::debug!(after = ?self.idle, "no request came: closing"),
                Some(_) => tracing::debug!(after = ?self.header, "request head too slow: closing"),
            }
        }
        fired
    }
}
