//! A small HTTP/1.1 client for the admin port: one connection per request (the commands make one
//! request each), a JSON body read whole and bounded, or an NDJSON body read line by line.

use std::fmt::Write as _;
use std::time::Duration;

use http::header::{CONTENT_TYPE, HOST, USER_AGENT};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::{Bytes, Incoming};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::Error;

/// A local admin port accepts at once; longer means nothing is there.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// For the response head, and for a whole JSON body.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(30);
/// `/api/stat` is a few KiB; anything near this is not the admin port answering.
const MAX_JSON: usize = 16 << 20;
/// An error body is a line of JSON or text.
const MAX_ERROR_BODY: usize = 64 << 10;
/// One tap event is well under 2 KiB; a longer "line" means the stream is not NDJSON.
pub const MAX_LINE: usize = 1 << 20;

/// The admin port at one address.
#[derive(Debug, Clone)]
pub struct Admin {
    addr: String,
}

/// Aborts the connection task when the response is dropped, so an abandoned tap stream closes
/// its socket at once.
struct ConnTask(tokio::task::JoinHandle<()>);

impl Drop for ConnTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Admin {
    pub fn new(addr: impl Into<String>) -> Self {
        Admin { addr: addr.into() }
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// GETs `path_and_query` and answers the body of a 200, which must be JSON (or the error
    /// names what came instead).
    pub async fn get_json(&self, path_and_query: &str) -> Result<serde_json::Value, Error> {
        let (resp, _conn) = self.get(path_and_query).await?;
        let body = tokio::time::timeout(RESPONSE_TIMEOUT, Limited::new(resp.into_body(), MAX_JSON).collect())
            .await
            .map_err(|_| {
                self.failed(format!(
                    "no complete answer to {path_and_query} within {RESPONSE_TIMEOUT:?}"
                ))
            })?
            .map_err(|e| self.failed(format!("reading the answer to {path_and_query}: {e}")))?
            .to_bytes();
        serde_json::from_slice(&body).map_err(|e| {
            self.failed(format!(
                "{path_and_query} did not answer JSON ({e}); is {} a localmesh admin port?",
                self.addr
            ))
        })
    }

    /// GETs `path_and_query`, which must answer `application/x-ndjson`, and reads it by line.
    pub async fn lines(&self, path_and_query: &str) -> Result<Lines, Error> {
        let (resp, conn) = self.get(path_and_query).await?;
        let ctype = resp
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !ctype.starts_with("application/x-ndjson") {
            return Err(self.failed(format!(
                "{path_and_query} answered {:?}, not a stream of JSON lines; is {} a localmesh admin port?",
                ctype, self.addr
            )));
        }
        Ok(Lines {
            body: resp.into_body(),
            buf: Vec::new(),
            done: false,
            addr: self.addr.clone(),
            _conn: conn,
        })
    }

    fn failed(&self, what: String) -> Error {
        Error::Failed(format!("the admin port at {}: {what}", self.addr))
    }

    /// Connects, sends the request, and answers a 2xx response; other statuses become errors
    /// carrying the admin's message.
    async fn get(&self, path_and_query: &str) -> Result<(Response<Incoming>, ConnTask), Error> {
        let unreachable = |reason: String| Error::Unreachable {
            addr: self.addr.clone(),
            reason,
        };
        let tcp = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(self.addr.as_str())).await {
            Err(_) => return Err(unreachable(format!("no answer within {}s", CONNECT_TIMEOUT.as_secs()))),
            Ok(Err(e)) => return Err(unreachable(e.to_string())),
            Ok(Ok(tcp)) => tcp,
        };
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .map_err(|e| self.failed(format!("HTTP handshake: {e}")))?;
        let conn = ConnTask(tokio::spawn(async move {
            // Its errors surface on the request or the body, where they are reported.
            let _ = conn.await;
        }));
        let req = Request::get(path_and_query)
            .header(HOST, self.addr.as_str())
            .header(USER_AGENT, concat!("localmesh/", env!("CARGO_PKG_VERSION")))
            .body(Empty::<Bytes>::new())
            .map_err(|e| self.failed(format!("cannot build the request for {path_and_query}: {e}")))?;
        let resp = tokio::time::timeout(RESPONSE_TIMEOUT, send.send_request(req))
            .await
            .map_err(|_| self.failed(format!("no answer to {path_and_query} within {RESPONSE_TIMEOUT:?}")))?
            .map_err(|e| self.failed(format!("{path_and_query}: {e}")))?;
        let status = resp.status();
        if status.is_success() {
            return Ok((resp, conn));
        }
        let body = tokio::time::timeout(
            RESPONSE_TIMEOUT,
            Limited::new(resp.into_body(), MAX_ERROR_BODY).collect(),
        )
        .await
        .ok()
        .and_then(Result::ok)
        .map(|b| b.to_bytes())
        .unwrap_or_default();
        let message = error_message(&body);
        Err(if status == StatusCode::BAD_REQUEST {
            Error::Rejected(message)
        } else {
            self.failed(format!("{path_and_query} answered {status}: {message}"))
        })
    }
}

/// The admin's `{"error": "..."}`, or the body's text, cut short.
pub fn error_message(body: &[u8]) -> String {
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(body)
        && let Some(e) = v.get("error").and_then(|e| e.as_str())
    {
        return super::clean(e);
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        return "(no message)".into();
    }
    let mut short: String = text.chars().take(300).collect();
    if short.len() < text.len() {
        short.push_str("...");
    }
    super::clean(&short)
}

/// An NDJSON body, line by line.
pub struct Lines {
    body: Incoming,
    buf: Vec<u8>,
    done: bool,
    addr: String,
    _conn: ConnTask,
}

impl Lines {
    /// The next non-empty line (without its newline), `None` once the server ended the stream.
    /// Cancel-safe: a `select!` may drop it between frames without losing data, since the buffer
    /// only changes after a frame has arrived.
    pub async fn next(&mut self) -> Result<Option<String>, Error> {
        loop {
            if let Some(i) = self.buf.iter().position(|&b| b == b'\n') {
                let rest = self.buf.split_off(i + 1);
                let mut line = std::mem::replace(&mut self.buf, rest);
                line.pop();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                return Ok(Some(String::from_utf8_lossy(&line).into_owned()));
            }
            if self.done {
                // A last line without its newline still counts.
                if self.buf.iter().all(u8::is_ascii_whitespace) {
                    return Ok(None);
                }
                let line = std::mem::take(&mut self.buf);
                return Ok(Some(String::from_utf8_lossy(&line).into_owned()));
            }
            if self.buf.len() > MAX_LINE {
                return Err(Error::Failed(format!(
                    "the admin port at {} sent a line over {} KiB; not a tap stream",
                    self.addr,
                    MAX_LINE >> 10
                )));
            }
            match self.body.frame().await {
                None => self.done = true,
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.buf.extend_from_slice(&data);
                    }
                }
                Some(Err(e)) => {
                    return Err(Error::Failed(format!(
                        "the tap stream from the admin port at {} broke: {e}",
                        self.addr
                    )));
                }
            }
        }
    }
}

/// `?k=v&...` with each part percent-encoded (a header filter such as `user-type: premium` has a
/// space and a colon); empty for no pairs.
pub fn query(pairs: &[(&str, &str)]) -> String {
    let mut q = String::new();
    for (i, (k, v)) in pairs.iter().enumerate() {
        q.push(if i == 0 { '?' } else { '&' });
        encode(&mut q, k);
        q.push('=');
        encode(&mut q, v);
    }
    q
}

fn encode(out: &mut String, s: &str) {
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'/') {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_percent_encoded() {
        assert_eq!(
            query(&[("path", "/product.ProductService/"), ("header", "user-type: premium")]),
            "?path=/product.ProductService/&header=user-type%3A%20premium"
        );
        assert_eq!(query(&[("q", "a+b&c=d")]), "?q=a%2Bb%26c%3Dd");
        assert_eq!(query(&[]), "");
    }

    #[test]
    fn error_bodies_give_the_admins_message() {
        assert_eq!(
            error_message(br#"{"error": "parameter 'window': too long"}"#),
            "parameter 'window': too long"
        );
        assert_eq!(error_message(b"no admin page /api/stat\n"), "no admin page /api/stat");
        assert_eq!(error_message(b""), "(no message)");
        assert!(error_message(&[b'x'; 1000]).ends_with("..."));
    }
}
