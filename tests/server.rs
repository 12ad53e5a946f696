//! End-to-end tests of `lantern serve` over HTTP: the real binary, the tiny-llama fixture,
//! OpenAI-shaped requests and responses, SSE streams, errors, metrics, disconnects,
//! concurrency and graceful shutdown.
//!
//! One server (`shared()`) serves every test that does not need special flags or a quiet
//! engine; tests that need their own flags (API key, tiny queue, small body limit, shutdown)
//! or exact idle metrics start their own. Every server dies with the test process
//! (`PR_SET_PDEATHSIG`) and per-test servers are also killed on drop.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::{json, Value};
use std::collections::{BTreeSet, HashMap};
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Barrier, OnceLock};
use std::time::{Duration, Instant};

const NAME: &str = "tiny";
const HEALTH_TIMEOUT: Duration = Duration::from_secs(60);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------------------

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn model_dir() -> PathBuf {
    repo().join("tests/fixtures/tiny-llama")
}

fn reference() -> &'static Value {
    static R: OnceLock<Value> = OnceLock::new();
    R.get_or_init(|| {
        let p = model_dir().join("reference.json");
        let s = std::fs::read_to_string(&p)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", p.display()));
        serde_json::from_str(&s).expect("reference.json is JSON")
    })
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .expect("an array of token ids")
        .iter()
        .map(|x| x.as_u64().expect("a token id") as u32)
        .collect()
}

fn text_prompt() -> &'static str {
    reference()["text_prompt"].as_str().unwrap()
}

fn text_prompt_ids() -> Vec<u32> {
    ids(&reference()["text_prompt_ids"])
}

fn text_greedy() -> Vec<u32> {
    ids(&reference()["text_greedy"])
}

fn ref_prompt(i: usize) -> Vec<u32> {
    ids(&reference()["prompts"][i])
}

fn ref_greedy(i: usize) -> Vec<u32> {
    ids(&reference()["greedy"][i])
}

// ---------------------------------------------------------------------------------------
// Server processes
// ---------------------------------------------------------------------------------------

struct Server {
    child: Child,
    base: String,
    log: PathBuf,
}

impl Server {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn log_tail(&self) -> String {
        log_tail(&self.log)
    }

    fn pid(&self) -> i32 {
        self.child.id() as i32
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn log_tail(p: &PathBuf) -> String {
    let s = std::fs::read_to_string(p).unwrap_or_default();
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    l.local_addr().expect("local addr").port()
}

/// Starts `lantern serve` on the tiny model with `extra` flags and waits for `/health`.
fn try_start(extra: &[&str]) -> Result<Server, String> {
    let mut last_err = String::new();
    for attempt in 0..5 {
        let port = free_port();
        let log = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("lantern-serve-{}-{port}.log", std::process::id()));
        let out = File::create(&log).map_err(|e| format!("creating {}: {e}", log.display()))?;
        let err = out.try_clone().map_err(|e| e.to_string())?;
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_lantern"));
        cmd.arg("serve")
            .arg("--model")
            .arg(model_dir())
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--kv-cache-memory", "64MiB", "--served-model-name", NAME])
            .args(extra)
            .env_remove("LANTERN_API_KEY")
            .env("HF_HUB_OFFLINE", "1")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        // SAFETY: prctl is async-signal-safe; it only asks the kernel to kill the child
        // when the spawning thread exits, so no server outlives the test process.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = cmd.spawn().map_err(|e| format!("spawning lantern: {e}"))?;
        let mut server = Server {
            child,
            base: format!("http://127.0.0.1:{port}"),
            log,
        };
        let t0 = Instant::now();
        loop {
            if let Ok(Some(status)) = server.child.try_wait() {
                last_err = format!(
                    "attempt {attempt}: server exited with {status} before becoming healthy:\n{}",
                    server.log_tail()
                );
                break;
            }
            if let Ok(r) = get(&server.url("/health")) {
                if r.status == 200 {
                    return Ok(server);
                }
            }
            if t0.elapsed() > HEALTH_TIMEOUT {
                return Err(format!(
                    "server not healthy after {HEALTH_TIMEOUT:?}:\n{}",
                    server.log_tail()
                ));
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }
    Err(last_err)
}

fn start(extra: &[&str]) -> Server {
    try_start(extra).unwrap_or_else(|e| panic!("{e}"))
}

/// The server shared by all tests that need no special flags. It is started from a thread
/// that never exits, so `PR_SET_PDEATHSIG` fires only when the test process ends.
fn shared() -> &'static Server {
    static S: OnceLock<Server> = OnceLock::new();
    S.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(try_start(&[]));
            loop {
                std::thread::park();
            }
        });
        match rx.recv() {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => panic!("{e}"),
            Err(_) => panic!("the server starter thread died"),
        }
    })
}

// ---------------------------------------------------------------------------------------
// HTTP
// ---------------------------------------------------------------------------------------

fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new()
        .timeout_connect(Duration::from_secs(5))
        .timeout(REQUEST_TIMEOUT)
        .build()
}

#[derive(Debug)]
struct Resp {
    status: u16,
    headers: HashMap<String, String>,
    body: String,
}

impl Resp {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| {
            panic!(
                "status {} body is not JSON ({e}): {}",
                self.status, self.body
            )
        })
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }
}

fn into_resp(r: Result<ureq::Response, ureq::Error>) -> Result<Resp, String> {
    let resp = match r {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(ureq::Error::Transport(t)) => return Err(t.to_string()),
    };
    let status = resp.status();
    let headers = resp
        .headers_names()
        .into_iter()
        .filter_map(|n| {
            resp.header(&n)
                .map(|v| (n.to_ascii_lowercase(), v.to_string()))
        })
        .collect();
    let body = resp.into_string().map_err(|e| e.to_string())?;
    Ok(Resp {
        status,
        headers,
        body,
    })
}

fn get(url: &str) -> Result<Resp, String> {
    into_resp(agent().get(url).call())
}

fn get_with(url: &str, headers: &[(&str, &str)]) -> Result<Resp, String> {
    let mut req = agent().get(url);
    for (k, v) in headers {
        req = req.set(k, v);
    }
    into_resp(req.call())
}

fn post_raw(url: &str, body: &str, headers: &[(&str, &str)]) -> Result<Resp, String> {
    let mut req = agent().post(url).set("Content-Type", "application/json");
    for (k, v) in headers {
        req = req.set(k, v);
    }
    into_resp(req.send_string(body))
}

fn post(url: &str, body: &Value) -> Resp {
    post_raw(url, &body.to_string(), &[]).unwrap_or_else(|e| panic!("POST {url}: {e}"))
}

/// POSTs and expects 200 with a JSON body.
fn post_ok(url: &str, body: &Value) -> Value {
    let r = post(url, body);
    assert_eq!(r.status, 200, "POST {url} {body}: {}", r.body);
    r.json()
}

/// A server-sent-events reader over a streaming response.
struct Sse {
    reader: BufReader<Box<dyn Read + Send + Sync + 'static>>,
}

impl Sse {
    /// The data of the next event (multi-line data joined by `\n`); None at end of stream.
    fn next_data(&mut self) -> Option<String> {
        let mut data: Vec<String> = Vec::new();
        loop {
            let mut line = String::new();
            let n = self
                .reader
                .read_line(&mut line)
                .expect("reading the SSE stream");
            if n == 0 {
                return if data.is_empty() {
                    None
                } else {
                    Some(data.join("\n"))
                };
            }
            let line = line.strip_suffix('\n').unwrap_or(&line);
            let line = line.strip_suffix('\r').unwrap_or(line);
            if line.is_empty() {
                if data.is_empty() {
                    continue;
                }
                return Some(data.join("\n"));
            }
            if line.starts_with(':') {
                continue; // comment / keep-alive
            }
            let (field, value) = match line.split_once(':') {
                Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
                None => (line, ""),
            };
            if field == "data" {
                data.push(value.to_string());
            }
        }
    }
}

fn stream(url: &str, body: &Value) -> Sse {
    let r = agent()
        .post(url)
        .set("Content-Type", "application/json")
        .send_string(&body.to_string());
    let resp = match r {
        Ok(r) => r,
        Err(ureq::Error::Status(code, r)) => {
            panic!("stream {url} {body}: status {code}: {:?}", r.into_string())
        }
        Err(e) => panic!("stream {url} {body}: {e}"),
    };
    assert_eq!(resp.status(), 200);
    let ct = resp.header("content-type").unwrap_or("").to_string();
    assert!(
        ct.starts_with("text/event-stream"),
        "streaming content-type is {ct:?}"
    );
    Sse {
        reader: BufReader::new(resp.into_reader()),
    }
}

/// Reads a whole stream: the JSON chunks before `[DONE]`; asserts `[DONE]` ends it.
fn stream_chunks(url: &str, body: &Value) -> Vec<Value> {
    let mut sse = stream(url, body);
    let mut chunks = Vec::new();
    loop {
        let d = sse
            .next_data()
            .unwrap_or_else(|| panic!("stream ended without [DONE] after {chunks:?}"));
        if d == "[DONE]" {
            break;
        }
        let v: Value = serde_json::from_str(&d).unwrap_or_else(|e| panic!("chunk {d:?}: {e}"));
        assert!(v.get("error").is_none(), "error inside the stream: {v}");
        chunks.push(v);
    }
    assert!(sse.next_data().is_none(), "data after [DONE]");
    chunks
}

// ---------------------------------------------------------------------------------------
// Metrics
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: Vec<(String, String)>,
    value: f64,
}

fn is_metric_name(s: &str) -> bool {
    let mut c = s.chars();
    matches!(c.next(), Some(ch) if ch.is_ascii_alphabetic() || ch == '_' || ch == ':')
        && c.all(|ch| ch.is_ascii_alphanumeric() || ch == '_' || ch == ':')
}

fn parse_labels(s: &str) -> Result<Vec<(String, String)>, String> {
    // s is the text between the braces.
    let mut out = Vec::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let eq = s[i..].find('=').ok_or(format!("no `=` in labels {s:?}"))? + i;
        let key = &s[i..eq];
        if !is_metric_name(key) || key.contains(':') {
            return Err(format!("bad label name {key:?} in {s:?}"));
        }
        if b.get(eq + 1) != Some(&b'"') {
            return Err(format!("label value not quoted in {s:?}"));
        }
        let mut j = eq + 2;
        let mut val = String::new();
        loop {
            match b.get(j) {
                None => return Err(format!("unterminated label value in {s:?}")),
                Some(b'\\') => {
                    val.push(*b.get(j + 1).ok_or("dangling escape")? as char);
                    j += 2;
                }
                Some(b'"') => break,
                Some(_) => {
                    let ch = s[j..].chars().next().unwrap();
                    val.push(ch);
                    j += ch.len_utf8();
                }
            }
        }
        out.push((key.to_string(), val));
        j += 1;
        match b.get(j) {
            None => break,
            Some(b',') => i = j + 1,
            Some(_) => return Err(format!("expected `,` after a label in {s:?}")),
        }
    }
    Ok(out)
}

/// Parses Prometheus text exposition; panics on any malformed line.
fn parse_prometheus(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text.lines() {
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("metrics line without a value: {line:?}"));
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("metrics value is not a float: {line:?}"));
        let (name, labels) = match series.find('{') {
            Some(open) => {
                let inner = series[open + 1..]
                    .strip_suffix('}')
                    .unwrap_or_else(|| panic!("unclosed labels: {line:?}"));
                let labels = parse_labels(inner).unwrap_or_else(|e| panic!("{e}: {line:?}"));
                (&series[..open], labels)
            }
            None => (series, Vec::new()),
        };
        assert!(is_metric_name(name), "bad metric name in {line:?}");
        out.push(Sample {
            name: name.to_string(),
            labels,
            value,
        });
    }
    out
}

fn scrape(server: &Server) -> Vec<Sample> {
    let r = get(&server.url("/metrics")).expect("GET /metrics");
    assert_eq!(r.status, 200);
    parse_prometheus(&r.body)
}

/// The value of `name` whose labels include all of `want`.
fn metric(samples: &[Sample], name: &str, want: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|s| {
            s.name == name
                && want
                    .iter()
                    .all(|(k, v)| s.labels.iter().any(|(lk, lv)| lk == k && lv == v))
        })
        .map(|s| s.value)
}

/// Polls `/metrics` until no request runs or waits and no KV block is in use.
fn wait_idle(server: &Server, within: Duration) -> Vec<Sample> {
    let t0 = Instant::now();
    loop {
        let m = scrape(server);
        let running = metric(&m, "lantern_num_requests_running", &[]).unwrap();
        let waiting = metric(&m, "lantern_num_requests_waiting", &[]).unwrap();
        let kv = metric(&m, "lantern_kv_cache_usage_perc", &[]).unwrap();
        if running == 0.0 && waiting == 0.0 && kv == 0.0 {
            return m;
        }
        assert!(
            t0.elapsed() < within,
            "engine not idle after {within:?}: running {running}, waiting {waiting}, kv usage {kv}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

// ---------------------------------------------------------------------------------------
// Response helpers
// ---------------------------------------------------------------------------------------

/// Token ids from completion logprobs requested with `return_tokens_as_token_ids`.
fn completion_token_ids(choice: &Value) -> Vec<u32> {
    choice["logprobs"]["tokens"]
        .as_array()
        .unwrap_or_else(|| panic!("no logprobs.tokens in {choice}"))
        .iter()
        .map(|t| {
            let s = t.as_str().unwrap();
            s.strip_prefix("token_id:")
                .unwrap_or_else(|| panic!("token {s:?} is not `token_id:N`"))
                .parse()
                .unwrap()
        })
        .collect()
}

fn assert_error(r: &Resp, status: u16, param: Option<&str>) -> String {
    assert_eq!(r.status, status, "body: {}", r.body);
    assert!(
        r.header("content-type")
            .unwrap_or("")
            .starts_with("application/json"),
        "error content-type {:?}",
        r.header("content-type")
    );
    let v = r.json();
    let e = &v["error"];
    let obj = e
        .as_object()
        .unwrap_or_else(|| panic!("no error object: {v}"));
    for k in ["message", "type", "param", "code"] {
        assert!(obj.contains_key(k), "error lacks `{k}`: {v}");
    }
    let msg = e["message"].as_str().expect("message is a string");
    assert!(!msg.is_empty());
    assert!(e["type"].as_str().is_some_and(|t| !t.is_empty()));
    assert_eq!(e["code"], json!(status), "{v}");
    match param {
        Some(p) => assert_eq!(e["param"], json!(p), "{v}"),
        None => assert!(e["param"].is_null(), "{v}"),
    }
    let ty = e["type"].as_str().unwrap();
    let want_ty = match status {
        400 | 413 => "invalid_request_error",
        401 => "authentication_error",
        404 => "not_found_error",
        429 => "rate_limit_error",
        503 => "service_unavailable",
        _ => ty,
    };
    assert_eq!(ty, want_ty, "{v}");
    msg.to_string()
}

fn completion_body(prompt: Value, max_tokens: usize) -> Value {
    json!({"model": NAME, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0})
}

fn chat_body(content: &str, max_tokens: usize) -> Value {
    json!({
        "model": NAME,
        "messages": [{"role": "user", "content": content}],
        "max_tokens": max_tokens,
        "temperature": 0,
    })
}

/// The greedy completion text of the reference text prompt (16 tokens).
fn greedy_text() -> String {
    let v = post_ok(
        &shared().url("/v1/completions"),
        &completion_body(json!(text_prompt_ids()), 16),
    );
    v["choices"][0]["text"].as_str().unwrap().to_string()
}

fn check_completion_shape(v: &Value) {
    assert!(v["id"].as_str().unwrap().starts_with("cmpl-"), "{v}");
    assert_eq!(v["object"], "text_completion");
    assert!(v["created"].as_u64().unwrap() > 1_600_000_000);
    assert_eq!(v["model"], NAME);
    let u = &v["usage"];
    let (p, c, t) = (
        u["prompt_tokens"].as_u64().unwrap(),
        u["completion_tokens"].as_u64().unwrap(),
        u["total_tokens"].as_u64().unwrap(),
    );
    assert_eq!(p + c, t, "{u}");
    assert!(u["prompt_tokens_details"]["cached_tokens"]
        .as_u64()
        .is_some());
    for c in v["choices"].as_array().unwrap() {
        assert!(c["text"].is_string(), "{c}");
        assert!(c.get("logprobs").is_some());
        assert!(matches!(
            c["finish_reason"].as_str(),
            Some("stop" | "length")
        ));
    }
}

fn check_chat_shape(v: &Value) {
    assert!(v["id"].as_str().unwrap().starts_with("chatcmpl-"), "{v}");
    assert_eq!(v["object"], "chat.completion");
    assert!(v["created"].as_u64().unwrap() > 1_600_000_000);
    assert_eq!(v["model"], NAME);
    let choices = v["choices"].as_array().unwrap();
    assert!(!choices.is_empty());
    for (i, c) in choices.iter().enumerate() {
        assert_eq!(c["index"], json!(i));
        assert_eq!(c["message"]["role"], "assistant");
        assert!(c["message"]["content"].is_string());
        assert!(matches!(
            c["finish_reason"].as_str(),
            Some("stop" | "length")
        ));
    }
    let u = &v["usage"];
    assert_eq!(
        u["prompt_tokens"].as_u64().unwrap() + u["completion_tokens"].as_u64().unwrap(),
        u["total_tokens"].as_u64().unwrap()
    );
}

/// Checks the chunks of a chat stream and returns (content, finish_reason, usage chunk).
fn check_chat_stream(chunks: &[Value], include_usage: bool) -> (String, String, Option<Value>) {
    assert!(!chunks.is_empty());
    let id = chunks[0]["id"].as_str().unwrap().to_string();
    assert!(id.starts_with("chatcmpl-"));
    let first = &chunks[0]["choices"][0];
    assert_eq!(first["index"], 0);
    assert_eq!(
        first["delta"]["role"], "assistant",
        "first chunk {}",
        chunks[0]
    );
    let mut content = String::new();
    let mut finish = None;
    let mut usage = None;
    for (k, c) in chunks.iter().enumerate() {
        assert_eq!(c["id"], json!(id), "all chunks share the id");
        assert_eq!(c["object"], "chat.completion.chunk");
        assert_eq!(c["model"], NAME);
        assert!(c["created"].as_u64().is_some());
        let choices = c["choices"].as_array().unwrap();
        if choices.is_empty() {
            assert!(
                include_usage,
                "a chunk without choices without include_usage: {c}"
            );
            assert!(usage.is_none(), "two usage chunks");
            assert_eq!(k, chunks.len() - 1, "the usage chunk is the last one");
            usage = Some(c["usage"].clone());
            continue;
        }
        if include_usage {
            assert!(
                c["usage"].is_null(),
                "usage must be null before the end: {c}"
            );
        } else {
            assert!(c.get("usage").is_none(), "usage without include_usage: {c}");
        }
        assert_eq!(choices.len(), 1);
        let ch = &choices[0];
        assert!(finish.is_none(), "a chunk after the finish chunk: {c}");
        if let Some(t) = ch["delta"]["content"].as_str() {
            content.push_str(t);
        }
        if let Some(f) = ch["finish_reason"].as_str() {
            finish = Some(f.to_string());
        }
    }
    let finish = finish.expect("a chunk with finish_reason");
    assert_eq!(usage.is_some(), include_usage);
    (content, finish, usage)
}

/// Checks the chunks of a completions stream; returns (text per index, finish per index).
fn check_completion_stream(chunks: &[Value]) -> (Vec<String>, Vec<String>, Option<Value>) {
    let mut texts: Vec<String> = Vec::new();
    let mut finishes: Vec<Option<String>> = Vec::new();
    let mut usage = None;
    let id = chunks[0]["id"].as_str().unwrap().to_string();
    for c in chunks {
        assert_eq!(c["id"], json!(id));
        assert_eq!(c["object"], "text_completion");
        assert_eq!(c["model"], NAME);
        let choices = c["choices"].as_array().unwrap();
        if choices.is_empty() {
            usage = Some(c["usage"].clone());
            continue;
        }
        for ch in choices {
            let i = ch["index"].as_u64().unwrap() as usize;
            if texts.len() <= i {
                texts.resize(i + 1, String::new());
                finishes.resize(i + 1, None);
            }
            assert!(finishes[i].is_none(), "text after finish: {c}");
            texts[i].push_str(ch["text"].as_str().unwrap());
            if let Some(f) = ch["finish_reason"].as_str() {
                finishes[i] = Some(f.to_string());
            }
        }
    }
    let finishes = finishes
        .into_iter()
        .map(|f| f.expect("every choice finishes"))
        .collect();
    (texts, finishes, usage)
}

// ---------------------------------------------------------------------------------------
// Basic endpoints
// ---------------------------------------------------------------------------------------

#[test]
fn models_lists_the_served_model() {
    let s = shared();
    let r = get(&s.url("/v1/models")).unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    assert_eq!(v["object"], "list");
    let data = v["data"].as_array().unwrap();
    assert_eq!(data.len(), 1, "{v}");
    let m = &data[0];
    assert_eq!(m["id"], NAME);
    assert_eq!(m["object"], "model");
    let created = m["created"].as_u64().expect("created is an integer");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(
        created > now - 3600 && created <= now + 5,
        "created {created}"
    );
    assert_eq!(m["owned_by"], "lantern");
    assert_eq!(m["root"], json!(model_dir().display().to_string()));
    assert_eq!(m["max_model_len"], 512);
}

#[test]
fn health_and_version() {
    let s = shared();
    let r = get(&s.url("/health")).unwrap();
    assert_eq!(r.status, 200);
    let r = get(&s.url("/version")).unwrap();
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
}

#[test]
fn metrics_are_prometheus_text() {
    let s = shared();
    // At least one finished request, so the request counters and histograms have data.
    post_ok(
        &s.url("/v1/completions"),
        &completion_body(json!(text_prompt()), 4),
    );
    let r = get(&s.url("/metrics")).unwrap();
    assert_eq!(r.status, 200);
    assert!(r.header("content-type").unwrap().starts_with("text/plain"));
    let samples = parse_prometheus(&r.body);
    // Every sample belongs to a family declared with # TYPE.
    let mut types = HashMap::new();
    for line in r.body.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, ty) = rest.split_once(' ').unwrap();
            assert!(
                matches!(
                    ty,
                    "counter" | "gauge" | "histogram" | "summary" | "untyped"
                ),
                "{line}"
            );
            assert!(
                types.insert(name.to_string(), ty.to_string()).is_none(),
                "{line}"
            );
        }
    }
    for smp in &samples {
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suf| {
                smp.name
                    .strip_suffix(suf)
                    .filter(|f| types.get(*f).is_some_and(|t| t == "histogram"))
            })
            .unwrap_or(&smp.name);
        assert!(types.contains_key(family), "{} has no # TYPE", smp.name);
    }
    let names: BTreeSet<&str> = samples.iter().map(|s| s.name.as_str()).collect();
    for want in [
        "lantern_time_to_first_token_seconds_bucket",
        "lantern_num_requests_running",
        "lantern_prefix_cache_hits_total",
        "lantern_requests_total",
        "lantern_kv_cache_usage_perc",
        "lantern_request_finished_total",
    ] {
        assert!(names.contains(want), "{want} missing from /metrics");
    }
    // Histogram buckets are cumulative and end with +Inf == _count.
    let buckets: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.name == "lantern_time_to_first_token_seconds_bucket")
        .collect();
    assert!(buckets.windows(2).all(|w| w[0].value <= w[1].value));
    let inf = metric(
        &samples,
        "lantern_time_to_first_token_seconds_bucket",
        &[("le", "+Inf")],
    )
    .unwrap();
    let count = metric(&samples, "lantern_time_to_first_token_seconds_count", &[]).unwrap();
    assert_eq!(inf, count);
    assert!(count >= 1.0);
    assert!(
        metric(
            &samples,
            "lantern_requests_total",
            &[
                ("endpoint", "/v1/completions"),
                ("status", "200"),
                ("model_name", NAME)
            ]
        )
        .unwrap()
            >= 1.0
    );
}

#[test]
fn unknown_route_is_404() {
    let s = shared();
    let r = get(&s.url("/nope")).unwrap();
    assert_error(&r, 404, None);
    let r = post_raw(&s.url("/v1/embeddingz"), "{}", &[]).unwrap();
    assert_error(&r, 404, None);
}

// ---------------------------------------------------------------------------------------
// Completions
// ---------------------------------------------------------------------------------------

#[test]
fn completion_greedy_token_ids_match_transformers() {
    let s = shared();
    let mut body = completion_body(json!(text_prompt_ids()), 16);
    body["logprobs"] = json!(1);
    body["return_tokens_as_token_ids"] = json!(true);
    let v = post_ok(&s.url("/v1/completions"), &body);
    check_completion_shape(&v);
    let choices = v["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 1);
    let c = &choices[0];
    assert_eq!(c["index"], 0);
    assert_eq!(completion_token_ids(c), text_greedy());
    assert_eq!(c["finish_reason"], "length");
    assert!(c["stop_reason"].is_null());
    assert_eq!(v["usage"]["prompt_tokens"], json!(text_prompt_ids().len()));
    assert_eq!(v["usage"]["completion_tokens"], 16);
    assert_eq!(
        v["usage"]["total_tokens"],
        json!(text_prompt_ids().len() + 16)
    );
}

#[test]
fn completion_text_prompt_equals_token_id_prompt() {
    let s = shared();
    let by_ids = greedy_text();
    let mut body = completion_body(json!(text_prompt()), 16);
    body["logprobs"] = json!(0);
    body["return_tokens_as_token_ids"] = json!(true);
    let v = post_ok(&s.url("/v1/completions"), &body);
    let c = &v["choices"][0];
    assert_eq!(c["text"].as_str().unwrap(), by_ids);
    assert_eq!(completion_token_ids(c), text_greedy());
    assert_eq!(v["usage"]["prompt_tokens"], json!(text_prompt_ids().len()));
}

#[test]
fn completion_prompt_arrays() {
    let s = shared();
    // Strings.
    let mut body = completion_body(json!([text_prompt(), "Hello world"]), 16);
    body["logprobs"] = json!(0);
    body["return_tokens_as_token_ids"] = json!(true);
    let v = post_ok(&s.url("/v1/completions"), &body);
    check_completion_shape(&v);
    let choices = v["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 2, "{v}");
    assert_eq!(choices[0]["index"], 0);
    assert_eq!(choices[1]["index"], 1);
    assert_eq!(completion_token_ids(&choices[0]), text_greedy());
    assert_eq!(v["usage"]["completion_tokens"], 32);
    assert!(v["usage"]["prompt_tokens"].as_u64().unwrap() > text_prompt_ids().len() as u64);

    // Token-id arrays: the reference prompts, 33 greedy tokens each (EOS included).
    let mut body = completion_body(json!([ref_prompt(0), ref_prompt(1), ref_prompt(2)]), 33);
    body["ignore_eos"] = json!(true);
    body["logprobs"] = json!(0);
    body["return_tokens_as_token_ids"] = json!(true);
    let v = post_ok(&s.url("/v1/completions"), &body);
    check_completion_shape(&v);
    let choices = v["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 3);
    for (i, c) in choices.iter().enumerate() {
        assert_eq!(c["index"], json!(i));
        assert_eq!(completion_token_ids(c), ref_greedy(i), "prompt {i}");
        assert_eq!(c["finish_reason"], "length");
    }
    let plen: usize = (0..3).map(|i| ref_prompt(i).len()).sum();
    assert_eq!(v["usage"]["prompt_tokens"], json!(plen));
    assert_eq!(v["usage"]["completion_tokens"], 99);
}

#[test]
fn completion_logprobs() {
    let s = shared();
    let greedy = greedy_text();
    let mut body = completion_body(json!(text_prompt()), 16);
    body["logprobs"] = json!(3);
    let v = post_ok(&s.url("/v1/completions"), &body);
    check_completion_shape(&v);
    let c = &v["choices"][0];
    let text = c["text"].as_str().unwrap();
    assert_eq!(text, greedy);
    let lp = &c["logprobs"];
    let tokens: Vec<&str> = lp["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    let token_lps: Vec<f64> = lp["token_logprobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect();
    let tops = lp["top_logprobs"].as_array().unwrap();
    let offsets: Vec<u64> = lp["text_offset"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap())
        .collect();
    assert_eq!(tokens.len(), 16);
    assert_eq!(token_lps.len(), 16);
    assert_eq!(tops.len(), 16);
    assert_eq!(offsets.len(), 16);
    // Offsets are character offsets into `text`.
    assert_eq!(offsets[0], 0);
    for i in 0..16 {
        assert!(token_lps[i] <= 0.0, "{}", token_lps[i]);
        if i + 1 < 16 {
            assert_eq!(
                offsets[i + 1] - offsets[i],
                tokens[i].chars().count() as u64,
                "text_offset {i}"
            );
        }
        let top = tops[i].as_object().unwrap();
        // Distinct ids may decode to the same string (partial UTF-8 bytes), so a map can
        // hold fewer than 3 entries; the best (chosen, greedy) one must be exact.
        assert!((1..=3).contains(&top.len()), "{top:?}");
        for (_, l) in top {
            let l = l.as_f64().unwrap();
            assert!(
                l <= 0.0 && l <= token_lps[i] + 1e-6,
                "{top:?} vs {}",
                token_lps[i]
            );
        }
        let own = top
            .get(tokens[i])
            .unwrap_or_else(|| panic!("chosen token {:?} not in {top:?}", tokens[i]));
        assert!(
            (own.as_f64().unwrap() - token_lps[i]).abs() < 1e-6,
            "top_logprobs[{i}][{:?}] = {own} but token_logprobs[{i}] = {}",
            tokens[i],
            token_lps[i]
        );
    }

    // With ids as token strings there are no collisions: exactly 3 entries each.
    body["return_tokens_as_token_ids"] = json!(true);
    let v = post_ok(&s.url("/v1/completions"), &body);
    let c = &v["choices"][0];
    assert_eq!(completion_token_ids(c), text_greedy());
    for top in c["logprobs"]["top_logprobs"].as_array().unwrap() {
        let top = top.as_object().unwrap();
        assert_eq!(top.len(), 3, "{top:?}");
        assert!(top.keys().all(|k| k.starts_with("token_id:")));
    }

    // Streaming: same text, same offsets.
    body["return_tokens_as_token_ids"] = json!(false);
    body["stream"] = json!(true);
    let chunks = stream_chunks(&s.url("/v1/completions"), &body);
    let (texts, finishes, _) = check_completion_stream(&chunks);
    assert_eq!(texts, vec![text.to_string()]);
    assert_eq!(finishes, vec!["length".to_string()]);
    let streamed_offsets: Vec<u64> = chunks
        .iter()
        .filter_map(|c| {
            c["choices"][0]["logprobs"]["text_offset"]
                .as_array()
                .cloned()
        })
        .flatten()
        .map(|x| x.as_u64().unwrap())
        .collect();
    assert_eq!(streamed_offsets, offsets, "streamed text_offset");
}

#[test]
fn completion_echo_with_logprobs_returns_prompt_logprobs_like_transformers() {
    let s = shared();
    let prompt = ref_prompt(1);
    let reference = candle_core::safetensors::load(
        model_dir().join("reference.safetensors"),
        &candle_core::Device::Cpu,
    )
    .unwrap();
    let rows = reference["prefill_logits.1"].to_vec2::<f32>().unwrap();
    let mut body = completion_body(json!(prompt.clone()), 4);
    body["echo"] = json!(true);
    body["logprobs"] = json!(2);
    body["ignore_eos"] = json!(true);
    body["return_tokens_as_token_ids"] = json!(true);
    let check = |lp: &Value| {
        let tokens = lp["tokens"].as_array().unwrap();
        let token_lps = lp["token_logprobs"].as_array().unwrap();
        let tops = lp["top_logprobs"].as_array().unwrap();
        assert_eq!(tokens.len(), prompt.len() + 4);
        assert_eq!(token_lps.len(), prompt.len() + 4);
        assert_eq!(tops.len(), prompt.len() + 4);
        assert!(token_lps[0].is_null() && tops[0].is_null());
        for j in 0..prompt.len() {
            assert_eq!(tokens[j], json!(format!("token_id:{}", prompt[j])));
        }
        for j in 1..prompt.len() {
            let row = &rows[j - 1];
            let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let lse = max + row.iter().map(|x| (x - max).exp()).sum::<f32>().ln();
            let want = f64::from(row[prompt[j] as usize] - lse);
            let got = token_lps[j].as_f64().unwrap();
            assert!(
                (got - want).abs() < 1e-4,
                "prompt position {j}: {got} vs {want}"
            );
            assert_eq!(tops[j].as_object().unwrap().len(), 2);
        }
        let gen: Vec<u32> = tokens[prompt.len()..]
            .iter()
            .map(|t| t.as_str().unwrap()["token_id:".len()..].parse().unwrap())
            .collect();
        assert_eq!(gen, ref_greedy(1)[..4].to_vec());
    };
    let v = post_ok(&s.url("/v1/completions"), &body);
    check(&v["choices"][0]["logprobs"]);
    // Streaming: the prompt chunk carries the prompt logprobs; all chunks together equal
    // the non-streamed logprobs.
    body["stream"] = json!(true);
    let chunks = stream_chunks(&s.url("/v1/completions"), &body);
    let mut merged = json!({"tokens": [], "token_logprobs": [], "top_logprobs": []});
    for c in &chunks {
        let Some(lp) = c["choices"].get(0).map(|ch| &ch["logprobs"]) else {
            continue;
        };
        if lp.is_null() {
            continue;
        }
        for k in ["tokens", "token_logprobs", "top_logprobs"] {
            let add = lp[k].as_array().unwrap().clone();
            merged[k].as_array_mut().unwrap().extend(add);
        }
    }
    check(&merged);
}

#[test]
fn completion_n_with_seed_is_reproducible() {
    let s = shared();
    let body = json!({
        "model": NAME,
        "prompt": text_prompt(),
        "max_tokens": 16,
        "temperature": 1.0,
        "n": 2,
        "seed": 1234,
        "ignore_eos": true,
    });
    let a = post_ok(&s.url("/v1/completions"), &body);
    check_completion_shape(&a);
    let ca = a["choices"].as_array().unwrap();
    assert_eq!(ca.len(), 2);
    assert_eq!(ca[0]["index"], 0);
    assert_eq!(ca[1]["index"], 1);
    assert!(ca.iter().all(|c| c["finish_reason"] == "length"));
    assert_eq!(a["usage"]["prompt_tokens"], json!(text_prompt_ids().len()));
    assert_eq!(a["usage"]["completion_tokens"], 32);
    let b = post_ok(&s.url("/v1/completions"), &body);
    let cb = b["choices"].as_array().unwrap();
    for i in 0..2 {
        assert_eq!(
            ca[i]["text"], cb[i]["text"],
            "choice {i} differs with the same seed"
        );
    }
}

#[test]
fn stop_strings() {
    let s = shared();
    let full = greedy_text();
    // A short ASCII substring from the middle whose first occurrence is not at the start.
    let chars: Vec<(usize, char)> = full.char_indices().collect();
    let mut stop = None;
    for k in chars.len() / 3..chars.len().saturating_sub(3) {
        let w: String = chars[k..k + 3].iter().map(|&(_, c)| c).collect();
        if w.chars().all(|c| c.is_ascii_graphic() || c == ' ') {
            let at = full.find(&w).unwrap();
            if at > 0 {
                stop = Some((w, at));
                break;
            }
        }
    }
    let (stop, at) = stop.unwrap_or_else(|| panic!("no usable stop string in {full:?}"));

    let mut body = completion_body(json!(text_prompt_ids()), 16);
    body["stop"] = json!([stop.clone()]);
    let v = post_ok(&s.url("/v1/completions"), &body);
    let c = &v["choices"][0];
    assert_eq!(
        c["text"].as_str().unwrap(),
        &full[..at],
        "stop {stop:?} in {full:?}"
    );
    assert_eq!(c["finish_reason"], "stop");
    assert_eq!(c["stop_reason"], json!(stop));
    assert!(v["usage"]["completion_tokens"].as_u64().unwrap() < 16);

    // Streaming holds back text that may begin the stop string.
    body["stream"] = json!(true);
    let (texts, finishes, _) =
        check_completion_stream(&stream_chunks(&s.url("/v1/completions"), &body));
    assert_eq!(texts, vec![full[..at].to_string()]);
    assert_eq!(finishes, vec!["stop".to_string()]);

    // A single string works like a list, and include_stop_str_in_output keeps the stop.
    body["stream"] = json!(false);
    body["stop"] = json!(stop.clone());
    body["include_stop_str_in_output"] = json!(true);
    let v = post_ok(&s.url("/v1/completions"), &body);
    let c = &v["choices"][0];
    let text = c["text"].as_str().unwrap();
    assert_eq!(text, &full[..at + stop.len()]);
    assert!(text.ends_with(&stop));
    assert_eq!(c["finish_reason"], "stop");

    // The same through chat: the text before the stop, finish_reason "stop".
    let mut chat = chat_body("Hello", 24);
    chat["ignore_eos"] = json!(true);
    let v = post_ok(&s.url("/v1/chat/completions"), &chat);
    let content = v["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_string();
    if let Some((k, _)) = content
        .char_indices()
        .skip(2)
        .find(|&(_, c)| c.is_ascii_alphanumeric())
    {
        let stop: String = content[k..].chars().take(1).collect();
        let at = content.find(&stop).unwrap();
        chat["stop"] = json!([stop]);
        let v = post_ok(&s.url("/v1/chat/completions"), &chat);
        assert_eq!(v["choices"][0]["message"]["content"], json!(&content[..at]));
        assert_eq!(v["choices"][0]["finish_reason"], "stop");
    }
}

#[test]
fn prefix_cache_reports_cached_tokens() {
    let s = shared();
    let prompt = ref_prompt(3);
    assert_eq!(prompt.len(), 131);
    let body = completion_body(json!(prompt), 2);
    let first = post_ok(&s.url("/v1/completions"), &body);
    let second = post_ok(&s.url("/v1/completions"), &body);
    assert_eq!(first["usage"]["prompt_tokens"], 131);
    let cached = second["usage"]["prompt_tokens_details"]["cached_tokens"]
        .as_u64()
        .unwrap();
    assert!(cached > 0, "second request: {}", second["usage"]);
    assert_eq!(cached % 16, 0, "cached tokens {cached} are whole blocks");
    assert!(cached < 131);
    assert_eq!(first["choices"][0]["text"], second["choices"][0]["text"]);
    let m = scrape(s);
    assert!(metric(&m, "lantern_prefix_cache_hits_total", &[]).unwrap() >= cached as f64);
}

// ---------------------------------------------------------------------------------------
// Chat
// ---------------------------------------------------------------------------------------

#[test]
fn chat_stream_matches_non_stream() {
    let s = shared();
    let body = chat_body("Tell me a story about a fox.", 24);
    let v = post_ok(&s.url("/v1/chat/completions"), &body);
    check_chat_shape(&v);
    let choice = &v["choices"][0];
    let content = choice["message"]["content"].as_str().unwrap();
    let finish = choice["finish_reason"].as_str().unwrap();
    assert!(choice["logprobs"].is_null());
    let usage = &v["usage"];
    let completion_tokens = usage["completion_tokens"].as_u64().unwrap();
    assert!((1..=24).contains(&completion_tokens));
    if finish == "length" {
        assert_eq!(completion_tokens, 24);
    }

    let mut sbody = body.clone();
    sbody["stream"] = json!(true);
    sbody["stream_options"] = json!({"include_usage": true});
    let chunks = stream_chunks(&s.url("/v1/chat/completions"), &sbody);
    let (scontent, sfinish, susage) = check_chat_stream(&chunks, true);
    assert_eq!(scontent, content);
    assert_eq!(sfinish, finish);
    let susage = susage.unwrap();
    assert_eq!(susage["prompt_tokens"], usage["prompt_tokens"]);
    assert_eq!(susage["completion_tokens"], usage["completion_tokens"]);
    assert_eq!(susage["total_tokens"], usage["total_tokens"]);
    let cached = susage["prompt_tokens_details"]["cached_tokens"]
        .as_u64()
        .expect("prompt_tokens_details.cached_tokens");
    assert_eq!(cached % 16, 0);

    // Without include_usage: no usage field, no usage chunk.
    sbody["stream_options"] = json!({"include_usage": false});
    let chunks = stream_chunks(&s.url("/v1/chat/completions"), &sbody);
    let (scontent, sfinish, _) = check_chat_stream(&chunks, false);
    assert_eq!(scontent, content);
    assert_eq!(sfinish, finish);
}

#[test]
fn chat_logprobs() {
    let s = shared();
    let mut body = chat_body("Hello there", 8);
    body["ignore_eos"] = json!(true);
    body["logprobs"] = json!(true);
    body["top_logprobs"] = json!(2);
    let v = post_ok(&s.url("/v1/chat/completions"), &body);
    check_chat_shape(&v);
    let content = v["choices"][0]["logprobs"]["content"].as_array().unwrap();
    assert_eq!(content.len(), 8);
    for e in content {
        let tok = e["token"].as_str().unwrap();
        let lp = e["logprob"].as_f64().unwrap();
        assert!(lp <= 0.0);
        let bytes: Vec<u8> = e["bytes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b.as_u64().unwrap() as u8)
            .collect();
        assert_eq!(bytes, tok.as_bytes());
        let top = e["top_logprobs"].as_array().unwrap();
        assert_eq!(top.len(), 2, "{e}");
        let l0 = top[0]["logprob"].as_f64().unwrap();
        let l1 = top[1]["logprob"].as_f64().unwrap();
        assert!(l0 >= l1);
        assert!(top
            .iter()
            .all(|t| t["token"].is_string() && t["bytes"].is_array()));
        // Greedy: the chosen token is the best one.
        assert_eq!(top[0]["token"], json!(tok));
        assert!((l0 - lp).abs() < 1e-6);
    }

    // logprobs without top_logprobs: empty alternatives.
    body["top_logprobs"] = Value::Null;
    let v = post_ok(&s.url("/v1/chat/completions"), &body);
    for e in v["choices"][0]["logprobs"]["content"].as_array().unwrap() {
        assert_eq!(e["top_logprobs"], json!([]));
    }

    // Streaming: every generated token's logprob arrives in some chunk.
    body["top_logprobs"] = json!(2);
    body["stream"] = json!(true);
    let chunks = stream_chunks(&s.url("/v1/chat/completions"), &body);
    let n: usize = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["logprobs"]["content"].as_array())
        .map(Vec::len)
        .sum();
    assert_eq!(n, 8);

    // top_logprobs without logprobs is refused.
    let mut bad = chat_body("Hello", 4);
    bad["top_logprobs"] = json!(2);
    let r = post(&s.url("/v1/chat/completions"), &bad);
    assert_error(&r, 400, Some("top_logprobs"));
}

// ---------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------

#[test]
fn error_malformed_json() {
    let s = shared();
    for path in ["/v1/completions", "/v1/chat/completions"] {
        let r = post_raw(&s.url(path), r#"{"model": "tiny", "prompt": "#, &[]).unwrap();
        assert_error(&r, 400, None);
        let r = post_raw(&s.url(path), "not json at all", &[]).unwrap();
        assert_error(&r, 400, None);
    }
}

#[test]
fn error_wrong_type_names_the_field() {
    let s = shared();
    let r = post_raw(
        &s.url("/v1/completions"),
        r#"{"model": "tiny", "prompt": "x", "temperature": "hot"}"#,
        &[],
    )
    .unwrap();
    let msg = assert_error(&r, 400, Some("temperature"));
    assert!(msg.contains("temperature"), "{msg}");
    let r = post_raw(
        &s.url("/v1/chat/completions"),
        r#"{"model": "tiny", "messages": [{"role": "user", "content": "x"}], "temperature": "hot"}"#,
        &[],
    )
    .unwrap();
    assert_error(&r, 400, Some("temperature"));
    let r = post_raw(
        &s.url("/v1/completions"),
        r#"{"model": "tiny", "prompt": "x", "max_tokens": "ten"}"#,
        &[],
    )
    .unwrap();
    assert_error(&r, 400, Some("max_tokens"));
    let r = post_raw(
        &s.url("/v1/chat/completions"),
        r#"{"model": "tiny", "messages": [{"role": "user", "content": "x"}], "stop": 7}"#,
        &[],
    )
    .unwrap();
    assert_error(&r, 400, Some("stop"));
    let r = post_raw(&s.url("/v1/completions"), r#"{"model": "tiny"}"#, &[]).unwrap();
    let msg = assert_error(&r, 400, None);
    assert!(msg.contains("prompt"), "{msg}");
}

#[test]
fn error_out_of_range() {
    let s = shared();
    let mut body = completion_body(json!("x"), 4);
    body["top_p"] = json!(2);
    let msg = assert_error(&post(&s.url("/v1/completions"), &body), 400, Some("top_p"));
    assert!(
        msg.contains("top_p") && msg.contains("<= 1") && msg.contains('2'),
        "{msg}"
    );
    let mut body = chat_body("x", 4);
    body["temperature"] = json!(3.5);
    let msg = assert_error(
        &post(&s.url("/v1/chat/completions"), &body),
        400,
        Some("temperature"),
    );
    assert!(
        msg.contains("between 0 and 2") && msg.contains("3.5"),
        "{msg}"
    );
    let mut body = completion_body(json!("x"), 4);
    body["n"] = json!(0);
    assert_error(&post(&s.url("/v1/completions"), &body), 400, Some("n"));
    let body = completion_body(json!([100000]), 4);
    let msg = assert_error(&post(&s.url("/v1/completions"), &body), 400, Some("prompt"));
    assert!(msg.contains("100000") && msg.contains("512"), "{msg}");
}

#[test]
fn error_unknown_model() {
    let s = shared();
    let mut body = completion_body(json!("x"), 4);
    body["model"] = json!("no-such-model");
    let msg = assert_error(&post(&s.url("/v1/completions"), &body), 404, Some("model"));
    assert!(msg.contains("no-such-model"), "{msg}");
    let mut body = chat_body("x", 4);
    body["model"] = json!("gpt-4o");
    assert_error(
        &post(&s.url("/v1/chat/completions"), &body),
        404,
        Some("model"),
    );
}

#[test]
fn error_context_too_long() {
    let s = shared();
    let prompt: Vec<u32> = (0..500).map(|i| 10 + (i % 400)).collect();
    let body = completion_body(json!(prompt), 100);
    let msg = assert_error(&post(&s.url("/v1/completions"), &body), 400, Some("prompt"));
    for n in ["512", "500", "100"] {
        assert!(msg.contains(n), "{msg} lacks {n}");
    }
    let long = "ab ".repeat(400);
    let body = chat_body(&long, 100);
    let msg = assert_error(
        &post(&s.url("/v1/chat/completions"), &body),
        400,
        Some("messages"),
    );
    assert!(msg.contains("512"), "{msg}");
    // Exactly at the limit is fine.
    let body = completion_body(json!(prompt[..496].to_vec()), 16);
    let v = post_ok(&s.url("/v1/completions"), &body);
    assert_eq!(v["usage"]["prompt_tokens"], 496);
}

#[test]
fn error_images_in_chat() {
    let s = shared();
    let body = json!({
        "model": NAME,
        "max_tokens": 4,
        "messages": [{"role": "user", "content": [
            {"type": "text", "text": "What is this?"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
        ]}],
    });
    let msg = assert_error(
        &post(&s.url("/v1/chat/completions"), &body),
        400,
        Some("messages"),
    );
    assert!(msg.contains("image_url"), "{msg}");
    // Text parts alone are fine.
    let body = json!({
        "model": NAME,
        "max_tokens": 2,
        "messages": [{"role": "user", "content": [{"type": "text", "text": "Hi"}]}],
    });
    post_ok(&s.url("/v1/chat/completions"), &body);
}

#[test]
fn error_response_format_json() {
    let s = shared();
    for rf in [
        json!({"type": "json_object"}),
        json!({"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}}),
    ] {
        let mut body = chat_body("Hello", 4);
        body["response_format"] = rf;
        let msg = assert_error(
            &post(&s.url("/v1/chat/completions"), &body),
            400,
            Some("response_format"),
        );
        assert!(msg.contains("response_format"), "{msg}");
    }
    let mut body = chat_body("Hello", 2);
    body["response_format"] = json!({"type": "text"});
    post_ok(&s.url("/v1/chat/completions"), &body);
}

#[test]
fn queue_full_is_429_with_retry_after() {
    let s = start(&["--max-num-seqs", "1", "--max-waiting-requests", "1"]);
    let n = 8;
    let barrier = Arc::new(Barrier::new(n));
    let url = s.url("/v1/completions");
    let handles: Vec<_> = (0..n)
        .map(|_| {
            let b = barrier.clone();
            let url = url.clone();
            std::thread::spawn(move || {
                let body = json!({
                    "model": NAME, "prompt": "The quick brown fox", "max_tokens": 480,
                    "ignore_eos": true, "temperature": 0,
                });
                b.wait();
                post_raw(&url, &body.to_string(), &[]).expect("request")
            })
        })
        .collect();
    let resps: Vec<Resp> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let ok = resps.iter().filter(|r| r.status == 200).count();
    let limited: Vec<&Resp> = resps.iter().filter(|r| r.status == 429).collect();
    assert_eq!(
        ok + limited.len(),
        n,
        "statuses: {:?}",
        resps.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    assert!(ok >= 1, "no request was served");
    assert!(!limited.is_empty(), "no request was refused with 429");
    for r in limited {
        assert_error(r, 429, None);
        let ra: u64 = r
            .header("retry-after")
            .expect("Retry-After on 429")
            .parse()
            .expect("Retry-After in seconds");
        assert!(ra >= 1);
    }
    for r in resps.iter().filter(|r| r.status == 200) {
        assert_eq!(r.json()["usage"]["completion_tokens"], 480);
    }
    let m = wait_idle(&s, Duration::from_secs(10));
    assert!(
        metric(
            &m,
            "lantern_requests_total",
            &[("endpoint", "/v1/completions"), ("status", "429")]
        )
        .unwrap()
            >= 1.0
    );
}

#[test]
fn api_key_is_required_on_v1() {
    let s = start(&["--api-key", "sekrit-KEY"]);
    let models = s.url("/v1/models");
    assert_error(&get(&models).unwrap(), 401, None);
    assert_error(
        &get_with(&models, &[("Authorization", "Bearer wrong")]).unwrap(),
        401,
        None,
    );
    assert_error(
        &get_with(&models, &[("Authorization", "sekrit-KEY")]).unwrap(),
        401,
        None,
    );
    assert_error(
        &get_with(&models, &[("Authorization", "Bearer sekrit-KEY-and-more")]).unwrap(),
        401,
        None,
    );
    let r = get_with(&models, &[("Authorization", "Bearer sekrit-KEY")]).unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["data"][0]["id"], NAME);
    // POST endpoints too.
    let body = completion_body(json!("Hi"), 2).to_string();
    let url = s.url("/v1/completions");
    assert_error(&post_raw(&url, &body, &[]).unwrap(), 401, None);
    let r = post_raw(&url, &body, &[("Authorization", "Bearer sekrit-KEY")]).unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    // Operational endpoints stay open.
    assert_eq!(get(&s.url("/health")).unwrap().status, 200);
    assert_eq!(get(&s.url("/metrics")).unwrap().status, 200);
}

#[test]
fn body_over_the_limit_is_413() {
    let s = start(&["--max-request-body-bytes", "1000"]);
    let big = json!({"model": NAME, "prompt": "x".repeat(2000), "max_tokens": 2}).to_string();
    for path in ["/v1/completions", "/v1/chat/completions"] {
        let r = post_raw(&s.url(path), &big, &[]).unwrap();
        assert_error(&r, 413, None);
    }
    // Small bodies still work.
    post_ok(&s.url("/v1/completions"), &completion_body(json!("Hi"), 2));
}

// ---------------------------------------------------------------------------------------
// Disconnects, concurrency, shutdown
// ---------------------------------------------------------------------------------------

#[test]
fn disconnect_mid_stream_aborts_the_request() {
    let s = start(&[]);
    let before = scrape(&s);
    let aborted0 = metric(
        &before,
        "lantern_request_finished_total",
        &[("finished_reason", "abort")],
    )
    .unwrap();
    let body = json!({
        "model": NAME, "prompt": text_prompt(), "max_tokens": 500, "ignore_eos": true,
        "temperature": 0, "stream": true,
    });
    let mut sse = stream(&s.url("/v1/completions"), &body);
    for _ in 0..4 {
        let d = sse.next_data().expect("a chunk");
        assert_ne!(d, "[DONE]");
    }
    drop(sse);
    let m = wait_idle(&s, Duration::from_secs(5));
    let aborted = metric(
        &m,
        "lantern_request_finished_total",
        &[("finished_reason", "abort")],
    )
    .unwrap();
    assert!(aborted > aborted0, "abort counter {aborted0} -> {aborted}");
    let generated = metric(&m, "lantern_generation_tokens_total", &[]).unwrap();
    assert!(
        generated < 500.0,
        "the request ran to completion ({generated} tokens)"
    );
    // The server is still fine.
    post_ok(&s.url("/v1/completions"), &completion_body(json!("Hi"), 2));
}

#[test]
fn sixty_four_concurrent_requests() {
    let s = start(&[]);
    // Reference outputs from single requests.
    let greedy_ids = text_greedy();
    let chat_ref = post_ok(&s.url("/v1/chat/completions"), &chat_body("Hi there", 12));
    let chat_ref = chat_ref["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_string();
    let n = 64;
    let barrier = Arc::new(Barrier::new(n));
    let base = s.base.clone();
    let handles: Vec<_> = (0..n)
        .map(|i| {
            let b = barrier.clone();
            let base = base.clone();
            let greedy_ids = greedy_ids.clone();
            let chat_ref = chat_ref.clone();
            std::thread::Builder::new()
                .stack_size(1 << 20)
                .spawn(move || {
                    b.wait();
                    let chat_url = format!("{base}/v1/chat/completions");
                    let cmpl_url = format!("{base}/v1/completions");
                    match i % 4 {
                        0 => {
                            let v = post_ok(&chat_url, &chat_body("Hi there", 12));
                            check_chat_shape(&v);
                            assert_eq!(v["choices"][0]["message"]["content"], json!(chat_ref));
                        }
                        1 => {
                            let mut body = chat_body(&format!("Request number {i}"), 10);
                            body["stream"] = json!(true);
                            body["stream_options"] = json!({"include_usage": true});
                            let chunks = stream_chunks(&chat_url, &body);
                            let (_, _, usage) = check_chat_stream(&chunks, true);
                            let usage = usage.unwrap();
                            assert!(usage["completion_tokens"].as_u64().unwrap() <= 10);
                        }
                        2 => {
                            let mut body = completion_body(json!(text_prompt_ids()), 16);
                            body["logprobs"] = json!(0);
                            body["return_tokens_as_token_ids"] = json!(true);
                            let v = post_ok(&cmpl_url, &body);
                            check_completion_shape(&v);
                            assert_eq!(completion_token_ids(&v["choices"][0]), greedy_ids);
                        }
                        _ => {
                            let body = json!({
                                "model": NAME, "prompt": format!("Story {i}:"), "max_tokens": 12,
                                "ignore_eos": true, "temperature": 0.8, "seed": i,
                                "stream": true,
                            });
                            let chunks = stream_chunks(&cmpl_url, &body);
                            let (texts, finishes, _) = check_completion_stream(&chunks);
                            assert_eq!(texts.len(), 1);
                            assert_eq!(finishes, vec!["length".to_string()]);
                        }
                    }
                })
                .unwrap()
        })
        .collect();
    let mut failures = Vec::new();
    for (i, h) in handles.into_iter().enumerate() {
        if let Err(e) = h.join() {
            let msg = e
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            failures.push(format!("request {i}: {msg}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    let m = wait_idle(&s, Duration::from_secs(5));
    assert_eq!(
        metric(
            &m,
            "lantern_requests_total",
            &[("endpoint", "/v1/completions"), ("status", "200")]
        ),
        Some(32.0)
    );
}

#[test]
fn graceful_shutdown_finishes_in_flight_streams() {
    let mut s = start(&["--shutdown-timeout", "10"]);
    let body = json!({
        "model": NAME, "prompt": text_prompt(), "max_tokens": 500, "ignore_eos": true,
        "temperature": 0, "stream": true, "stream_options": {"include_usage": true},
    });
    let mut sse = stream(&s.url("/v1/completions"), &body);
    let mut chunks = Vec::new();
    for _ in 0..3 {
        chunks.push(sse.next_data().expect("a chunk"));
    }
    let t_term = Instant::now();
    assert_eq!(unsafe { libc::kill(s.pid(), libc::SIGTERM) }, 0);

    // New requests are refused (connection refused) or answered 503.
    let mut refused = false;
    while t_term.elapsed() < Duration::from_secs(5) {
        match get(&s.url("/health")) {
            Err(_) => {
                refused = true;
                break;
            }
            Ok(r) if r.status == 503 => {
                refused = true;
                break;
            }
            Ok(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
    assert!(refused, "the server kept accepting requests after SIGTERM");
    match post_raw(
        &s.url("/v1/completions"),
        &completion_body(json!("Hi"), 2).to_string(),
        &[],
    ) {
        Err(_) => {}
        Ok(r) => {
            assert_error(&r, 503, None);
        }
    }

    // The in-flight stream runs to completion.
    loop {
        let d = sse
            .next_data()
            .unwrap_or_else(|| panic!("stream cut before [DONE]; server log:\n{}", s.log_tail()));
        if d == "[DONE]" {
            break;
        }
        chunks.push(d);
    }
    assert!(t_term.elapsed() < Duration::from_secs(10));
    let parsed: Vec<Value> = chunks
        .iter()
        .map(|c| serde_json::from_str(c).unwrap())
        .collect();
    let (_, finishes, usage) = check_completion_stream(&parsed);
    assert_eq!(finishes, vec!["length".to_string()]);
    assert_eq!(usage.unwrap()["completion_tokens"], 500);
    drop(sse);

    // The process exits 0.
    let t0 = Instant::now();
    let status = loop {
        if let Some(st) = s.child.try_wait().unwrap() {
            break st;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(15),
            "server still running after shutdown:\n{}",
            s.log_tail()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "exit status {status}:\n{}", s.log_tail());
    // The request really was in flight when the shutdown began.
    let log = std::fs::read_to_string(&s.log).unwrap();
    let began = log.find("shutting down").expect("shutdown logged");
    let finished = log.find("request finished").expect("request logged");
    assert!(
        began < finished,
        "the stream finished before SIGTERM:\n{log}"
    );
}

// ---------------------------------------------------------------------------------------
// Multi-LoRA (issue 6): adapters from tests/fixtures/tiny-llama/lora-{a,b}, references from
// transformers + peft (generate.py)
// ---------------------------------------------------------------------------------------

fn adapter_dir(name: &str) -> PathBuf {
    model_dir().join(name)
}

fn adapter_ref(name: &str) -> Value {
    let p = adapter_dir(name).join("reference.json");
    let s = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    serde_json::from_str(&s).unwrap()
}

/// Prompt `i` of an adapter's reference and its 33 greedy tokens.
fn adapter_case(name: &str, i: usize) -> (Vec<u32>, Vec<u32>) {
    let r = adapter_ref(name);
    (ids(&r["prompts"][i]), ids(&r["greedy"][i]))
}

/// Greedy token ids of one completion of `prompt` through `model`.
fn greedy_ids(s: &Server, model: &str, prompt: &[u32], max_tokens: usize) -> Vec<u32> {
    let mut body = completion_body(json!(prompt), max_tokens);
    body["model"] = json!(model);
    body["ignore_eos"] = json!(true);
    body["logprobs"] = json!(0);
    body["return_tokens_as_token_ids"] = json!(true);
    let v = post_ok(&s.url("/v1/completions"), &body);
    completion_token_ids(&v["choices"][0])
}

fn lora_flag(name: &str, dir: &str) -> String {
    format!("{name}={}", adapter_dir(dir).display())
}

#[test]
fn lora_adapters_match_peft_alone_and_mixed_in_one_batch() {
    let a = lora_flag("ada", "lora-a");
    let b = lora_flag("bob", "lora-b");
    let s = start(&[
        "--lora",
        &a,
        "--lora-modules",
        &b,
        "--max-loras",
        "2",
        "--max-lora-rank",
        "8",
    ]);
    // /v1/models lists both adapters with the base model as parent.
    let models = get(&s.url("/v1/models")).unwrap().json();
    let data = models["data"].as_array().unwrap();
    let ids_listed: Vec<&str> = data.iter().map(|m| m["id"].as_str().unwrap()).collect();
    assert_eq!(ids_listed, vec![NAME, "ada", "bob"], "{models}");
    assert_eq!(data[0]["parent"], Value::Null);
    for m in &data[1..] {
        assert_eq!(m["parent"], NAME, "{m}");
        assert_eq!(m["object"], "model");
    }
    // Alone: each adapter equals peft's greedy continuation token for token.
    for (model, dir) in [("ada", "lora-a"), ("bob", "lora-b")] {
        for i in 0..2 {
            let (prompt, want) = adapter_case(dir, i);
            assert_eq!(
                greedy_ids(&s, model, &prompt, want.len()),
                want,
                "{model} prompt {i}"
            );
        }
    }
    // Mixed: base + adapter a + adapter b concurrently, several prompts each; every
    // request must still equal its own reference.
    let barrier = Arc::new(Barrier::new(9));
    let s = Arc::new(s);
    let handles: Vec<_> = (0..9)
        .map(|k| {
            let s = s.clone();
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                let i = k / 3;
                let (model, prompt, want) = match k % 3 {
                    0 => (NAME, ref_prompt(i), ref_greedy(i)),
                    1 => {
                        let (p, w) = adapter_case("lora-a", i);
                        ("ada", p, w)
                    }
                    _ => {
                        let (p, w) = adapter_case("lora-b", i);
                        ("bob", p, w)
                    }
                };
                barrier.wait();
                let got = greedy_ids(&s, model, &prompt, want.len());
                assert_eq!(got, want, "{model} prompt {i} in a mixed batch");
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let m = wait_idle(&s, Duration::from_secs(30));
    assert!(metric(&m, "lantern_lora_slot_loads_total", &[]).unwrap() >= 2.0);
}

#[test]
fn lora_one_slot_three_adapters_interleaved_all_match() {
    // One device slot, one adapter in host memory, three adapters (the third is lora-a
    // again under another name): every switch swaps the slot and most re-read from disk.
    let a = lora_flag("a1", "lora-a");
    let b = lora_flag("b", "lora-b");
    let c = lora_flag("a2", "lora-a");
    let s = Arc::new(start(&[
        "--lora",
        &a,
        "--lora",
        &b,
        "--lora",
        &c,
        "--max-loras",
        "1",
        "--max-cpu-loras",
        "1",
        "--max-lora-rank",
        "8",
    ]));
    let barrier = Arc::new(Barrier::new(10));
    let handles: Vec<_> = (0..10)
        .map(|k| {
            let s = s.clone();
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                let i = k % 2;
                let (model, dir) = match k % 4 {
                    0 => ("a1", "lora-a"),
                    1 => ("b", "lora-b"),
                    2 => ("a2", "lora-a"),
                    _ => (NAME, ""),
                };
                let (prompt, want) = if dir.is_empty() {
                    (ref_prompt(i), ref_greedy(i))
                } else {
                    adapter_case(dir, i)
                };
                barrier.wait();
                let got = greedy_ids(&s, model, &prompt, 16);
                assert_eq!(got, want[..16].to_vec(), "{model} prompt {i} (request {k})");
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let m = wait_idle(&s, Duration::from_secs(30));
    let slot_loads = metric(&m, "lantern_lora_slot_loads_total", &[]).unwrap();
    let disk_loads = metric(&m, "lantern_lora_disk_loads_total", &[]).unwrap();
    assert!(slot_loads >= 3.0, "slot loads {slot_loads}");
    // 3 at startup, then re-reads because only one adapter fits in host memory.
    assert!(disk_loads >= 5.0, "disk loads {disk_loads}");
    assert_eq!(metric(&m, "lantern_loras_in_host_memory", &[]), Some(1.0));
}

#[test]
fn lora_load_and_unload_over_http() {
    let s = start(&["--enable-lora", "--max-lora-rank", "8", "--max-loras", "2"]);
    let load = |name: &str, path: &str| {
        post(
            &s.url("/v1/load_lora_adapter"),
            &json!({"lora_name": name, "lora_path": path}),
        )
    };
    let unload = |name: &str| {
        post(
            &s.url("/v1/unload_lora_adapter"),
            &json!({ "lora_name": name }),
        )
    };
    let (prompt, want) = adapter_case("lora-a", 0);
    // Unknown adapter: 404 like an unknown model.
    let mut body = completion_body(json!(prompt), 4);
    body["model"] = json!("ada");
    let r = post(&s.url("/v1/completions"), &body);
    assert_eq!(r.status, 404, "{}", r.body);
    assert_eq!(
        r.json()["error"]["message"],
        "The model `ada` does not exist."
    );

    let path_a = adapter_dir("lora-a").display().to_string();
    let r = load("ada", &path_a);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body, "Success: LoRA adapter 'ada' added successfully.");
    let r = load("ada", &path_a);
    assert_eq!(r.status, 400);
    assert_eq!(
        r.json()["error"]["message"],
        "The lora adapter 'ada' has already been loaded."
    );
    let models = get(&s.url("/v1/models")).unwrap().json();
    let ada = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == "ada")
        .cloned()
        .unwrap_or_else(|| panic!("ada not listed: {models}"));
    assert_eq!(ada["parent"], NAME);
    assert_eq!(ada["root"], json!(path_a));
    assert_eq!(greedy_ids(&s, "ada", &prompt, want.len()), want);

    // Refused adapters name the problem.
    let r = load("x", "/nonexistent/adapter/dir");
    assert_eq!(r.status, 400, "{}", r.body);
    let r = load(
        "dora",
        &adapter_dir("lora-unsupported-dora").display().to_string(),
    );
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(
        r.body.contains("DoRA") || r.body.contains("use_dora"),
        "{}",
        r.body
    );
    let r = load(
        "mts",
        &adapter_dir("lora-modules-to-save").display().to_string(),
    );
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("modules_to_save"), "{}", r.body);
    let r = load("big", &adapter_dir("lora-b").display().to_string());
    assert_eq!(r.status, 200, "rank 8 fits --max-lora-rank 8: {}", r.body);
    let r = post(&s.url("/v1/load_lora_adapter"), &json!({"lora_name": "y"}));
    assert_eq!(r.status, 400);
    assert_eq!(
        r.json()["error"]["message"],
        "Both 'lora_name' and 'lora_path' must be provided."
    );
    let r = load(NAME, &path_a);
    assert_eq!(r.status, 400, "the base model's name: {}", r.body);

    // Unload while a request is in flight: it finishes; new requests get 404.
    let mut long = completion_body(json!(prompt), 200);
    long["model"] = json!("ada");
    long["ignore_eos"] = json!(true);
    long["stream"] = json!(true);
    let mut sse = stream(&s.url("/v1/completions"), &long);
    let first = sse.next_data().expect("a first chunk");
    assert!(first.contains("\"choices\""), "{first}");
    let r = unload("ada");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body, "Success: LoRA adapter 'ada' removed successfully.");
    let r = post(&s.url("/v1/completions"), &body);
    assert_eq!(r.status, 404, "{}", r.body);
    let mut finish = None;
    while let Some(d) = sse.next_data() {
        if d == "[DONE]" {
            break;
        }
        let v: Value = serde_json::from_str(&d).unwrap();
        if let Some(f) = v["choices"][0]["finish_reason"].as_str() {
            finish = Some(f.to_string());
        }
    }
    assert_eq!(
        finish.as_deref(),
        Some("length"),
        "the in-flight request finished"
    );
    let r = unload("ada");
    assert_eq!(r.status, 404);
    assert_eq!(
        r.json()["error"]["message"],
        "The lora adapter 'ada' cannot be found."
    );
    let models = get(&s.url("/v1/models")).unwrap().json();
    assert!(!models.to_string().contains("\"ada\""), "{models}");
    // Loading the same name again works and serves the same weights.
    assert_eq!(load("ada", &path_a).status, 200);
    assert_eq!(greedy_ids(&s, "ada", &prompt, want.len()), want);
    wait_idle(&s, Duration::from_secs(30));
}

#[test]
fn lora_prefix_cache_is_isolated_between_adapters() {
    let a = lora_flag("ada", "lora-a");
    let b = lora_flag("bob", "lora-b");
    let s = start(&[
        "--lora",
        &a,
        "--lora",
        &b,
        "--max-loras",
        "2",
        "--max-lora-rank",
        "8",
    ]);
    // A 131-token prompt (8 full blocks) sent to base, ada, bob, then again to each.
    let prompt = ref_prompt(3);
    let run = |model: &str| {
        let mut body = completion_body(json!(prompt), 8);
        body["model"] = json!(model);
        body["ignore_eos"] = json!(true);
        post_ok(&s.url("/v1/completions"), &body)
    };
    let cached = |v: &Value| {
        v["usage"]["prompt_tokens_details"]["cached_tokens"]
            .as_u64()
            .unwrap_or(0)
    };
    let base1 = run(NAME);
    let ada1 = run("ada");
    let bob1 = run("bob");
    assert_eq!(cached(&ada1), 0, "ada must not hit the base model's blocks");
    assert_eq!(
        cached(&bob1),
        0,
        "bob must not hit ada's or the base model's blocks"
    );
    let texts: BTreeSet<String> = [&base1, &ada1, &bob1]
        .iter()
        .map(|v| v["choices"][0]["text"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        texts.len(),
        3,
        "three models, three different continuations"
    );
    for (model, first) in [(NAME, &base1), ("ada", &ada1), ("bob", &bob1)] {
        let again = run(model);
        assert!(
            cached(&again) >= 128,
            "{model} hits its own blocks: {}",
            again["usage"]
        );
        assert_eq!(
            again["choices"][0]["text"], first["choices"][0]["text"],
            "{model}"
        );
    }
}

#[test]
fn lora_endpoints_explain_that_lora_is_disabled() {
    let s = shared();
    let r = post(
        &s.url("/v1/load_lora_adapter"),
        &json!({"lora_name": "a", "lora_path": adapter_dir("lora-a")}),
    );
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("--enable-lora"), "{}", r.body);
}
