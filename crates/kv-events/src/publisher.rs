//! The publisher thread: batches from the engine thread go over a bounded queue to a
//! dedicated thread that encodes them and sends them on a ZeroMQ PUB socket as vLLM's
//! `ZmqEventPublisher` does: three frames `topic`, an 8-byte big-endian sequence number,
//! the msgpack payload; plus vLLM's optional ROUTER replay socket.
//!
//! The engine never waits: [`KvEventPublisher::publish`] only pushes onto the queue, and
//! when `max_queue_size` batches are already waiting it drops the batch and counts its
//! events. The PUB socket itself never blocks either (without subscribers messages are
//! discarded; a slow subscriber loses messages beyond `hwm`). A dropped batch still takes
//! its sequence number, so subscribers see the gap.
//!
//! # Why libzmq (the `zmq` crate) and not the pure-Rust `zeromq` crate
//!
//! * Interop: the subscribers are pyzmq (vLLM's own tooling), go-zeromq/zmq4 (llm-d) and
//!   zmq.rs (NVIDIA Dynamo). libzmq 4.3.5 — what `zmq-sys` builds, and what pyzmq wheels
//!   bundle — is the reference ZMTP implementation and the very socket vLLM publishes from,
//!   so `tcp://*:5557` wildcard binds, bind-vs-connect, `SNDHWM` and the ROUTER replay
//!   socket behave exactly as in vLLM. `zeromq` 0.7 cannot bind `tcp://*:PORT` (it resolves
//!   `*` as a host name), has no high-water-mark option (a fixed per-subscriber queue), and
//!   describes itself as not implementing all of ZeroMQ.
//! * Build: `zmq-sys` 0.12 always compiles the vendored libzmq with the `cc` crate (a C++
//!   compiler, no cmake, no system libzmq, no libsodium), so a fresh machine and CI need
//!   nothing new, and libzmq is linked statically into the one `lantern` binary (which then
//!   also needs the system's libstdc++). `zeromq` 0.7 needs Rust 1.89 (the workspace's MSRV
//!   is 1.85) and an async runtime on this thread.
//! * Maintenance: the `zmq` binding (0.10) is thin and changes rarely, over a library in
//!   long-term maintenance; `zeromq` is more active but younger and partial. A blocking
//!   socket API also fits one dedicated OS thread.

use crate::config::{Layout, PublisherSettings};
use crate::wire::{encode_batch, EventBatch};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::Duration;

/// A socket that could not be set up, or a thread that could not start.
#[derive(Debug, thiserror::Error)]
pub enum PublisherError {
    #[error("KV-cache events: cannot {action} the {socket} socket at {endpoint}: {source}")]
    Socket {
        action: &'static str,
        socket: &'static str,
        endpoint: String,
        source: zmq::Error,
    },
    #[error("KV-cache events: cannot start the publisher thread: {0}")]
    Spawn(std::io::Error),
}

/// Why [`KvEventPublisher::publish`] did not queue a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PublishError {
    #[error("the KV-events queue is full ({0} batches); the batch was dropped")]
    QueueFull(usize),
    #[error("the KV-events publisher thread has stopped; the batch was dropped")]
    Stopped,
}

/// Sent on the replay socket after the last replayed batch (vLLM's `END_SEQ`).
const END_SEQ: [u8; 8] = (-1i64).to_be_bytes();
/// How long pending messages may delay closing the sockets at shutdown.
const LINGER_MS: i32 = 200;
/// How often the thread looks at the replay socket while no batch arrives.
const REPLAY_POLL: Duration = Duration::from_millis(20);

/// The engine side of the publisher: owns the queue's sending end and the thread.
#[derive(Debug)]
pub struct KvEventPublisher {
    tx: Option<mpsc::Sender<(u64, EventBatch)>>,
    /// Batches queued and not yet taken by the thread (the queue's bound).
    queued: Arc<AtomicUsize>,
    max_queue_size: usize,
    /// Events dropped: queue full, thread gone, or a send or encoding failure.
    dropped: Arc<AtomicU64>,
    next_seq: u64,
    endpoint: String,
    replay_endpoint: Option<String>,
    thread: Option<JoinHandle<()>>,
}

impl KvEventPublisher {
    /// Binds (or connects) the sockets — failures surface here, at start-up — and starts
    /// the publisher thread.
    pub fn start(s: &PublisherSettings) -> Result<Self, PublisherError> {
        let ctx = zmq::Context::new();
        let sock_err = |action, socket, endpoint: &str| {
            let endpoint = endpoint.to_string();
            move |source| PublisherError::Socket {
                action,
                socket,
                endpoint,
                source,
            }
        };
        let publisher = ctx
            .socket(zmq::PUB)
            .map_err(sock_err("create", "PUB", &s.endpoint))?;
        publisher
            .set_sndhwm(s.hwm)
            .and_then(|()| publisher.set_linger(LINGER_MS))
            .and_then(|()| publisher.set_ipv6(is_ipv6(&s.endpoint)))
            .map_err(sock_err("configure", "PUB", &s.endpoint))?;
        let endpoint = if is_bind_endpoint(&s.endpoint) {
            publisher
                .bind(&s.endpoint)
                .map_err(sock_err("bind", "PUB", &s.endpoint))?;
            last_endpoint(&publisher).unwrap_or_else(|| s.endpoint.clone())
        } else {
            publisher
                .connect(&s.endpoint)
                .map_err(sock_err("connect", "PUB", &s.endpoint))?;
            s.endpoint.clone()
        };
        let mut replay_endpoint = None;
        let replay = match &s.replay_endpoint {
            Some(ep) => {
                let r = ctx
                    .socket(zmq::ROUTER)
                    .map_err(sock_err("create", "replay ROUTER", ep))?;
                // Room for a whole replay plus its end marker (as vLLM sizes it).
                let hwm = i32::try_from(2 * (s.buffer_steps + 1)).unwrap_or(i32::MAX);
                r.set_sndhwm(hwm)
                    .and_then(|()| r.set_linger(LINGER_MS))
                    .and_then(|()| r.set_ipv6(is_ipv6(ep)))
                    .map_err(sock_err("configure", "replay ROUTER", ep))?;
                r.bind(ep).map_err(sock_err("bind", "replay ROUTER", ep))?;
                let bound = last_endpoint(&r).unwrap_or_else(|| ep.clone());
                tracing::info!("KV-cache events: replay requests on {bound}");
                replay_endpoint = Some(bound);
                Some(r)
            }
            None => None,
        };
        let (tx, rx) = mpsc::channel();
        let queued = Arc::new(AtomicUsize::new(0));
        let dropped = Arc::new(AtomicU64::new(0));
        let mut worker = Worker {
            _ctx: ctx,
            publisher,
            replay,
            topic: s.topic.clone().into_bytes(),
            layout: s.layout,
            buffer: VecDeque::new(),
            buffer_steps: s.buffer_steps,
            queued: queued.clone(),
            dropped: dropped.clone(),
        };
        let thread = std::thread::Builder::new()
            .name("lantern-kv-events".into())
            .spawn(move || worker.run(rx))
            .map_err(PublisherError::Spawn)?;
        Ok(Self {
            tx: Some(tx),
            queued,
            max_queue_size: s.max_queue_size,
            dropped,
            next_seq: 0,
            endpoint,
            replay_endpoint,
            thread: Some(thread),
        })
    }

    /// Queues one batch for publishing without ever waiting, and returns its sequence
    /// number. When the queue is full (or the thread is gone) the batch is dropped, its
    /// events are counted in [`KvEventPublisher::dropped_events`], and its sequence number
    /// is skipped so that subscribers see the gap.
    pub fn publish(&mut self, batch: EventBatch) -> Result<u64, PublishError> {
        let seq = self.next_seq;
        self.next_seq += 1;
        let n = batch.events.len() as u64;
        if self.queued.load(Ordering::Acquire) >= self.max_queue_size {
            self.dropped.fetch_add(n, Ordering::Relaxed);
            return Err(PublishError::QueueFull(self.max_queue_size));
        }
        let Some(tx) = &self.tx else {
            self.dropped.fetch_add(n, Ordering::Relaxed);
            return Err(PublishError::Stopped);
        };
        self.queued.fetch_add(1, Ordering::AcqRel);
        if tx.send((seq, batch)).is_err() {
            self.queued.fetch_sub(1, Ordering::AcqRel);
            self.dropped.fetch_add(n, Ordering::Relaxed);
            return Err(PublishError::Stopped);
        }
        Ok(seq)
    }

    /// The sequence number of the last batch handed to [`KvEventPublisher::publish`].
    pub fn last_seq(&self) -> Option<u64> {
        self.next_seq.checked_sub(1)
    }

    /// Events dropped so far (never published).
    pub fn dropped_events(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Where the PUB socket is bound or connected (for `tcp://*:0`, the port picked).
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Where the replay ROUTER socket is bound, if there is one.
    pub fn replay_endpoint(&self) -> Option<&str> {
        self.replay_endpoint.as_deref()
    }

    /// Publishes what is queued, then stops the thread and closes the sockets.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        self.tx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for KvEventPublisher {
    fn drop(&mut self) {
        self.stop();
    }
}

/// vLLM's rule: bind wildcard and ipc endpoints, connect to the rest.
fn is_bind_endpoint(endpoint: &str) -> bool {
    endpoint.contains('*') || endpoint.contains("::") || endpoint.starts_with("ipc://")
}

fn is_ipv6(endpoint: &str) -> bool {
    endpoint.starts_with("tcp://[")
}

fn last_endpoint(s: &zmq::Socket) -> Option<String> {
    s.get_last_endpoint().ok().and_then(Result::ok)
}

/// The publisher thread's state.
struct Worker {
    /// Kept alive as long as the sockets.
    _ctx: zmq::Context,
    publisher: zmq::Socket,
    replay: Option<zmq::Socket>,
    topic: Vec<u8>,
    layout: Layout,
    /// The last `buffer_steps` published batches, for replay.
    buffer: VecDeque<(u64, Vec<u8>)>,
    buffer_steps: usize,
    queued: Arc<AtomicUsize>,
    dropped: Arc<AtomicU64>,
}

impl Worker {
    fn run(&mut self, rx: mpsc::Receiver<(u64, EventBatch)>) {
        loop {
            let next = if self.replay.is_some() {
                self.serve_replays();
                match rx.recv_timeout(REPLAY_POLL) {
                    Ok(b) => Some(b),
                    Err(mpsc::RecvTimeoutError::Timeout) => continue,
                    Err(mpsc::RecvTimeoutError::Disconnected) => None,
                }
            } else {
                rx.recv().ok()
            };
            let Some((seq, batch)) = next else {
                break;
            };
            self.queued.fetch_sub(1, Ordering::AcqRel);
            self.send(seq, &batch);
        }
        tracing::debug!("KV-cache events publisher stopped");
    }

    fn send(&mut self, seq: u64, batch: &EventBatch) {
        let payload = match encode_batch(batch, self.layout) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, seq, "KV-cache events: cannot encode a batch; dropped");
                self.dropped
                    .fetch_add(batch.events.len() as u64, Ordering::Relaxed);
                return;
            }
        };
        let seq_bytes = seq.to_be_bytes();
        let frames: [&[u8]; 3] = [&self.topic, &seq_bytes, &payload];
        // PUB never blocks: without subscribers, or past a subscriber's high-water mark,
        // libzmq discards the message. DONTWAIT makes sure of it.
        if let Err(e) = self.publisher.send_multipart(frames, zmq::DONTWAIT) {
            tracing::warn!(error = %e, seq, "KV-cache events: send failed; batch dropped");
            self.dropped
                .fetch_add(batch.events.len() as u64, Ordering::Relaxed);
        }
        if self.replay.is_some() {
            if self.buffer.len() == self.buffer_steps {
                self.buffer.pop_front();
            }
            self.buffer.push_back((seq, payload));
        }
    }

    /// Answers every waiting replay request: `[client, "", start_seq]` gets each buffered
    /// batch from `start_seq` on as `[client, "", topic, seq, payload]`, then
    /// `[client, "", "", -1, ""]`.
    fn serve_replays(&mut self) {
        let Some(r) = &self.replay else {
            return;
        };
        while matches!(r.poll(zmq::POLLIN, 0), Ok(n) if n > 0) {
            let frames = match r.recv_multipart(zmq::DONTWAIT) {
                Ok(f) => f,
                Err(e) => {
                    tracing::warn!(error = %e, "KV-cache events: replay receive failed");
                    return;
                }
            };
            let [client, _, start] = frames.as_slice() else {
                tracing::warn!(
                    frames = frames.len(),
                    "KV-cache events: malformed replay request"
                );
                continue;
            };
            let Ok(start) = <[u8; 8]>::try_from(start.as_slice()).map(u64::from_be_bytes) else {
                tracing::warn!("KV-cache events: replay start is not 8 bytes");
                continue;
            };
            for (seq, payload) in self.buffer.iter().filter(|(s, _)| *s >= start) {
                let seq_bytes = seq.to_be_bytes();
                let msg: [&[u8]; 5] = [client, b"", &self.topic, &seq_bytes, payload];
                if let Err(e) = r.send_multipart(msg, 0) {
                    tracing::warn!(error = %e, "KV-cache events: replay send failed");
                    break;
                }
            }
            let end: [&[u8]; 5] = [client, b"", b"", &END_SEQ, b""];
            if let Err(e) = r.send_multipart(end, 0) {
                tracing::warn!(error = %e, "KV-cache events: replay end marker failed");
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::wire::KvEvent;

    fn settings() -> PublisherSettings {
        PublisherSettings {
            endpoint: "tcp://127.0.0.1:1".into(),
            replay_endpoint: None,
            buffer_steps: 4,
            hwm: 10,
            max_queue_size: 2,
            topic: "t".into(),
            layout: Layout::Map,
        }
    }

    fn batch(n: usize) -> EventBatch {
        EventBatch {
            ts: 0.0,
            events: vec![KvEvent::AllBlocksCleared; n],
            data_parallel_rank: Some(0),
        }
    }

    #[test]
    fn a_full_queue_drops_counts_and_skips_the_sequence_number() {
        // Connecting to a port nobody listens on succeeds (ZeroMQ retries in the
        // background) and costs nothing.
        let mut p = KvEventPublisher::start(&settings()).unwrap();
        assert_eq!(p.last_seq(), None);
        assert_eq!(p.publish(batch(1)), Ok(0));
        // Pretend the thread is behind: the queue holds max_queue_size batches.
        p.queued.store(2, Ordering::Release);
        assert_eq!(p.publish(batch(3)), Err(PublishError::QueueFull(2)));
        assert_eq!(p.dropped_events(), 3);
        assert_eq!(p.last_seq(), Some(1));
        p.queued.store(0, Ordering::Release);
        assert_eq!(p.publish(batch(1)), Ok(2));
        p.shutdown();
    }

    #[test]
    fn a_busy_port_fails_at_start() {
        let first = KvEventPublisher::start(&PublisherSettings {
            endpoint: "tcp://*:0".into(),
            ..settings()
        })
        .unwrap();
        let port = first.endpoint().rsplit(':').next().unwrap().to_string();
        let e = KvEventPublisher::start(&PublisherSettings {
            endpoint: format!("tcp://*:{port}"),
            ..settings()
        })
        .unwrap_err();
        assert!(e.to_string().contains("cannot bind the PUB socket"), "{e}");
    }

    #[test]
    fn bind_or_connect_as_vllm_decides() {
        assert!(is_bind_endpoint("tcp://*:5557"));
        assert!(is_bind_endpoint("tcp://[::]:5557"));
        assert!(is_bind_endpoint("ipc:///tmp/x"));
        assert!(!is_bind_endpoint("tcp://10.0.0.1:5557"));
        assert!(!is_bind_endpoint("tcp://broker:5557"));
    }
}
