//! The `/metrics` endpoint of `serve --metrics ADDR`: a minimal HTTP/1.1
//! responder. `GET /metrics` gets OpenMetrics text when the Accept header
//! asks for it (as Prometheus does), else the Prometheus text format;
//! anything else gets 404 (or 405 for another method). Each request is bounded (8 KiB of
//! head, 10 s) and its connection closed after the answer.

use crate::session::io::RunState;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// Longest request head read.
const MAX_HEAD: usize = 8 * 1024;
/// Time a client has to send its request and read the answer.
const REQUEST_TIME: Duration = Duration::from_secs(10);
/// The OpenMetrics media type.
const OPEN_METRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// The Prometheus text format's media type.
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Answers scrapes until the daemon stops.
pub async fn serve(listener: TcpListener, mut state: watch::Receiver<RunState>) {
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    tokio::spawn(answer(stream));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "metrics: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            changed = state.changed() => {
                if changed.is_err() || *state.borrow() != RunState::Running {
                    return;
                }
            }
        }
    }
}

/// Reads one request head and answers it.
async fn answer(mut stream: TcpStream) {
    let _ = tokio::time::timeout(REQUEST_TIME, async {
        let Some(head) = read_head(&mut stream).await else {
            return;
        };
        let (status, content_type, body) = respond(&head);
        let response = format!(
            "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let _ = stream.write_all(response.as_bytes()).await;
        let _ = stream.shutdown().await;
    })
    .await;
}

/// The request head (up to the empty line), or `None` when the client
/// closed or sent too much.
async fn read_head(stream: &mut TcpStream) -> Option<Vec<u8>> {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        let n = stream.read(&mut buf).await.ok()?;
        if n == 0 {
            return None;
        }
        head.extend_from_slice(&buf[..n]);
        if head.windows(4).any(|w| w == b"\r\n\r\n") || head.windows(2).any(|w| w == b"\n\n") {
            return Some(head);
        }
        if head.len() > MAX_HEAD {
            return None;
        }
    }
}

/// Status line, content type and body for a request head.
fn respond(head: &[u8]) -> (&'static str, &'static str, String) {
    let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let mut words = line.split(|&b| b == b' ');
    let (method, target) = (
        words.next().unwrap_or_default(),
        words.next().unwrap_or_default(),
    );
    let path = target.split(|&b| b == b'?').next().unwrap_or_default();
    match (method, path) {
        (b"GET", b"/metrics") => match crate::metrics::get() {
            Some(m) if asks_open_metrics(head) => ("200 OK", OPEN_METRICS, m.encode()),
            Some(m) => ("200 OK", PROMETHEUS_TEXT, m.encode_prometheus()),
            None => (
                "503 Service Unavailable",
                "text/plain",
                "metrics are off\n".into(),
            ),
        },
        (b"GET", _) => ("404 Not Found", "text/plain", "try /metrics\n".into()),
        _ => ("405 Method Not Allowed", "text/plain", "only GET\n".into()),
    }
}

/// Whether the request's Accept header names OpenMetrics (else the
/// Prometheus text format is sent).
fn asks_open_metrics(head: &[u8]) -> bool {
    head.split(|&b| b == b'\n').any(|line| {
        let line = line.to_ascii_lowercase();
        line.starts_with(b"accept:")
            && line
                .windows(b"application/openmetrics-text".len())
                .any(|w| w == b"application/openmetrics-text")
    })
}

#[cfg(test)]
mod tests {
    use super::respond;

    #[test]
    fn requests() {
        assert_eq!(respond(b"GET /x HTTP/1.1\r\n\r\n").0, "404 Not Found");
        assert_eq!(
            respond(b"POST /metrics HTTP/1.1\r\n\r\n").0,
            "405 Method Not Allowed"
        );
        assert_eq!(respond(b"\r\n\r\n").0, "405 Method Not Allowed");
    }
}
