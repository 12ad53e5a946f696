//! A tiny OpenAI-compatible mock server for tests (hand-written on tokio TCP so streams
//! can be split at awkward places). Not a real server: it streams `max_tokens` tokens
//! `" t0", " t1", ...` with fixed delays, ends with a usage chunk carrying
//! `lantern_timing`, answers `/health`, `/v1/models`, `/tokenize`, `/detokenize`, and
//! fails requests for the model `broken` with a 404.
//!
//! Its tokenizer: the word `wN` is token `N`; any other word hashes into `[3, 1000)`;
//! `/detokenize` writes ids back as `wN` words, so decode→encode round-trips exactly.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Timing of the mock's streams.
#[derive(Debug, Clone, Copy)]
pub struct MockConfig {
    /// Delay before the first token.
    pub first_token_delay: Duration,
    /// Delay between tokens.
    pub token_gap: Duration,
}

impl Default for MockConfig {
    fn default() -> Self {
        Self {
            first_token_delay: Duration::from_millis(30),
            token_gap: Duration::from_millis(8),
        }
    }
}

/// Request bodies the mock received on the generation routes: `(path, body)`.
pub type Seen = Arc<Mutex<Vec<(String, Value)>>>;

/// A running mock.
pub struct MockServer {
    /// Port on 127.0.0.1.
    pub port: u16,
    /// Received generation requests.
    pub seen: Seen,
}

impl MockServer {
    /// Bodies received so far.
    pub fn bodies(&self) -> Vec<(String, Value)> {
        self.seen.lock().map(|v| v.clone()).unwrap_or_default()
    }
}

/// Binds 127.0.0.1 on a free port and serves in a background task.
pub async fn start(cfg: MockConfig) -> std::io::Result<MockServer> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let seen: Seen = Arc::default();
    tokio::spawn(serve(listener, cfg, seen.clone()));
    Ok(MockServer { port, seen })
}

/// Accept loop (one request per connection).
pub async fn serve(listener: TcpListener, cfg: MockConfig, seen: Seen) {
    while let Ok((sock, _)) = listener.accept().await {
        tokio::spawn(handle(sock, cfg, seen.clone()));
    }
}

/// The mock tokenizer.
pub fn tokenize(text: &str) -> Vec<u32> {
    text.split_whitespace()
        .map(
            |w| match w.strip_prefix('w').and_then(|n| n.parse::<u32>().ok()) {
                Some(n) => n,
                None => {
                    3 + w
                        .bytes()
                        .fold(7u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b)))
                        % 997
                }
            },
        )
        .collect()
}

async fn read_request(sock: &mut TcpStream) -> Option<(String, String, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut tmp = [0u8; 4096];
    let header_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = sock.read(&mut tmp).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&tmp[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..header_end]).to_string();
    let mut lines = head.lines();
    let mut first = lines.next()?.split_whitespace();
    let method = first.next()?.to_string();
    let path = first.next()?.to_string();
    let len: usize = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse().ok())
        .unwrap_or(0);
    let mut body = buf[header_end..].to_vec();
    while body.len() < len {
        let n = sock.read(&mut tmp).await.ok()?;
        if n == 0 {
            return None;
        }
        body.extend_from_slice(&tmp[..n]);
    }
    Some((method, path, body))
}

async fn respond_json(sock: &mut TcpStream, status: &str, v: &Value) {
    let body = v.to_string();
    let resp = format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = sock.write_all(resp.as_bytes()).await;
}

async fn chunk(sock: &mut TcpStream, data: &[u8]) -> std::io::Result<()> {
    sock.write_all(format!("{:x}\r\n", data.len()).as_bytes())
        .await?;
    sock.write_all(data).await?;
    sock.write_all(b"\r\n").await?;
    sock.flush().await
}

async fn stream_completion(
    sock: &mut TcpStream,
    body: &Value,
    chat: bool,
    cfg: MockConfig,
) -> std::io::Result<()> {
    let n = body["max_tokens"].as_u64().unwrap_or(4) as usize;
    sock.write_all(
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n",
    )
    .await?;
    if chat {
        chunk(
            sock,
            b"data: {\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\"}}]}\n\n",
        )
        .await?;
    }
    chunk(sock, b": keep-alive comment\r\n\r\n").await?;
    tokio::time::sleep(cfg.first_token_delay).await;
    for i in 0..n {
        let ev = if chat {
            json!({"choices":[{"index":0,"delta":{"content":format!(" t{i}")},"finish_reason":null}]})
        } else {
            json!({"choices":[{"index":0,"text":format!(" t{i}"),"finish_reason":null}]})
        };
        let line = format!("data: {ev}\r\n\r\n");
        let bytes = line.as_bytes();
        if i % 3 == 1 {
            // One event split across two TCP writes.
            let mid = bytes.len() / 2;
            chunk(sock, &bytes[..mid]).await?;
            tokio::time::sleep(Duration::from_millis(1)).await;
            chunk(sock, &bytes[mid..]).await?;
        } else {
            chunk(sock, bytes).await?;
        }
        if i + 1 < n {
            tokio::time::sleep(cfg.token_gap).await;
        }
    }
    let fin = json!({"choices":[{"index":0,"text":"","delta":{},"finish_reason":"length"}]});
    let prompt_tokens = match &body["prompt"] {
        Value::Array(a) => a.len(),
        Value::String(s) => tokenize(s).len(),
        _ => 0,
    };
    let usage = json!({
        "choices": [],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": n, "total_tokens": prompt_tokens + n},
        "lantern_timing": {"queue_s": 0.002, "prefill_s": 0.02, "decode_s": 0.05}
    });
    // Two events and [DONE] in one write.
    chunk(
        sock,
        format!("data: {fin}\n\ndata:{usage}\n\ndata: [DONE]\n\n").as_bytes(),
    )
    .await?;
    sock.write_all(b"0\r\n\r\n").await?;
    sock.flush().await
}

async fn handle(mut sock: TcpStream, cfg: MockConfig, seen: Seen) {
    let Some((method, path, body)) = read_request(&mut sock).await else {
        return;
    };
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    match (method.as_str(), path.as_str()) {
        ("GET", "/health") => respond_json(&mut sock, "200 OK", &json!({})).await,
        ("GET", "/v1/models") => {
            respond_json(
                &mut sock,
                "200 OK",
                &json!({"data": [{"id": "mock-model"}]}),
            )
            .await
        }
        ("POST", "/tokenize") => {
            let tokens = tokenize(v["prompt"].as_str().unwrap_or(""));
            respond_json(
                &mut sock,
                "200 OK",
                &json!({"tokens": tokens, "count": tokens.len()}),
            )
            .await
        }
        ("POST", "/detokenize") => {
            let words: Vec<String> = v["tokens"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_u64)
                        .map(|t| format!("w{t}"))
                        .collect()
                })
                .unwrap_or_default();
            respond_json(&mut sock, "200 OK", &json!({"prompt": words.join(" ")})).await
        }
        ("POST", p @ ("/v1/completions" | "/v1/chat/completions")) => {
            if let Ok(mut s) = seen.lock() {
                s.push((p.to_string(), v.clone()));
            }
            if v["model"] == "broken" {
                let err = json!({"error": {"message": "adapter `broken` not found", "type": "not_found"}});
                respond_json(&mut sock, "404 Not Found", &err).await;
                return;
            }
            let _ = stream_completion(&mut sock, &v, p.ends_with("chat/completions"), cfg).await;
        }
        _ => {
            respond_json(
                &mut sock,
                "404 Not Found",
                &json!({"error": {"message": "no route"}}),
            )
            .await
        }
    }
}
