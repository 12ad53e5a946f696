//! Parity with Hugging Face `transformers` (CPU, float32) on the tiny fixtures in
//! `tests/fixtures/` (see its README; regenerate with `tests/fixtures/generate.py`).
//!
//! Every check runs through the paged KV cache: full prefill, 32 greedy decode steps,
//! 4 sequences in one flattened batch, chunked prefill (1, 7, 64) and block sizes 1/16/32.
//!
//! By default on the CPU in f32. `LANTERN_TEST_DEVICE=cuda[:N]` runs the same checks on a
//! GPU (a `--features cuda` build) and `LANTERN_TEST_DTYPE=bf16|f16` in half precision:
//! logits are then compared with a looser tolerance (`LANTERN_TEST_TOL`, default 1e-4 in
//! f32 and 1e-1 in bf16/f16, where transformers itself is 1.4e-2 to 3.6e-2 off its own f32
//! logits on these fixtures) and, since rounding may flip near-ties, decoding is
//! teacher-forced on the reference tokens and greedy agreement is reported, not asserted.
//! `LANTERN_FUSED_OPS=0` runs every check on the unfused model (`ModelOptions::fused` off,
//! as `--no-fused-ops`); the default is the fused path. `LANTERN_CUDA_GRAPHS=1` (CUDA)
//! runs every decode-only step without LoRA through captured CUDA graphs (`--cuda-graphs`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use candle_core::{DType, Device, Tensor};
use lantern_models::{load_hf_dir, ModelOptions};
use lantern_runtime::{sampler, KvCacheSize, ModelRunner, RunnerConfig, SeqChunk};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::OnceLock;

const MODELS: &[&str] = &[
    "tiny-llama",
    "tiny-llama-tied",
    "tiny-mistral",
    "tiny-qwen2",
    "tiny-qwen3",
];
/// Where and in which dtype the checks run (`LANTERN_TEST_DEVICE`, `LANTERN_TEST_DTYPE`).
struct Mode {
    device: Device,
    dtype: DType,
    tol: f32,
    /// `LANTERN_FUSED_OPS` (default on).
    model: ModelOptions,
    /// `LANTERN_CUDA_GRAPHS=1`: decode-only steps replay CUDA graphs.
    graphs: bool,
}

fn mode() -> &'static Mode {
    static MODE: OnceLock<Mode> = OnceLock::new();
    MODE.get_or_init(|| {
        let spec = std::env::var("LANTERN_TEST_DEVICE").unwrap_or_else(|_| "cpu".into());
        let device = lantern_runtime::device::select(&spec)
            .unwrap_or_else(|e| panic!("LANTERN_TEST_DEVICE={spec}: {e}"));
        let dtype = match std::env::var("LANTERN_TEST_DTYPE").as_deref() {
            Err(_) | Ok("f32") | Ok("float32") => DType::F32,
            Ok("bf16") | Ok("bfloat16") => DType::BF16,
            Ok("f16") | Ok("float16") => DType::F16,
            Ok(other) => panic!("LANTERN_TEST_DTYPE={other}: use f32, bf16 or f16"),
        };
        let tol = match std::env::var("LANTERN_TEST_TOL") {
            Ok(t) => t.parse().expect("LANTERN_TEST_TOL must be a number"),
            Err(_) if dtype == DType::F32 => 1e-4,
            Err(_) => 1e-1,
        };
        let fused = match std::env::var("LANTERN_FUSED_OPS").as_deref() {
            Err(_) | Ok("1") | Ok("true") | Ok("on") => true,
            Ok("0") | Ok("false") | Ok("off") => false,
            Ok(other) => panic!("LANTERN_FUSED_OPS={other}: use 1 or 0"),
        };
        let graphs = match std::env::var("LANTERN_CUDA_GRAPHS").as_deref() {
            Err(_) | Ok("0") => false,
            Ok("1") => true,
            Ok(other) => panic!("LANTERN_CUDA_GRAPHS={other}: use 1 or 0"),
        };
        eprintln!(
            "parity: device {spec}, dtype {dtype:?}, fused ops {}, CUDA graphs {}, relative tolerance {tol:e}",
            if fused { "on" } else { "off" },
            if graphs { "on" } else { "off" }
        );
        Mode {
            device,
            dtype,
            tol,
            model: ModelOptions { fused },
            graphs,
        }
    })
}

/// Exact mode (f32): greedy continuations must equal the reference token for token.
fn exact() -> bool {
    mode().dtype == DType::F32
}

/// The token fed next: our greedy pick in exact mode; in half precision the reference's
/// token (teacher forcing), counting disagreements.
fn next_token(ours: u32, reference: Option<u32>, what: &str) -> u32 {
    match reference {
        Some(r) if !exact() => {
            if r != ours {
                eprintln!("{what}: greedy {ours} vs reference {r} (teacher-forced)");
            }
            r
        }
        _ => ours,
    }
}

fn fixtures() -> PathBuf {
    match std::env::var("LANTERN_FIXTURES") {
        Ok(d) => PathBuf::from(d),
        Err(_) => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures"),
    }
}

struct Reference {
    prompts: Vec<Vec<u32>>,
    greedy: Vec<Vec<u32>>,
    tensors: HashMap<String, Tensor>,
}

impl Reference {
    fn load(name: &str) -> Self {
        let dir = fixtures().join(name);
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("reference.json")).unwrap())
                .unwrap();
        let ids = |k: &str| -> Vec<Vec<u32>> {
            json[k]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| {
                    p.as_array()
                        .unwrap()
                        .iter()
                        .map(|x| x.as_u64().unwrap() as u32)
                        .collect()
                })
                .collect()
        };
        let tensors =
            candle_core::safetensors::load(dir.join("reference.safetensors"), &Device::Cpu)
                .unwrap();
        Self {
            prompts: ids("prompts"),
            greedy: ids("greedy"),
            tensors,
        }
    }

    fn prefill(&self, i: usize) -> Tensor {
        self.tensors[&format!("prefill_logits.{i}")].clone()
    }

    fn decode(&self, i: usize) -> Tensor {
        self.tensors[&format!("decode_logits.{i}")].clone()
    }
}

/// max |a - b| / max |b| (`a` may live on the test device; `b` is the CPU reference).
fn rel_err(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims(), "shape mismatch");
    let a = &a.to_device(&Device::Cpu).unwrap();
    let diff = (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    let scale = b
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    diff / scale.max(1e-6)
}

fn assert_close(what: &str, ours: &Tensor, reference: &Tensor) {
    let e = rel_err(ours, reference);
    let tol = mode().tol;
    assert!(e <= tol, "{what}: relative error {e:e} > {tol:e}");
}

/// A trivial block allocator for tests: hands out distinct blocks in a scrambled order
/// so block tables are not contiguous.
struct Blocks {
    free: Vec<u32>,
}

impl Blocks {
    fn new(num_blocks: usize) -> Self {
        let mut free: Vec<u32> = (1..num_blocks as u32).collect();
        // Deterministic scramble.
        let n = free.len();
        for i in 0..n {
            let j = (i * 7919 + 13) % n;
            free.swap(i, j);
        }
        Self { free }
    }

    fn table(&mut self, tokens: usize, block_size: usize) -> Vec<u32> {
        (0..tokens.div_ceil(block_size))
            .map(|_| self.free.pop().expect("test pool too small"))
            .collect()
    }
}

fn runner(name: &str, block_size: usize) -> ModelRunner {
    runner_with(name, block_size, &mode().model)
}

fn runner_with(name: &str, block_size: usize, opts: &ModelOptions) -> ModelRunner {
    let m = mode();
    let loaded = load_hf_dir(&fixtures().join(name), m.dtype, &m.device, opts).unwrap();
    assert_eq!(loaded.model.options(), opts);
    let mut r = ModelRunner::new(
        loaded.model,
        RunnerConfig {
            block_size,
            kv_cache: KvCacheSize::Tokens(4096),
            kv_cache_dtype: Default::default(),
        },
    )
    .unwrap();
    if m.graphs {
        r.enable_cuda_graphs(64).unwrap();
    }
    r
}

/// Whole-prompt prefill, then 32 greedy steps; one sequence at a time.
fn check_single(name: &str, block_size: usize) {
    let runner = runner(name, block_size);
    check_single_on(&runner, name, name, None, block_size);
}

/// Whole-prompt prefill then greedy decode of every reference prompt of `ref_name`
/// (a model or `model/lora-x` fixture) on `runner`, with the sequences on `slot`.
fn check_single_on(
    runner: &ModelRunner,
    name: &str,
    ref_name: &str,
    slot: Option<u32>,
    block_size: usize,
) {
    let r = Reference::load(ref_name);
    let name = format!("{name} [{ref_name}]");
    let mut blocks = Blocks::new(runner.num_blocks());
    for (i, prompt) in r.prompts.iter().enumerate() {
        let steps = r.decode(i).dim(0).unwrap();
        let table = blocks.table(prompt.len() + steps, block_size);
        let logits = runner
            .execute_all_logits(&[SeqChunk {
                token_ids: prompt,
                num_computed_tokens: 0,
                block_table: &table,
                sample: true,
                all_logits: false,
                lora_slot: slot,
            }])
            .unwrap();
        assert_close(
            &format!("{name} bs={block_size} prompt {i} prefill"),
            &logits,
            &r.prefill(i),
        );
        let last = logits.narrow(0, prompt.len() - 1, 1).unwrap();
        let what = format!("{name} bs={block_size} prompt {i}");
        let mut tok = next_token(
            sampler::greedy(&last).unwrap()[0],
            r.greedy[i].first().copied(),
            &what,
        );
        let mut generated = vec![tok];
        let mut rows = Vec::new();
        for k in 0..steps {
            let l = runner
                .execute(&[SeqChunk {
                    token_ids: &[tok],
                    num_computed_tokens: prompt.len() + k,
                    block_table: &table,
                    sample: true,
                    all_logits: false,
                    lora_slot: slot,
                }])
                .unwrap()
                .unwrap();
            rows.push(l.clone());
            tok = next_token(
                sampler::greedy(&l).unwrap()[0],
                r.greedy[i].get(k + 1).copied(),
                &what,
            );
            generated.push(tok);
        }
        assert_eq!(
            generated, r.greedy[i],
            "{name} bs={block_size} prompt {i}: greedy continuation differs"
        );
        let rows = Tensor::cat(&rows, 0).unwrap();
        assert_close(
            &format!("{name} bs={block_size} prompt {i} decode"),
            &rows,
            &r.decode(i),
        );
    }
}

/// All prompts in one flattened batch, then all decode steps batched together.
fn check_batched(name: &str, block_size: usize) {
    let r = Reference::load(name);
    let runner = runner(name, block_size);
    let mut blocks = Blocks::new(runner.num_blocks());
    let steps = r.decode(0).dim(0).unwrap();
    let tables: Vec<Vec<u32>> = r
        .prompts
        .iter()
        .map(|p| blocks.table(p.len() + steps, block_size))
        .collect();
    let chunks: Vec<SeqChunk> = r
        .prompts
        .iter()
        .zip(&tables)
        .map(|(p, t)| SeqChunk {
            token_ids: p,
            num_computed_tokens: 0,
            block_table: t,
            sample: true,
            all_logits: false,
            lora_slot: None,
        })
        .collect();
    let all = runner.execute_all_logits(&chunks).unwrap();
    let mut off = 0;
    let mut last_rows = Vec::new();
    for (i, p) in r.prompts.iter().enumerate() {
        let mine = all.narrow(0, off, p.len()).unwrap();
        assert_close(
            &format!("{name} batched prompt {i} prefill"),
            &mine,
            &r.prefill(i),
        );
        last_rows.push(mine.narrow(0, p.len() - 1, 1).unwrap());
        off += p.len();
    }
    let what = format!("{name} batched");
    let mut toks: Vec<u32> = sampler::greedy(&Tensor::cat(&last_rows, 0).unwrap())
        .unwrap()
        .into_iter()
        .enumerate()
        .map(|(j, t)| next_token(t, r.greedy[j].first().copied(), &what))
        .collect();
    let mut generated: Vec<Vec<u32>> = toks.iter().map(|&t| vec![t]).collect();
    let mut decode_rows: Vec<Vec<Tensor>> = vec![Vec::new(); r.prompts.len()];
    for k in 0..steps {
        let step_tokens: Vec<[u32; 1]> = toks.iter().map(|&t| [t]).collect();
        let chunks: Vec<SeqChunk> = r
            .prompts
            .iter()
            .enumerate()
            .map(|(i, p)| SeqChunk {
                token_ids: &step_tokens[i],
                num_computed_tokens: p.len() + k,
                block_table: &tables[i],
                sample: true,
                all_logits: false,
                lora_slot: None,
            })
            .collect();
        let l = runner.execute(&chunks).unwrap().unwrap();
        for (i, rows) in decode_rows.iter_mut().enumerate() {
            rows.push(l.narrow(0, i, 1).unwrap());
        }
        toks = sampler::greedy(&l)
            .unwrap()
            .into_iter()
            .enumerate()
            .map(|(j, t)| next_token(t, r.greedy[j].get(k + 1).copied(), &what))
            .collect();
        for (g, &t) in generated.iter_mut().zip(&toks) {
            g.push(t);
        }
    }
    for i in 0..r.prompts.len() {
        assert_eq!(
            generated[i], r.greedy[i],
            "{name} batched prompt {i}: greedy differs"
        );
        let rows = Tensor::cat(&decode_rows[i], 0).unwrap();
        assert_close(
            &format!("{name} batched prompt {i} decode"),
            &rows,
            &r.decode(i),
        );
    }
}

/// The longest prompt prefilled in chunks of `chunk` tokens, resuming on cached blocks;
/// other prompts decode in the same batches so prefill chunks and decode tokens mix.
fn check_chunked(name: &str, chunk: usize, block_size: usize) {
    let r = Reference::load(name);
    let runner = runner(name, block_size);
    let mut blocks = Blocks::new(runner.num_blocks());
    let (long_i, long) = r
        .prompts
        .iter()
        .enumerate()
        .max_by_key(|(_, p)| p.len())
        .unwrap();
    let short_i = (0..r.prompts.len())
        .min_by_key(|&i| r.prompts[i].len())
        .unwrap();
    let short = &r.prompts[short_i];
    let long_table = blocks.table(long.len() + 1, block_size);
    let short_table = blocks.table(short.len() + r.greedy[short_i].len(), block_size);
    // Prefill the short prompt alone first.
    let l = runner
        .execute(&[SeqChunk {
            token_ids: short,
            num_computed_tokens: 0,
            block_table: &short_table,
            sample: true,
            all_logits: false,
            lora_slot: None,
        }])
        .unwrap()
        .unwrap();
    let what = format!("{name} chunk={chunk} bs={block_size}");
    let mut short_tok = next_token(
        sampler::greedy(&l).unwrap()[0],
        r.greedy[short_i].first().copied(),
        &what,
    );
    let mut short_gen = vec![short_tok];
    let mut rows = Vec::new();
    let mut done = 0;
    let mut k = 0;
    while done < long.len() {
        let n = chunk.min(long.len() - done);
        let decode_tok = [short_tok];
        let mut seqs = vec![SeqChunk {
            token_ids: &long[done..done + n],
            num_computed_tokens: done,
            block_table: &long_table,
            sample: true,
            all_logits: false,
            lora_slot: None,
        }];
        let decoding = k + 1 < r.greedy[short_i].len();
        if decoding {
            seqs.push(SeqChunk {
                token_ids: &decode_tok,
                num_computed_tokens: short.len() + k,
                block_table: &short_table,
                sample: true,
                all_logits: false,
                lora_slot: None,
            });
        }
        let all = runner.execute_all_logits(&seqs).unwrap();
        rows.push(all.narrow(0, 0, n).unwrap());
        if decoding {
            let last = all.narrow(0, n, 1).unwrap();
            short_tok = next_token(
                sampler::greedy(&last).unwrap()[0],
                r.greedy[short_i].get(k + 1).copied(),
                &what,
            );
            short_gen.push(short_tok);
            k += 1;
        }
        done += n;
    }
    let rows = Tensor::cat(&rows, 0).unwrap();
    assert_close(
        &format!("{name} chunk={chunk} bs={block_size} prefill"),
        &rows,
        &r.prefill(long_i),
    );
    let expect = &r.greedy[short_i][..short_gen.len()];
    assert_eq!(
        &short_gen[..],
        expect,
        "{name} chunk={chunk}: interleaved decode differs"
    );
}

#[test]
fn single_sequence_all_models_block16() {
    for m in MODELS {
        check_single(m, 16);
    }
}

#[test]
fn single_sequence_block_sizes_1_and_32() {
    for m in MODELS {
        check_single(m, 1);
        check_single(m, 32);
    }
}

#[test]
fn four_sequences_in_one_flattened_batch() {
    for m in MODELS {
        check_batched(m, 16);
    }
}

#[test]
fn chunked_prefill_1_7_64() {
    for m in MODELS {
        for chunk in [1, 7, 64] {
            check_chunked(m, chunk, 16);
        }
    }
    check_chunked("tiny-qwen3", 7, 1);
    check_chunked("tiny-llama", 64, 32);
}

/// A runner with `max_loras` slots; `lora-a` and `lora-b` loaded into the first slots.
fn runner_with_adapters(name: &str, block_size: usize, max_loras: usize) -> ModelRunner {
    runner_with_adapters_opts(name, block_size, max_loras, &mode().model)
}

fn runner_with_adapters_opts(
    name: &str,
    block_size: usize,
    max_loras: usize,
    opts: &ModelOptions,
) -> ModelRunner {
    let mut r = runner_with(name, block_size, opts);
    r.enable_lora(max_loras, 16).unwrap();
    let cfg = r.config().clone();
    for (slot, a) in ["lora-a", "lora-b"].iter().enumerate().take(max_loras) {
        let ad =
            lantern_models::LoraAdapter::load(&fixtures().join(name).join(a), &cfg, 16).unwrap();
        r.load_lora(slot as u32, &ad).unwrap();
    }
    r
}

/// Each adapter alone matches transformers + peft (logits within 1e-4, greedy token-exact),
/// and base requests on a LoRA-enabled runner are unaffected.
#[test]
fn lora_adapters_match_peft() {
    for m in MODELS {
        let runner = runner_with_adapters(m, 16, 2);
        check_single_on(&runner, m, &format!("{m}/lora-a"), Some(0), 16);
        check_single_on(&runner, m, &format!("{m}/lora-b"), Some(1), 16);
        check_single_on(&runner, m, m, None, 16);
    }
}

/// One flattened batch mixing base, adapter-a and adapter-b sequences (prefill, then
/// decode together) equals each served alone.
#[test]
fn lora_mixed_batch_equals_alone() {
    for m in MODELS {
        let runner = runner_with_adapters(m, 16, 2);
        let refs = [
            (Reference::load(m), None),
            (Reference::load(&format!("{m}/lora-a")), Some(0u32)),
            (Reference::load(&format!("{m}/lora-b")), Some(1u32)),
        ];
        let mut blocks = Blocks::new(runner.num_blocks());
        // Sequences: prompt i of reference (i % 3).
        let seqs: Vec<(usize, usize)> = (0..4).map(|i| (i % 3, i)).collect();
        let steps = refs[0].0.decode(0).dim(0).unwrap();
        let tables: Vec<Vec<u32>> = seqs
            .iter()
            .map(|&(r, i)| blocks.table(refs[r].0.prompts[i].len() + steps, 16))
            .collect();
        let chunks: Vec<SeqChunk> = seqs
            .iter()
            .zip(&tables)
            .map(|(&(r, i), t)| SeqChunk {
                token_ids: &refs[r].0.prompts[i],
                num_computed_tokens: 0,
                block_table: t,
                sample: true,
                all_logits: true,
                lora_slot: refs[r].1,
            })
            .collect();
        let all = runner.execute(&chunks).unwrap().unwrap();
        let mut off = 0;
        let mut toks = Vec::new();
        for &(r, i) in &seqs {
            let n = refs[r].0.prompts[i].len();
            let mine = all.narrow(0, off, n).unwrap();
            assert_close(
                &format!("{m} mixed ref {r} prompt {i} prefill"),
                &mine,
                &refs[r].0.prefill(i),
            );
            toks.push(next_token(
                sampler::greedy(&mine.narrow(0, n - 1, 1).unwrap()).unwrap()[0],
                refs[r].0.greedy[i].first().copied(),
                &format!("{m} mixed ref {r} prompt {i}"),
            ));
            off += n;
        }
        let mut generated: Vec<Vec<u32>> = toks.iter().map(|&t| vec![t]).collect();
        for k in 0..steps {
            let feed: Vec<[u32; 1]> = toks.iter().map(|&t| [t]).collect();
            let chunks: Vec<SeqChunk> = seqs
                .iter()
                .enumerate()
                .map(|(j, &(r, i))| SeqChunk {
                    token_ids: &feed[j],
                    num_computed_tokens: refs[r].0.prompts[i].len() + k,
                    block_table: &tables[j],
                    sample: true,
                    all_logits: false,
                    lora_slot: refs[r].1,
                })
                .collect();
            let l = runner.execute(&chunks).unwrap().unwrap();
            toks = sampler::greedy(&l)
                .unwrap()
                .into_iter()
                .zip(&seqs)
                .map(|(t, &(r, i))| {
                    next_token(
                        t,
                        refs[r].0.greedy[i].get(k + 1).copied(),
                        &format!("{m} mixed ref {r} prompt {i}"),
                    )
                })
                .collect();
            for (g, &t) in generated.iter_mut().zip(&toks) {
                g.push(t);
            }
        }
        for (j, &(r, i)) in seqs.iter().enumerate() {
            assert_eq!(
                generated[j], refs[r].0.greedy[i],
                "{m} mixed ref {r} prompt {i}: greedy differs"
            );
        }
    }
}

/// One slot shared by two adapters in turn (slot pressure): reloading the slot gives each
/// adapter's exact outputs.
#[test]
fn lora_single_slot_reload() {
    let m = "tiny-llama";
    let mut runner = runner_with_adapters(m, 16, 1);
    let cfg = runner.config().clone();
    check_single_on(&runner, m, &format!("{m}/lora-a"), Some(0), 16);
    let b =
        lantern_models::LoraAdapter::load(&fixtures().join(m).join("lora-b"), &cfg, 16).unwrap();
    runner.load_lora(0, &b).unwrap();
    check_single_on(&runner, m, &format!("{m}/lora-b"), Some(0), 16);
    runner.clear_lora(0).unwrap();
    // A cleared slot contributes nothing: outputs equal the base model's.
    check_single_on(&runner, m, m, Some(0), 16);
}

#[test]
fn unsupported_adapters_are_refused_with_a_reason() {
    let dir = fixtures().join("tiny-llama");
    let cfg = lantern_models::ModelConfig::from_file(&dir.join("config.json")).unwrap();
    let e = lantern_models::LoraAdapter::load(&dir.join("lora-unsupported-dora"), &cfg, 16)
        .unwrap_err();
    assert!(e.to_string().contains("DoRA"), "{e}");
    let e =
        lantern_models::LoraAdapter::load(&dir.join("lora-modules-to-save"), &cfg, 16).unwrap_err();
    assert!(e.to_string().contains("modules_to_save"), "{e}");
    let e = lantern_models::LoraAdapter::load(&dir.join("lora-b"), &cfg, 4).unwrap_err();
    assert!(e.to_string().contains("max-lora-rank"), "{e}");
    // Another architecture's adapter does not fit (shape mismatch names the tensor).
    let q3 = fixtures().join("tiny-qwen3");
    let e = lantern_models::LoraAdapter::load(&q3.join("lora-a"), &cfg, 16).unwrap_err();
    assert!(e.to_string().contains("expected"), "{e}");
}

/// The fused and the unfused build of every model compute the same logits (within the
/// mode's tolerance) for one flattened batch mixing base and adapter sequences, prefill
/// chunks and decode tokens, so `--no-fused-ops` is a true A/B switch whatever
/// `LANTERN_FUSED_OPS` says.
#[test]
fn fused_and_unfused_paths_agree() {
    for m in MODELS {
        let fused = runner_with_adapters_opts(m, 16, 2, &ModelOptions { fused: true });
        let unfused = runner_with_adapters_opts(m, 16, 2, &ModelOptions { fused: false });
        let r = Reference::load(m);
        let mut blocks = Blocks::new(fused.num_blocks());
        let slots = [None, Some(0u32), Some(1u32), None];
        let tables: Vec<Vec<u32>> = r
            .prompts
            .iter()
            .map(|p| blocks.table(p.len() + 2, 16))
            .collect();
        // Step 1: sequences 0-2 prefill whole, sequence 3 its first half.
        let half = r.prompts[3].len() / 2;
        let step1: Vec<SeqChunk> = (0..4)
            .map(|i| SeqChunk {
                token_ids: if i == 3 {
                    &r.prompts[3][..half]
                } else {
                    &r.prompts[i]
                },
                num_computed_tokens: 0,
                block_table: &tables[i],
                sample: true,
                all_logits: true,
                lora_slot: slots[i],
            })
            .collect();
        let a = fused.execute(&step1).unwrap().unwrap();
        let b = unfused.execute(&step1).unwrap().unwrap();
        assert_close(
            &format!("{m} fused vs unfused, step 1"),
            &a,
            &b.to_device(&Device::Cpu).unwrap(),
        );
        // Step 2: one decode token for sequences 0-2, the rest of sequence 3's prompt.
        let toks: Vec<[u32; 1]> = (0..3).map(|i| [r.prompts[i][i + 1]]).collect();
        let step2: Vec<SeqChunk> = (0..4)
            .map(|i| SeqChunk {
                token_ids: if i == 3 {
                    &r.prompts[3][half..]
                } else {
                    &toks[i]
                },
                num_computed_tokens: if i == 3 { half } else { r.prompts[i].len() },
                block_table: &tables[i],
                sample: true,
                all_logits: false,
                lora_slot: slots[i],
            })
            .collect();
        let a = fused.execute(&step2).unwrap().unwrap();
        let b = unfused.execute(&step2).unwrap().unwrap();
        assert_close(
            &format!("{m} fused vs unfused, step 2"),
            &a,
            &b.to_device(&Device::Cpu).unwrap(),
        );
        if exact() {
            assert_eq!(
                sampler::greedy(&a).unwrap(),
                sampler::greedy(&b).unwrap(),
                "{m}: greedy picks differ"
            );
        }
    }
}

/// `--kv-cache-dtype float16|bfloat16` under f32 weights (CPU): prefill and teacher-forced
/// decode logits of every model stay within half-precision distance of the f32 reference
/// (K and V rounded to 11 or 8 significant bits). Runs in the default CPU f32 mode only.
#[test]
fn half_precision_kv_cache_under_f32_weights_matches_reference() {
    let m = mode();
    if !(m.device.is_cpu() && m.dtype == DType::F32) {
        eprintln!("skipped: CPU f32 mode only");
        return;
    }
    for (kv_dtype, tol) in [
        (lantern_runtime::KvCacheDtype::Float16, 5e-3),
        (lantern_runtime::KvCacheDtype::BFloat16, 3e-2),
    ] {
        for name in MODELS {
            let loaded = load_hf_dir(&fixtures().join(name), m.dtype, &m.device, &m.model).unwrap();
            let block_size = 16;
            let runner = ModelRunner::new(
                loaded.model,
                RunnerConfig {
                    block_size,
                    kv_cache: KvCacheSize::Tokens(4096),
                    kv_cache_dtype: kv_dtype,
                },
            )
            .unwrap();
            let r = Reference::load(name);
            let mut blocks = Blocks::new(runner.num_blocks());
            let (mut worst_prefill, mut worst_decode) = (0f32, 0f32);
            for (i, prompt) in r.prompts.iter().enumerate() {
                let steps = r.decode(i).dim(0).unwrap();
                let table = blocks.table(prompt.len() + steps, block_size);
                let chunk = |tokens: &[u32], done: usize, all: bool| {
                    let c = [SeqChunk {
                        token_ids: tokens,
                        num_computed_tokens: done,
                        block_table: &table,
                        sample: true,
                        all_logits: all,
                        lora_slot: None,
                    }];
                    if all {
                        runner.execute_all_logits(&c).unwrap()
                    } else {
                        runner.execute(&c).unwrap().unwrap()
                    }
                };
                worst_prefill = worst_prefill.max(rel_err(&chunk(prompt, 0, true), &r.prefill(i)));
                // Teacher forcing: feed the reference's greedy tokens.
                let rows: Vec<Tensor> = (0..steps)
                    .map(|k| chunk(&r.greedy[i][k..k + 1], prompt.len() + k, false))
                    .collect();
                let rows = Tensor::cat(&rows, 0).unwrap();
                worst_decode = worst_decode.max(rel_err(&rows, &r.decode(i)));
            }
            eprintln!("{name} {kv_dtype:?} cache: relative error prefill {worst_prefill:e}, decode {worst_decode:e}");
            assert!(
                worst_prefill <= tol && worst_decode <= tol,
                "{name} {kv_dtype:?} cache: relative error prefill {worst_prefill:e}, decode {worst_decode:e} > {tol:e}"
            );
            // Not the f32 cache in disguise: f32 agrees to ~1e-6.
            assert!(
                worst_prefill.max(worst_decode) > 1e-6,
                "{name} {kv_dtype:?}"
            );
        }
    }
}
