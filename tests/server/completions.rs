//! `/v1/completions` against transformers references: greedy token ids, prompt forms,
//! logprobs, echo with prompt logprobs, seeds, stop strings, the prefix cache.

use super::common::*;
use super::shapes::*;
use serde_json::{json, Value};

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
