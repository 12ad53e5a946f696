//! A scripted engine: no model. Each `submit` takes the next scripted answer (events, or a
//! refusal); without a script every choice generates the text " ok" (token 9) and finishes
//! with `length`. The tokenizer is the tiny fixture model's (vocabulary 512).

use futures_util::stream::{self, StreamExt};
use lantern_engine::{
    EngineSnapshot, FinishReason, GenerationParams, LoraError, LoraId, LoraInfo, RequestEvent,
    RequestTiming, StopReason, SubmitError, TokenDelta, TokenLogprob, Usage, ValidParams,
};
use lantern_server::generate::{EventStream, Generate};
use std::collections::VecDeque;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokenizers::Tokenizer;

pub const VOCAB: usize = 512;
pub const MAX_MODEL_LEN: usize = 512;

/// What one `submit` answers.
pub type Answer = Result<Vec<RequestEvent>, SubmitError>;

#[derive(Debug)]
struct Inner {
    tokenizer: Tokenizer,
    script: Mutex<VecDeque<Answer>>,
    submitted: Mutex<Vec<(Vec<u32>, GenerationParams)>>,
    loras: Mutex<Vec<LoraInfo>>,
    snapshot: Mutex<EngineSnapshot>,
    /// Holds the next `tokenizer()` call until opened ([`FakeEngine::hold_tokenizer`]).
    hold: Mutex<Option<Arc<Gate>>>,
}

/// A gate the next tokenizer use waits at (up to 10 s).
#[derive(Debug, Default)]
pub struct Gate {
    entered: std::sync::atomic::AtomicBool,
    timed_out: std::sync::atomic::AtomicBool,
    open: Mutex<bool>,
    cv: std::sync::Condvar,
}

impl Gate {
    pub fn entered(&self) -> bool {
        self.entered.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Whether the waiter gave up (nobody opened the gate in 10 s).
    pub fn timed_out(&self) -> bool {
        self.timed_out.load(std::sync::atomic::Ordering::SeqCst)
    }

    pub fn open(&self) {
        *self.open.lock().unwrap() = true;
        self.cv.notify_all();
    }

    fn wait(&self) {
        self.entered
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let open = self.open.lock().unwrap();
        let (_open, t) = self
            .cv
            .wait_timeout_while(open, Duration::from_secs(10), |o| !*o)
            .unwrap();
        if t.timed_out() {
            self.timed_out
                .store(true, std::sync::atomic::Ordering::SeqCst);
        }
    }
}

#[derive(Debug, Clone)]
pub struct FakeEngine(Arc<Inner>);

impl FakeEngine {
    pub fn new() -> Self {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../tests/fixtures/tiny-llama/tokenizer.json"
        );
        let tokenizer = Tokenizer::from_file(path).expect("the tiny fixture's tokenizer");
        Self(Arc::new(Inner {
            tokenizer,
            script: Mutex::new(VecDeque::new()),
            submitted: Mutex::new(Vec::new()),
            loras: Mutex::new(Vec::new()),
            snapshot: Mutex::new(EngineSnapshot::default()),
            hold: Mutex::new(None),
        }))
    }

    /// Queues the answer to the next `submit`.
    pub fn then(&self, answer: Answer) -> &Self {
        self.0.script.lock().unwrap().push_back(answer);
        self
    }

    /// The prompts and parameters submitted so far.
    pub fn submitted(&self) -> Vec<(Vec<u32>, GenerationParams)> {
        self.0.submitted.lock().unwrap().clone()
    }

    /// The next use of the tokenizer blocks its thread until the returned gate opens.
    pub fn hold_tokenizer(&self) -> Arc<Gate> {
        let g = Arc::new(Gate::default());
        *self.0.hold.lock().unwrap() = Some(g.clone());
        g
    }

    pub fn set_snapshot(&self, s: EngineSnapshot) {
        *self.0.snapshot.lock().unwrap() = s;
    }
}

/// A delta of choice `index`: `text` for token `id`, with `logprob` (and top alternatives)
/// when `logprobs` were asked for.
pub fn delta(index: usize, id: u32, text: &str, logprobs: Option<Vec<(u32, f32)>>) -> RequestEvent {
    RequestEvent::Delta(TokenDelta {
        index,
        text: text.to_string(),
        token_ids: vec![id],
        logprobs: logprobs
            .map(|top| {
                vec![TokenLogprob {
                    token_id: id,
                    logprob: top.first().map(|t| t.1).unwrap_or(-0.5),
                    top,
                }]
            })
            .unwrap_or_default(),
        time: Instant::now(),
    })
}

/// The end of choice `index`.
pub fn finished(
    index: usize,
    reason: FinishReason,
    stop_reason: Option<StopReason>,
    text: &str,
    usage: (usize, usize, usize),
) -> RequestEvent {
    let arrival = Instant::now();
    RequestEvent::Finished {
        index,
        reason,
        stop_reason,
        text: text.to_string(),
        usage: Usage {
            prompt_tokens: usage.0,
            completion_tokens: usage.1,
            cached_tokens: usage.2,
        },
        timing: RequestTiming {
            arrival,
            first_scheduled: Some(arrival + Duration::from_millis(1)),
            first_token: Some(arrival + Duration::from_millis(3)),
            last_token: Some(arrival + Duration::from_millis(9)),
            finished: arrival + Duration::from_millis(10),
            num_preemptions: 0,
        },
    }
}

fn default_answer(prompt: &[u32], params: &GenerationParams) -> Vec<RequestEvent> {
    let mut events = Vec::new();
    let lps = params.logprobs.map(|_| vec![(9, -0.25)]);
    for i in 0..params.n {
        events.push(delta(i, 9, " ok", lps.clone()));
    }
    for i in 0..params.n {
        events.push(finished(
            i,
            FinishReason::Length,
            None,
            "",
            (prompt.len(), 1, 0),
        ));
    }
    events
}

impl Generate for FakeEngine {
    fn submit(
        &self,
        prompt: Vec<u32>,
        params: ValidParams,
    ) -> impl Future<Output = Result<EventStream, SubmitError>> + Send {
        let answer = self
            .0
            .script
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or_else(|| Ok(default_answer(&prompt, &params)));
        self.0
            .submitted
            .lock()
            .unwrap()
            .push((prompt, params.into_inner()));
        async move { answer.map(|events| stream::iter(events).boxed()) }
    }

    fn snapshot(&self) -> EngineSnapshot {
        self.0.snapshot.lock().unwrap().clone()
    }

    async fn fresh_snapshot(&self) -> Result<EngineSnapshot, SubmitError> {
        Ok(self.snapshot())
    }

    fn tokenizer(&self) -> &Tokenizer {
        let held = self.0.hold.lock().unwrap().take();
        if let Some(g) = held {
            g.wait();
        }
        &self.0.tokenizer
    }

    fn max_model_len(&self) -> usize {
        MAX_MODEL_LEN
    }

    fn vocab_size(&self) -> usize {
        VOCAB
    }

    fn lora_id(&self, name: &str) -> Option<LoraId> {
        let loras = self.0.loras.lock().unwrap();
        loras.iter().find(|l| l.name == name).map(|l| l.id)
    }

    fn loras(&self) -> Vec<LoraInfo> {
        self.0.loras.lock().unwrap().clone()
    }

    fn load_lora_blocking(&self, name: &str, source: &str) -> Result<LoraInfo, LoraError> {
        let mut loras = self.0.loras.lock().unwrap();
        if loras.iter().any(|l| l.name == name) {
            return Err(LoraError::AlreadyLoaded(name.to_string()));
        }
        let info = LoraInfo {
            id: LoraId(loras.len() as u32 + 1),
            name: name.to_string(),
            source: source.to_string(),
            path: source.into(),
            rank: 8,
            created: 1_700_000_000,
        };
        loras.push(info.clone());
        Ok(info)
    }

    fn unload_lora(&self, name: &str) -> Result<(), LoraError> {
        let mut loras = self.0.loras.lock().unwrap();
        let before = loras.len();
        loras.retain(|l| l.name != name);
        if loras.len() == before {
            return Err(LoraError::NotFound(name.to_string()));
        }
        Ok(())
    }

    fn shutdown(&self) {}
}
