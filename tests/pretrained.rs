//! Pretrained models on the CPU: Hugging Face GPT-2 folders against transformers'
//! reference outputs (fixtures from tools/make_hf_fixtures.py), the KV cache against the
//! full forward pass, and perplexity.

mod common;

use smith::infer::generate::generate_uncached;
use smith::infer::{load_model, perplexity};
use smith::io::{load_safetensors, save_safetensors};
use smith::models::{load_hf_gpt2, save_hf_gpt2, Gpt, GptConfig};
use smith::{DType, Device, Rng, Tensor};
use std::path::{Path, PathBuf};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/hf_gpt2")
        .join(name)
}

fn read_json(name: &str) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(fixture(name)).unwrap()).unwrap()
}

fn ids_of(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

/// smith's logits for the fixture's ids against transformers', relative error.
pub fn logits_error(dir: &Path, device: Device) -> f64 {
    let model = load_hf_gpt2(dir, device).unwrap();
    let refs = load_safetensors(&fixture("logits.safetensors")).unwrap();
    let ids = refs["ids"].to_device(device).unwrap();
    let got = model.forward(&ids, None).unwrap().to_vec_f64().unwrap();
    let want = refs["logits"].to_vec_f64().unwrap();
    common::rel_err(&got, &want)
}

#[test]
fn hf_gpt2_logits_match_transformers_with_and_without_prefix() {
    for dir in [fixture(""), fixture("bare")] {
        let err = logits_error(&dir, Device::Cpu);
        eprintln!("{}: relative error {err:.1e}", dir.display());
        assert!(err < 1e-4, "{}: {err:e}", dir.display());
    }
}

#[test]
fn hf_gpt2_greedy_tokens_match_transformers() {
    let model = load_hf_gpt2(&fixture(""), Device::Cpu).unwrap();
    let refs = read_json("greedy.json");
    let (prompt, want) = (ids_of(&refs["prompt"]), ids_of(&refs["tokens"]));
    let got = common::greedy(&model, &[prompt], want.len(), &[], Device::Cpu).unwrap();
    assert_eq!(got[0], want);
}

#[test]
fn hf_gpt2_perplexity_matches_transformers() {
    let model = load_hf_gpt2(&fixture(""), Device::Cpu).unwrap();
    let refs = read_json("perplexity.json");
    let ids = ids_of(&refs["ids"]);
    let ctx = refs["ctx"].as_u64().unwrap() as usize;
    let stride = refs["stride"].as_u64().unwrap() as usize;
    let (ppl, n) = perplexity(&model, &ids, ctx, stride, Device::Cpu).unwrap();
    let want = refs["perplexity"].as_f64().unwrap();
    eprintln!("perplexity {ppl} vs {want} over {n} tokens");
    assert_eq!(n as u64, refs["tokens"].as_u64().unwrap());
    assert!((ppl - want).abs() / want < 1e-3, "{ppl} vs {want}");
}

fn small_gpt(block: usize) -> Gpt {
    let cfg = GptConfig {
        vocab_size: 50,
        block_size: block,
        n_layer: 2,
        n_head: 4,
        n_embd: 32,
        dropout: 0.0,
    };
    let model = Gpt::new(cfg, &mut Rng::new(3), Device::Cpu).unwrap();
    // Spread the weights so the logits are far from uniform.
    for p in model.params() {
        let noisy = Tensor::randn(
            p.tensor.shape(),
            0.0,
            0.3,
            DType::F32,
            Device::Cpu,
            &mut Rng::new(p.name.len() as u64),
        )
        .unwrap();
        p.tensor.assign(&noisy).unwrap();
    }
    model
}

#[test]
fn kv_cache_gives_the_full_forward_logits() {
    let _g = smith::no_grad();
    let model = small_gpt(32);
    let ids: Vec<i64> = (0..20).map(|i| (i * 7 % 50) as i64).collect();
    let full = model
        .forward(
            &Tensor::from_vec(ids.clone(), &[1, 20], Device::Cpu).unwrap(),
            None,
        )
        .unwrap();
    let mut caches = model.new_caches(1, 32).unwrap();
    // Prefill 12 positions, then one at a time.
    let mut pos = 0;
    for chunk in [12usize, 1, 1, 1, 1, 1, 1, 1, 1] {
        let x = Tensor::from_vec(ids[pos..pos + chunk].to_vec(), &[1, chunk], Device::Cpu).unwrap();
        let got = model
            .forward_cached(&x, &mut caches)
            .unwrap()
            .to_vec_f64()
            .unwrap();
        pos += chunk;
        let want = full.narrow(1, pos - 1, 1).unwrap().to_vec_f64().unwrap();
        let err = common::rel_err(&got, &want);
        assert!(err < 1e-5, "position {pos}: {err:e}");
    }
    // Past the cache's capacity is an error, not a panic.
    let x = Tensor::from_vec(vec![1i64; 13], &[1, 13], Device::Cpu).unwrap();
    assert!(model.forward_cached(&x, &mut caches).is_err());
}

#[test]
fn cached_greedy_generation_equals_uncached_even_past_the_context() {
    let model = small_gpt(16);
    let prompt: Vec<u32> = vec![3, 14, 15, 9, 2];
    // 30 new tokens run past the 16-position context: the cache is rebuilt from the latest
    // half, so compare only the stretch before that happens.
    let cached = common::greedy(
        &model,
        &[prompt.clone(), vec![1, 2, 3, 4, 5]],
        11,
        &[],
        Device::Cpu,
    )
    .unwrap();
    assert_eq!(
        cached[0],
        generate_uncached(&model, &prompt, 11, Device::Cpu).unwrap()
    );
    assert_eq!(
        cached[1],
        generate_uncached(&model, &[1, 2, 3, 4, 5], 11, Device::Cpu).unwrap()
    );
    let long = common::greedy(&model, &[prompt], 30, &[], Device::Cpu).unwrap();
    assert_eq!(long[0].len(), 30);
    // A stop id ends a row (and is kept); the callback can end it too.
    let first = cached[0][0];
    let stopped =
        common::greedy(&model, &[vec![3, 14, 15, 9, 2]], 11, &[first], Device::Cpu).unwrap();
    assert_eq!(stopped[0], vec![first]);
    // Stops inside a run of device-side greedy steps, one row at a time, past a cache
    // rebuild: each row is the unstopped continuation cut after its first stop id.
    let prompts = [vec![3, 14, 15, 9, 2], vec![1, 2, 3, 4, 5]];
    let free = common::greedy(&model, &prompts, 23, &[], Device::Cpu).unwrap();
    let stop = free[0][6];
    let cut = common::greedy(&model, &prompts, 23, &[stop], Device::Cpu).unwrap();
    for (row, (f, c)) in free.iter().zip(&cut).enumerate() {
        let end = f.iter().position(|&t| t == stop).map_or(f.len(), |i| i + 1);
        assert_eq!(c[..], f[..end], "row {row}");
    }
    // Prompts of different lengths in one batch, or ids outside the vocabulary, are errors.
    let run = |prompts: &[Vec<u32>]| common::greedy(&model, prompts, 3, &[], Device::Cpu);
    assert!(run(&[vec![1, 2], vec![1]]).is_err());
    assert!(run(&[vec![1, 50]]).is_err());
}

#[test]
fn hf_gpt2_export_round_trips_and_bad_folders_are_errors() {
    let model = load_hf_gpt2(&fixture(""), Device::Cpu).unwrap();
    let dir = std::env::temp_dir().join(format!("smith_hf_export_{}", std::process::id()));
    save_hf_gpt2(&model, &dir, None).unwrap();
    // The exported folder reloads to the same weights (and so the same logits).
    let err = logits_error(&dir, Device::Cpu);
    assert!(err < 1e-6, "{err:e}");
    let exported = load_safetensors(&dir.join("model.safetensors")).unwrap();
    let original = load_safetensors(&fixture("model.safetensors")).unwrap();
    for (name, t) in &original {
        if name.ends_with(".attn.bias") || name.ends_with("masked_bias") {
            continue;
        }
        let e = &exported[name];
        assert_eq!(e.shape(), t.shape(), "{name}");
        assert_eq!(e.to_vec_f64().unwrap(), t.to_vec_f64().unwrap(), "{name}");
    }
    // An untied head, a missing tensor, an unknown tensor: each an error naming it.
    let mut tensors: Vec<(String, Tensor)> = original.into_iter().collect();
    let wte = tensors
        .iter()
        .find(|(n, _)| n == "transformer.wte.weight")
        .unwrap()
        .1
        .clone();
    let with = |extra: Vec<(String, Tensor)>, drop: &str| -> String {
        let mut t: Vec<(String, Tensor)> =
            tensors.iter().filter(|(n, _)| n != drop).cloned().collect();
        t.extend(extra);
        save_safetensors(&dir.join("model.safetensors"), &t).unwrap();
        match load_hf_gpt2(&dir, Device::Cpu) {
            Ok(_) => String::new(),
            Err(e) => e.to_string(),
        }
    };
    let head = wte.affine(2.0, 0.0).unwrap();
    assert!(with(vec![("lm_head.weight".into(), head)], "").contains("untied"));
    assert!(with(vec![], "transformer.h.1.mlp.c_fc.weight").contains("h.1.mlp.fc.weight"));
    assert!(with(vec![("transformer.h.0.extra".into(), wte.clone())], "").contains("h.0.extra"));
    tensors.clear();
    // A config smith cannot represent.
    std::fs::write(
        dir.join("config.json"),
        r#"{"model_type":"gpt2","vocab_size":10,"n_positions":8,"n_embd":8,"n_layer":1,"n_head":2,"activation_function":"relu"}"#,
    )
    .unwrap();
    let err = load_model(&dir, Device::Cpu).err().unwrap().to_string();
    assert!(err.contains("relu") || err.contains("config"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn perplexity_of_one_window_is_the_mean_loss() {
    let model = small_gpt(32);
    let ids: Vec<u32> = (0..30).map(|i| (i * 11 % 50) as u32).collect();
    let (ppl, n) = perplexity(&model, &ids, 32, 32, Device::Cpu).unwrap();
    assert_eq!(n, 29);
    let x: Vec<i64> = ids[..29].iter().map(|&t| t as i64).collect();
    let y: Vec<i64> = ids[1..].iter().map(|&t| t as i64).collect();
    let _g = smith::no_grad();
    let loss = model
        .loss(
            &Tensor::from_vec(x, &[1, 29], Device::Cpu).unwrap(),
            &Tensor::from_vec(y, &[1, 29], Device::Cpu).unwrap(),
            None,
        )
        .unwrap()
        .to_scalar()
        .unwrap();
    assert!((ppl.ln() - loss).abs() < 1e-6, "{} vs {loss}", ppl.ln());
    // Strided windows score every token once.
    let (_, n) = perplexity(&model, &ids, 10, 4, Device::Cpu).unwrap();
    assert_eq!(n, 29);
    assert!(perplexity(&model, &ids, 10, 11, Device::Cpu).is_err());
    assert!(perplexity(&model, &ids[..1], 10, 5, Device::Cpu).is_err());
}

/// A byte-level BPE `tokenizer.json` with no merges (one token per byte): multi-byte
/// characters span several tokens, and streaming must hold them back until complete.
#[test]
fn streaming_decoder_never_emits_broken_utf8() {
    use smith::text::tokenizer::{StreamDecoder, TextTokenizer};
    use tokenizers::pre_tokenizers::byte_level::ByteLevel;
    let mut alphabet: Vec<char> = ByteLevel::alphabet().into_iter().collect();
    alphabet.sort();
    let vocab: serde_json::Map<String, serde_json::Value> = alphabet
        .iter()
        .enumerate()
        .map(|(i, c)| (c.to_string(), serde_json::json!(i)))
        .collect();
    let byte_level = serde_json::json!({
        "type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true
    });
    let json = serde_json::json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": [],
        "normalizer": null, "pre_tokenizer": byte_level, "post_processor": null,
        "decoder": byte_level,
        "model": {"type": "BPE", "dropout": null, "unk_token": null,
                  "continuing_subword_prefix": null, "end_of_word_suffix": null,
                  "fuse_unk": false, "byte_fallback": false, "vocab": vocab, "merges": []}
    });
    let path = std::env::temp_dir().join(format!("smith_tok_{}.json", std::process::id()));
    std::fs::write(&path, json.to_string()).unwrap();
    let tok = TextTokenizer::from_file(&path).unwrap();
    std::fs::remove_file(&path).ok();
    let text = "héllo wörld, 東京 🙂";
    let ids = tok.encode(text, false).unwrap();
    assert_eq!(ids.len(), text.len(), "one token per byte");
    assert_eq!(tok.decode(&ids).unwrap(), text);
    let mut stream = StreamDecoder::default();
    let mut out = String::new();
    for &id in &ids {
        let piece = stream.push(&tok, id).unwrap();
        assert!(
            !piece.contains('\u{FFFD}'),
            "broken UTF-8 emitted: {piece:?}"
        );
        out.push_str(&piece);
    }
    assert_eq!(out, text);
    assert!(TextTokenizer::from_file(Path::new("/nonexistent/tokenizer.json")).is_err());
}

/// A model cast to bf16 or f16 for inference gives logits close to the f32 model's, and
/// its KV cache runs in that dtype.
#[test]
fn half_precision_inference_follows_f32() {
    let _g = smith::no_grad();
    let model = load_hf_gpt2(&fixture(""), Device::Cpu).unwrap();
    let refs = load_safetensors(&fixture("logits.safetensors")).unwrap();
    let want = refs["logits"].to_vec_f64().unwrap();
    for dtype in [DType::BF16, DType::F16] {
        let half = model.to_dtype(dtype).unwrap();
        let got = half.forward(&refs["ids"], None).unwrap();
        assert_eq!(got.dtype(), dtype);
        let err = common::rel_err(&got.to_vec_f64().unwrap(), &want);
        eprintln!("{dtype} logits: relative error {err:.1e}");
        assert!(err < 5e-2, "{dtype}: {err:e}");
        let out = common::greedy(&half, &[vec![1, 2, 3]], 5, &[], Device::Cpu).unwrap();
        assert_eq!(out[0].len(), 5);
    }
}
