//! One streaming request: build the OpenAI body, send it, and time every content chunk.

use std::time::{Duration, Instant};

use http_body_util::BodyExt;
use hyper::{Method, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::args::Endpoint;
use crate::dataset::Prompt;
use crate::http::{chain, snippet, HttpClient};
use crate::sse::{SseEvent, SseParser};

/// Server-side timing a Lantern server reports in its final usage chunk as the
/// top-level field `lantern_timing` (seconds).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct ServerTiming {
    /// Time in the server's waiting queue.
    #[serde(default)]
    pub queue_s: Option<f64>,
    /// Prefill time (first scheduled step to first token).
    #[serde(default)]
    pub prefill_s: Option<f64>,
    /// Decode time (first token to finish).
    #[serde(default)]
    pub decode_s: Option<f64>,
}

/// What one request needs on the wire.
#[derive(Debug, Clone)]
pub struct RequestSpec<'a> {
    /// Route.
    pub endpoint: Endpoint,
    /// `model` field.
    pub model: &'a str,
    /// Prompt.
    pub prompt: &'a Prompt,
    /// `max_tokens`.
    pub max_tokens: usize,
    /// Send `ignore_eos: true`.
    pub ignore_eos: bool,
    /// `temperature`, when given.
    pub temperature: Option<f64>,
    /// Extra fields merged last (they win).
    pub extra_body: Option<&'a Map<String, Value>>,
}

/// The JSON body of a streaming request.
pub fn build_body(spec: &RequestSpec<'_>) -> Value {
    let mut body = match spec.endpoint {
        Endpoint::Completions => json!({
            "model": spec.model,
            "prompt": spec.prompt,
        }),
        Endpoint::Chat => {
            let content = match spec.prompt {
                Prompt::Text(t) => Value::String(t.clone()),
                // Chat has no token-id prompt; the dataset never builds one for chat.
                Prompt::Tokens(ids) => Value::String(
                    ids.iter()
                        .map(|i| i.to_string())
                        .collect::<Vec<_>>()
                        .join(" "),
                ),
            };
            json!({
                "model": spec.model,
                "messages": [{"role": "user", "content": content}],
            })
        }
    };
    if let Value::Object(m) = &mut body {
        m.insert("max_tokens".into(), json!(spec.max_tokens));
        m.insert("stream".into(), json!(true));
        m.insert("stream_options".into(), json!({"include_usage": true}));
        if spec.ignore_eos {
            m.insert("ignore_eos".into(), json!(true));
        }
        if let Some(t) = spec.temperature {
            m.insert("temperature".into(), json!(t));
        }
        if let Some(extra) = spec.extra_body {
            for (k, v) in extra {
                m.insert(k.clone(), v.clone());
            }
        }
    }
    body
}

/// Timing and counts of one finished (or failed) stream.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StreamResult {
    /// Seconds from send to the first content chunk.
    pub ttft_s: Option<f64>,
    /// Gaps between successive content chunks.
    pub itl_s: Vec<f64>,
    /// Seconds from send to the end of the stream (or the failure).
    pub e2el_s: f64,
    /// `usage.completion_tokens`, when the server sent usage.
    pub usage_completion_tokens: Option<usize>,
    /// `usage.prompt_tokens`, when the server sent usage.
    pub usage_prompt_tokens: Option<usize>,
    /// Content-carrying chunks seen.
    pub content_chunks: usize,
    /// Characters of generated text.
    pub generated_chars: usize,
    /// Lantern's server-side timing, when present.
    pub server_timing: Option<ServerTiming>,
    /// `(kind, message)` of a failure.
    pub error: Option<(String, String)>,
}

impl StreamResult {
    /// Output tokens: usage when present, else one per content chunk.
    pub fn output_tokens(&self) -> usize {
        self.usage_completion_tokens.unwrap_or(self.content_chunks)
    }
}

/// Folds SSE events of one stream into a [`StreamResult`].
#[derive(Debug)]
pub struct StreamAccumulator {
    start: Instant,
    last_content: Option<Instant>,
    result: StreamResult,
    done: bool,
    finish_reason_seen: bool,
}

fn nonempty_str(v: Option<&Value>) -> Option<&str> {
    v.and_then(Value::as_str).filter(|s| !s.is_empty())
}

fn as_usize(v: Option<&Value>) -> Option<usize> {
    v.and_then(Value::as_u64)
        .and_then(|x| usize::try_from(x).ok())
}

impl StreamAccumulator {
    /// Starts timing at `start` (when the request was sent).
    pub fn new(start: Instant) -> Self {
        Self {
            start,
            last_content: None,
            result: StreamResult::default(),
            done: false,
            finish_reason_seen: false,
        }
    }

    /// Records a server timing read from a response header.
    pub fn set_header_timing(&mut self, t: ServerTiming) {
        self.result.server_timing = Some(t);
    }

    fn fail(&mut self, kind: &str, msg: String) {
        if self.result.error.is_none() {
            self.result.error = Some((kind.to_string(), msg));
        }
    }

    /// Handles one event received at `now`.
    pub fn on_event(&mut self, ev: SseEvent, now: Instant) {
        let (event, data) = match ev {
            SseEvent::Done => {
                self.done = true;
                return;
            }
            SseEvent::Data { event, data } => (event, data),
        };
        let v: Value = match serde_json::from_str(&data) {
            Ok(v) => v,
            Err(e) => {
                self.fail(
                    "invalid stream chunk",
                    format!("chunk is not JSON ({e}): {}", snippet(data.as_bytes())),
                );
                return;
            }
        };
        if let Some(err) = v.get("error").filter(|e| !e.is_null()) {
            let msg = err
                .get("message")
                .and_then(Value::as_str)
                .map(str::to_string)
                .unwrap_or_else(|| err.to_string());
            self.fail("server error in stream", msg);
            return;
        }
        if event.as_deref() == Some("error") {
            self.fail("server error in stream", snippet(data.as_bytes()));
            return;
        }
        if let Some(choice) = v
            .get("choices")
            .and_then(Value::as_array)
            .and_then(|c| c.first())
        {
            let delta = choice.get("delta");
            let text = nonempty_str(choice.get("text"))
                .or_else(|| nonempty_str(delta.and_then(|d| d.get("content"))))
                .or_else(|| nonempty_str(delta.and_then(|d| d.get("reasoning_content"))))
                .or_else(|| nonempty_str(delta.and_then(|d| d.get("reasoning"))));
            if let Some(text) = text {
                match self.last_content {
                    None => self.result.ttft_s = Some(now.duration_since(self.start).as_secs_f64()),
                    Some(prev) => self
                        .result
                        .itl_s
                        .push(now.duration_since(prev).as_secs_f64()),
                }
                self.last_content = Some(now);
                self.result.content_chunks += 1;
                self.result.generated_chars += text.chars().count();
            }
            if choice.get("finish_reason").is_some_and(|f| !f.is_null()) {
                self.finish_reason_seen = true;
            }
        }
        if let Some(usage) = v.get("usage").filter(|u| u.is_object()) {
            if let Some(n) = as_usize(usage.get("completion_tokens")) {
                self.result.usage_completion_tokens = Some(n);
            }
            if let Some(n) = as_usize(usage.get("prompt_tokens")) {
                self.result.usage_prompt_tokens = Some(n);
            }
        }
        if let Some(t) = v.get("lantern_timing").filter(|t| t.is_object()) {
            if let Ok(t) = serde_json::from_value::<ServerTiming>(t.clone()) {
                self.result.server_timing = Some(t);
            }
        }
    }

    /// Closes the stream at `end`; a stream that stopped before `[DONE]` or a
    /// `finish_reason` is a failure.
    pub fn finish(mut self, end: Instant) -> StreamResult {
        self.result.e2el_s = end.duration_since(self.start).as_secs_f64();
        if !self.done && !self.finish_reason_seen {
            self.fail(
                "stream ended early",
                "the stream closed before `data: [DONE]` or a finish_reason".into(),
            );
        }
        self.result
    }
}

fn header_timing(headers: &hyper::HeaderMap) -> Option<ServerTiming> {
    ["lantern-timing", "x-lantern-timing"]
        .iter()
        .filter_map(|name| headers.get(*name))
        .filter_map(|v| v.to_str().ok())
        .find_map(|s| serde_json::from_str::<ServerTiming>(s).ok())
}

/// Sends `body` to `url` and times the stream. Never returns an error: failures are in
/// [`StreamResult::error`].
pub async fn stream_request(
    client: &HttpClient,
    url: &str,
    body: &Value,
    timeout: Duration,
) -> StreamResult {
    let start = Instant::now();
    let mut acc = StreamAccumulator::new(start);
    let work = async {
        let resp = match client.send(Method::POST, url, Some(body)).await {
            Ok(r) => r,
            Err(e) => return Err((e.kind().to_string(), e.to_string())),
        };
        let status = resp.status();
        if let Some(t) = header_timing(resp.headers()) {
            acc.set_header_timing(t);
        }
        let mut body = resp.into_body();
        if status != StatusCode::OK {
            let bytes = body
                .collect()
                .await
                .map(|c| c.to_bytes())
                .unwrap_or_default();
            return Err((
                format!("http {}", status.as_u16()),
                format!("{status}: {}", snippet(&bytes)),
            ));
        }
        let mut parser = SseParser::new();
        while let Some(frame) = body.frame().await {
            let now = Instant::now();
            let frame = frame.map_err(|e| ("stream read error".to_string(), chain(&e)))?;
            if let Ok(data) = frame.into_data() {
                for ev in parser.feed(&data) {
                    acc.on_event(ev, now);
                }
            }
        }
        let now = Instant::now();
        for ev in parser.finish() {
            acc.on_event(ev, now);
        }
        Ok(())
    };
    let outcome = tokio::time::timeout(timeout, work).await;
    let end = Instant::now();
    let mut result = acc.finish(end);
    match outcome {
        Ok(Ok(())) => {}
        Ok(Err((kind, msg))) => result.error = Some((kind, msg)),
        Err(_) => {
            result.error = Some((
                "timeout".into(),
                format!(
                    "no complete response within {:.0} s (--request-timeout)",
                    timeout.as_secs_f64()
                ),
            ))
        }
    }
    result
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn data(s: &str) -> SseEvent {
        SseEvent::Data {
            event: None,
            data: s.into(),
        }
    }

    #[test]
    fn body_shapes() {
        let p = Prompt::Tokens(vec![5, 6]);
        let extra: Map<String, Value> =
            serde_json::from_str(r#"{"top_p": 0.5, "max_tokens": 9}"#).unwrap();
        let spec = RequestSpec {
            endpoint: Endpoint::Completions,
            model: "m",
            prompt: &p,
            max_tokens: 4,
            ignore_eos: true,
            temperature: Some(0.0),
            extra_body: Some(&extra),
        };
        let b = build_body(&spec);
        assert_eq!(b["prompt"], json!([5, 6]));
        assert_eq!(b["stream"], true);
        assert_eq!(b["stream_options"]["include_usage"], true);
        assert_eq!(b["ignore_eos"], true);
        assert_eq!(b["top_p"], 0.5);
        assert_eq!(b["max_tokens"], 9, "extra body wins");
        let t = Prompt::Text("hi".into());
        let chat = build_body(&RequestSpec {
            endpoint: Endpoint::Chat,
            prompt: &t,
            extra_body: None,
            ignore_eos: false,
            ..spec
        });
        assert_eq!(chat["messages"][0]["content"], "hi");
        assert!(chat.get("ignore_eos").is_none());
    }

    #[test]
    fn accumulates_ttft_itl_usage_and_timing() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut acc = StreamAccumulator::new(t0);
        // Role-only chat chunk: no content, no TTFT.
        acc.on_event(
            data(r#"{"choices":[{"delta":{"role":"assistant"}}]}"#),
            ms(5),
        );
        acc.on_event(data(r#"{"choices":[{"delta":{"content":"He"}}]}"#), ms(10));
        acc.on_event(data(r#"{"choices":[{"delta":{"content":""}}]}"#), ms(12));
        acc.on_event(data(r#"{"choices":[{"delta":{"content":"llo"}}]}"#), ms(30));
        acc.on_event(
            data(r#"{"choices":[{"text":"!","finish_reason":"length"}]}"#),
            ms(60),
        );
        acc.on_event(
            data(r#"{"choices":[],"usage":{"prompt_tokens":7,"completion_tokens":4},"lantern_timing":{"queue_s":0.001,"prefill_s":0.004,"decode_s":0.05}}"#),
            ms(61),
        );
        acc.on_event(SseEvent::Done, ms(62));
        let r = acc.finish(ms(63));
        assert!(r.error.is_none(), "{:?}", r.error);
        assert!((r.ttft_s.unwrap() - 0.010).abs() < 1e-9);
        assert_eq!(r.itl_s.len(), 2);
        assert!((r.itl_s[0] - 0.020).abs() < 1e-9);
        assert!((r.itl_s[1] - 0.030).abs() < 1e-9);
        assert!((r.e2el_s - 0.063).abs() < 1e-9);
        assert_eq!(r.output_tokens(), 4);
        assert_eq!(r.usage_prompt_tokens, Some(7));
        assert_eq!(r.content_chunks, 3);
        assert_eq!(r.generated_chars, 6);
        let t = r.server_timing.unwrap();
        assert_eq!(t.queue_s, Some(0.001));
        assert_eq!(t.decode_s, Some(0.05));
    }

    #[test]
    fn counts_chunks_without_usage_and_flags_errors() {
        let t0 = Instant::now();
        let mut acc = StreamAccumulator::new(t0);
        acc.on_event(data(r#"{"choices":[{"text":"a"}]}"#), t0);
        acc.on_event(data(r#"{"choices":[{"text":"b"}]}"#), t0);
        acc.on_event(SseEvent::Done, t0);
        let r = acc.finish(t0);
        assert!(r.error.is_none());
        assert_eq!(r.output_tokens(), 2);

        let mut acc = StreamAccumulator::new(t0);
        acc.on_event(data(r#"{"choices":[{"text":"a"}]}"#), t0);
        let r = acc.finish(t0);
        assert_eq!(r.error.unwrap().0, "stream ended early");

        let mut acc = StreamAccumulator::new(t0);
        acc.on_event(
            data(r#"{"error":{"message":"boom","type":"server_error"}}"#),
            t0,
        );
        acc.on_event(SseEvent::Done, t0);
        assert_eq!(
            acc.finish(t0).error.unwrap(),
            ("server error in stream".into(), "boom".into())
        );

        let mut acc = StreamAccumulator::new(t0);
        acc.on_event(data("not json"), t0);
        acc.on_event(SseEvent::Done, t0);
        assert_eq!(acc.finish(t0).error.unwrap().0, "invalid stream chunk");
    }

    #[test]
    fn parses_sse_bytes_end_to_end() {
        // A whole stream split at awkward places, fed through the parser.
        let stream = "data: {\"choices\":[{\"text\":\"x\"}]}\r\n\r\n: ping\r\n\r\ndata:{\"choices\":[{\"text\":\"y\",\"finish_reason\":\"stop\"}]}\n\ndata: {\"choices\":[],\"usage\":{\"completion_tokens\":2,\"prompt_tokens\":3}}\n\ndata: [DONE]\n\n";
        let bytes = stream.as_bytes();
        let t0 = Instant::now();
        for cut in [1, 7, 20, 40, 77, 100] {
            let mut p = SseParser::new();
            let mut acc = StreamAccumulator::new(t0);
            for piece in bytes.chunks(cut) {
                for ev in p.feed(piece) {
                    acc.on_event(ev, t0);
                }
            }
            for ev in p.finish() {
                acc.on_event(ev, t0);
            }
            let r = acc.finish(t0);
            assert!(r.error.is_none());
            assert_eq!(r.content_chunks, 2);
            assert_eq!(r.output_tokens(), 2);
            assert_eq!(r.usage_prompt_tokens, Some(3));
        }
    }
}
