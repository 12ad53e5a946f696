//! The harness: fixtures (the tiny-llama model and its transformers references), server
//! processes, HTTP and SSE helpers, and Prometheus scraping.

use lantern_bench::{SseEvent, SseParser};
use prometheus_parse::{LineInfo, Scrape, Value as PromValue};
use serde_json::Value;
use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::io::Read;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub const NAME: &str = "tiny";
pub const HEALTH_TIMEOUT: Duration = Duration::from_secs(60);
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------------------

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn model_dir() -> PathBuf {
    repo().join("tests/fixtures/tiny-llama")
}

pub fn reference() -> &'static Value {
    static R: OnceLock<Value> = OnceLock::new();
    R.get_or_init(|| {
        let p = model_dir().join("reference.json");
        let s = std::fs::read_to_string(&p)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", p.display()));
        serde_json::from_str(&s).expect("reference.json is JSON")
    })
}

pub fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .expect("an array of token ids")
        .iter()
        .map(|x| x.as_u64().expect("a token id") as u32)
        .collect()
}

pub fn text_prompt() -> &'static str {
    reference()["text_prompt"].as_str().unwrap()
}

pub fn text_prompt_ids() -> Vec<u32> {
    ids(&reference()["text_prompt_ids"])
}

pub fn text_greedy() -> Vec<u32> {
    ids(&reference()["text_greedy"])
}

pub fn ref_prompt(i: usize) -> Vec<u32> {
    ids(&reference()["prompts"][i])
}

pub fn ref_greedy(i: usize) -> Vec<u32> {
    ids(&reference()["greedy"][i])
}

// ---------------------------------------------------------------------------------------
// Server processes
// ---------------------------------------------------------------------------------------

pub struct Server {
    pub child: Child,
    pub base: String,
    pub log: PathBuf,
}

impl Server {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn log_tail(&self) -> String {
        log_tail(&self.log)
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn log_tail(p: &PathBuf) -> String {
    let s = std::fs::read_to_string(p).unwrap_or_default();
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    l.local_addr().expect("local addr").port()
}

/// Starts `lantern serve` on the tiny model with `extra` flags and waits for `/health`.
pub fn try_start(extra: &[&str]) -> Result<Server, String> {
    let dir = model_dir();
    try_start_model(&["--model", dir.to_str().unwrap_or_default()], extra)
}

/// Like [`try_start`], naming the model with `model_args` (e.g. positionally, as
/// `vllm serve MODEL`).
pub fn try_start_model(model_args: &[&str], extra: &[&str]) -> Result<Server, String> {
    let mut last_err = String::new();
    for attempt in 0..5 {
        let port = free_port();
        let log = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("lantern-serve-{}-{port}.log", std::process::id()));
        let out = File::create(&log).map_err(|e| format!("creating {}: {e}", log.display()))?;
        let err = out.try_clone().map_err(|e| e.to_string())?;
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_lantern"));
        cmd.arg("serve")
            .args(model_args)
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

pub fn start(extra: &[&str]) -> Server {
    try_start(extra).unwrap_or_else(|e| panic!("{e}"))
}

/// The server shared by all tests that need no special flags. It is started from a thread
/// that never exits, so `PR_SET_PDEATHSIG` fires only when the test process ends.
pub fn shared() -> &'static Server {
    static S: OnceLock<Server> = OnceLock::new();
    S.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            // The tiny model's references are transformers' f32 logits, compared to ~1e-4:
            // an f32 cache (`auto` on the CPU keeps f16 K/V; its accuracy is checked against
            // SmolLM2's references in tests/smollm2.rs).
            let _ = tx.send(try_start(&["--kv-cache-dtype", "float32"]));
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

pub fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new()
        .timeout_connect(Duration::from_secs(5))
        .timeout(REQUEST_TIMEOUT)
        .build()
}

#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: HashMap<String, String>,
    pub body: String,
}

impl Resp {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| {
            panic!(
                "status {} body is not JSON ({e}): {}",
                self.status, self.body
            )
        })
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }
}

pub fn into_resp(r: Result<ureq::Response, ureq::Error>) -> Result<Resp, String> {
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

pub fn get(url: &str) -> Result<Resp, String> {
    into_resp(agent().get(url).call())
}

pub fn get_with(url: &str, headers: &[(&str, &str)]) -> Result<Resp, String> {
    let mut req = agent().get(url);
    for (k, v) in headers {
        req = req.set(k, v);
    }
    into_resp(req.call())
}

pub fn post_raw(url: &str, body: &str, headers: &[(&str, &str)]) -> Result<Resp, String> {
    let mut req = agent().post(url).set("Content-Type", "application/json");
    for (k, v) in headers {
        req = req.set(k, v);
    }
    into_resp(req.send_string(body))
}

pub fn post(url: &str, body: &Value) -> Resp {
    post_raw(url, &body.to_string(), &[]).unwrap_or_else(|e| panic!("POST {url}: {e}"))
}

/// POSTs and expects 200 with a JSON body.
pub fn post_ok(url: &str, body: &Value) -> Value {
    let r = post(url, body);
    assert_eq!(r.status, 200, "POST {url} {body}: {}", r.body);
    r.json()
}

/// A server-sent-events reader over a streaming response (`lantern_bench`'s parser).
pub struct Sse {
    reader: Box<dyn Read + Send + Sync + 'static>,
    parser: SseParser,
    ready: VecDeque<SseEvent>,
    eof: bool,
}

impl Sse {
    /// The data of the next event (multi-line data joined by `\n`; `[DONE]` as is); None
    /// at end of stream.
    pub fn next_data(&mut self) -> Option<String> {
        loop {
            match self.ready.pop_front() {
                Some(SseEvent::Data { data, .. }) => return Some(data),
                Some(SseEvent::Done) => return Some("[DONE]".to_string()),
                None => {}
            }
            if self.eof {
                return None;
            }
            let mut buf = [0u8; 4096];
            let n = self.reader.read(&mut buf).expect("reading the SSE stream");
            if n == 0 {
                self.eof = true;
                self.ready.extend(self.parser.finish());
            } else {
                self.ready.extend(self.parser.feed(&buf[..n]));
            }
        }
    }
}

pub fn stream(url: &str, body: &Value) -> Sse {
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
        reader: resp.into_reader(),
        parser: SseParser::new(),
        ready: VecDeque::new(),
        eof: false,
    }
}

/// Reads a whole stream: the JSON chunks before `[DONE]`; asserts `[DONE]` ends it.
pub fn stream_chunks(url: &str, body: &Value) -> Vec<Value> {
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
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

/// Stands for `:` in metric names while `prometheus-parse` reads them: its name pattern is
/// `\w+`, so it cannot read vLLM's `vllm:` names (colons are legal in Prometheus names).
const COLON: &str = "__COLON__";

/// Whether `name` is a legal Prometheus metric name (`[a-zA-Z_:][a-zA-Z0-9_:]*`).
fn legal_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// `line` with the colons of its metric name (HELP, TYPE or sample) replaced by [`COLON`];
/// panics on an illegal name.
fn escape_name(line: &str) -> String {
    let (head, rest) = match ["# HELP ", "# TYPE "]
        .iter()
        .find(|p| line.starts_with(**p))
    {
        Some(p) => (*p, &line[p.len()..]),
        None if line.starts_with('#') || line.trim().is_empty() => return line.to_string(),
        None => ("", line),
    };
    let end = rest.find(['{', ' ']).unwrap_or(rest.len());
    let name = &rest[..end];
    assert!(legal_name(name), "illegal metric name {name:?} in {line:?}");
    format!("{head}{}{}", name.replace(':', COLON), &rest[end..])
}

/// Parses Prometheus text exposition (`prometheus-parse`, metric names escaped around it,
/// see [`COLON`]); panics on any line that is not a HELP, TYPE or sample line, or whose
/// value is not a float. Histograms come back as their `_bucket` samples (with `le`),
/// `_sum` and `_count`, in order.
pub fn parse_prometheus(text: &str) -> Vec<Sample> {
    let escaped: Vec<String> = text.lines().map(escape_name).collect();
    for line in &escaped {
        match LineInfo::parse(line) {
            LineInfo::Ignored => panic!("malformed metrics line: {line:?}"),
            LineInfo::Sample { value, .. } => {
                value
                    .parse::<f64>()
                    .unwrap_or_else(|_| panic!("metrics value is not a float: {line:?}"));
            }
            _ => {}
        }
    }
    let scrape = Scrape::parse(escaped.into_iter().map(Ok)).expect("metrics text");
    let mut out = Vec::new();
    for mut smp in scrape.samples {
        smp.metric = smp.metric.replace(COLON, ":");
        let labels: Vec<(String, String)> = smp
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        match smp.value {
            PromValue::Histogram(buckets) => {
                for b in buckets {
                    let mut labels = labels.clone();
                    let le = if b.less_than == f64::INFINITY {
                        "+Inf".to_string()
                    } else {
                        b.less_than.to_string()
                    };
                    labels.push(("le".to_string(), le));
                    out.push(Sample {
                        name: format!("{}_bucket", smp.metric),
                        labels,
                        value: b.count,
                    });
                }
            }
            PromValue::Counter(v) | PromValue::Gauge(v) | PromValue::Untyped(v) => {
                out.push(Sample {
                    name: smp.metric,
                    labels,
                    value: v,
                })
            }
            PromValue::Summary(_) => panic!("unexpected summary {}", smp.metric),
        }
    }
    out
}

pub fn scrape(server: &Server) -> Vec<Sample> {
    let r = get(&server.url("/metrics")).expect("GET /metrics");
    assert_eq!(r.status, 200);
    parse_prometheus(&r.body)
}

/// The value of `name` whose labels include all of `want`.
pub fn metric(samples: &[Sample], name: &str, want: &[(&str, &str)]) -> Option<f64> {
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

/// Polls `/metrics` until no request runs or waits (held-back ones included) and no KV
/// block is in use.
pub fn wait_idle(server: &Server, within: Duration) -> Vec<Sample> {
    let t0 = Instant::now();
    loop {
        let m = scrape(server);
        let running = metric(&m, "lantern_num_requests_running", &[]).unwrap();
        // vLLM's count also has the sequences not in the scheduler yet.
        let waiting = metric(&m, "vllm:num_requests_waiting", &[]).unwrap();
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
