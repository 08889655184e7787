//! A small SMTP client over real TCP sockets (optionally from a chosen
//! loopback source address), for daemon tests.

use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpSocket, TcpStream};

/// How long a test waits for a reply line.
const WAIT: Duration = Duration::from_secs(20);

/// One client connection.
pub struct Client {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
}

impl Client {
    /// Connects to 127.0.0.1:`port`.
    pub async fn connect(port: u16) -> Client {
        Client::wrap(
            TcpStream::connect(("127.0.0.1", port))
                .await
                .expect("connect"),
        )
    }

    /// Connects to 127.0.0.1:`port` from `source` (e.g. `127.0.0.2`).
    pub async fn connect_from(source: &str, port: u16) -> Client {
        let socket = TcpSocket::new_v4().unwrap();
        socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
        let stream = socket
            .connect(format!("127.0.0.1:{port}").parse().unwrap())
            .await
            .expect("connect");
        Client::wrap(stream)
    }

    fn wrap(stream: TcpStream) -> Client {
        let (r, w) = stream.into_split();
        Client {
            reader: BufReader::new(r),
            writer: w,
        }
    }

    /// One line without CRLF; `None` when the server closed the connection.
    pub async fn line(&mut self) -> Option<String> {
        let mut buf = String::new();
        let n = tokio::time::timeout(WAIT, self.reader.read_line(&mut buf))
            .await
            .expect("no reply in time")
            .unwrap_or(0);
        (n > 0).then(|| buf.trim_end_matches(['\r', '\n']).to_string())
    }

    /// Sends raw text.
    pub async fn send(&mut self, text: &str) {
        let _ = self.writer.write_all(text.as_bytes()).await;
    }

    /// Sends raw bytes.
    pub async fn send_bytes(&mut self, bytes: &[u8]) {
        let _ = self.writer.write_all(bytes).await;
    }

    /// Sends a command and returns the last line of its reply.
    pub async fn cmd(&mut self, line: &str) -> String {
        self.send(&format!("{line}\r\n")).await;
        loop {
            let l = self.line().await.expect("connection closed");
            if l.as_bytes().get(3) != Some(&b'-') {
                return l;
            }
        }
    }
}
