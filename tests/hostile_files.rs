//! Crafted and damaged model files: each must give one clear error (naming the key and
//! its value), never a panic, an abort or an allocation the file cannot back. The GGUF
//! cases rewrite a real fixture with one metadata value or tensor changed.

use smith::infer::load_model;
use smith::io::gguf::{GgufFile, Value};
use smith::models::from_gguf::load_gguf_model;
use smith::Device;
use std::path::{Path, PathBuf};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("smith_hostile_{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

fn put_value(out: &mut Vec<u8>, v: &Value) {
    let (ty, body): (u32, Vec<u8>) = match v {
        Value::U8(x) => (0, vec![*x]),
        Value::I8(x) => (1, vec![*x as u8]),
        Value::U16(x) => (2, x.to_le_bytes().to_vec()),
        Value::I16(x) => (3, x.to_le_bytes().to_vec()),
        Value::U32(x) => (4, x.to_le_bytes().to_vec()),
        Value::I32(x) => (5, x.to_le_bytes().to_vec()),
        Value::F32(x) => (6, x.to_le_bytes().to_vec()),
        Value::Bool(x) => (7, vec![*x as u8]),
        Value::String(s) => {
            let mut b = (s.len() as u64).to_le_bytes().to_vec();
            b.extend(s.as_bytes());
            (8, b)
        }
        Value::Array(items) => {
            let mut b = Vec::new();
            let elem = items.first().map_or(4, type_id);
            b.extend(elem.to_le_bytes());
            b.extend((items.len() as u64).to_le_bytes());
            for it in items {
                let mut one = Vec::new();
                put_value(&mut one, it);
                b.extend(&one[4..]);
            }
            (9, b)
        }
        Value::U64(x) => (10, x.to_le_bytes().to_vec()),
        Value::I64(x) => (11, x.to_le_bytes().to_vec()),
        Value::F64(x) => (12, x.to_le_bytes().to_vec()),
    };
    out.extend(ty.to_le_bytes());
    out.extend(body);
}

fn type_id(v: &Value) -> u32 {
    let mut b = Vec::new();
    put_value(&mut b, v);
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

/// A tensor to write: name, smith-order shape, GGML type id, bytes.
type Entry = (String, Vec<usize>, u32, Vec<u8>);

/// Writes a GGUF v3 file with these metadata and tensors (alignment 32).
fn write_gguf(path: &Path, metadata: &[(String, Value)], tensors: &[Entry]) {
    let mut out = b"GGUF".to_vec();
    out.extend(3u32.to_le_bytes());
    out.extend((tensors.len() as u64).to_le_bytes());
    out.extend((metadata.len() as u64).to_le_bytes());
    for (k, v) in metadata {
        out.extend((k.len() as u64).to_le_bytes());
        out.extend(k.as_bytes());
        put_value(&mut out, v);
    }
    let mut offset = 0u64;
    for (name, shape, ty, bytes) in tensors {
        out.extend((name.len() as u64).to_le_bytes());
        out.extend(name.as_bytes());
        out.extend((shape.len() as u32).to_le_bytes());
        for d in shape.iter().rev() {
            out.extend((*d as u64).to_le_bytes());
        }
        out.extend(ty.to_le_bytes());
        out.extend(offset.to_le_bytes());
        offset += (bytes.len() as u64).div_ceil(32) * 32;
    }
    out.resize(out.len().div_ceil(32) * 32, 0);
    for (_, _, _, bytes) in tensors {
        out.extend(bytes);
        out.resize(out.len().div_ceil(32) * 32, 0);
    }
    std::fs::write(path, out).unwrap();
}

/// The fixture's metadata and tensors, for rewriting.
fn parts(name: &str) -> (Vec<(String, Value)>, Vec<Entry>) {
    let f = GgufFile::open(&fixture(&format!("gguf_models/{name}"))).unwrap();
    let tensors = f
        .tensors
        .iter()
        .map(|t| {
            let bytes = f.tensor_bytes(t).to_vec();
            (t.name.clone(), t.shape.clone(), t.ty.id(), bytes)
        })
        .collect();
    (f.metadata.clone(), tensors)
}

fn set(meta: &mut [(String, Value)], key: &str, v: Value) {
    let slot = meta.iter_mut().find(|(k, _)| k == key);
    slot.unwrap_or_else(|| panic!("fixture has no `{key}`")).1 = v;
}

/// Loads `path` and expects an error whose message holds every one of `words`.
fn expect_error(path: &Path, words: &[&str]) {
    let started = std::time::Instant::now();
    let e = match load_model(path, Device::Cpu) {
        Ok(_) => panic!("{} loaded, but should be refused", path.display()),
        Err(e) => e.to_string(),
    };
    for w in words {
        assert!(e.contains(w), "error `{e}` should mention `{w}`");
    }
    assert!(
        started.elapsed().as_secs() < 10,
        "took {:?}",
        started.elapsed()
    );
}

fn gguf_with(name: &str, key: &str, v: Value, out: &str) -> PathBuf {
    let (mut meta, tensors) = parts(name);
    set(&mut meta, key, v);
    let p = scratch(out);
    write_gguf(&p, &meta, &tensors);
    p
}

#[test]
fn rewritten_fixture_still_loads() {
    // The writer itself is faithful: the unchanged fixture loads and generates.
    let (meta, tensors) = parts("llama_f16.gguf");
    let p = scratch("same.gguf");
    write_gguf(&p, &meta, &tensors);
    let (model, _) = load_gguf_model(&p, Device::Cpu, smith::DType::F32).unwrap();
    assert!(smith::models::LanguageModel::vocab_size(&model) > 0);
}

#[test]
fn zero_heads_is_an_error_naming_the_key() {
    for (file, key) in [
        ("llama_f16.gguf", "llama.attention.head_count"),
        ("phi2_f16.gguf", "phi2.attention.head_count"),
        ("gpt2_f16.gguf", "gpt2.attention.head_count"),
    ] {
        let p = gguf_with(file, key, Value::U32(0), "heads0.gguf");
        expect_error(&p, &[key, "= 0"]);
    }
}

#[test]
fn claimed_sizes_must_match_the_tensors() {
    let p = gguf_with(
        "llama_f16.gguf",
        "llama.block_count",
        Value::U32(100_000),
        "blocks.gguf",
    );
    expect_error(&p, &["llama.block_count", "100000"]);
    let p = gguf_with(
        "gpt2_f16.gguf",
        "gpt2.embedding_length",
        Value::U64(1 << 63),
        "embd.gguf",
    );
    expect_error(&p, &["gpt2.embedding_length"]);
    let p = gguf_with(
        "gpt2_f16.gguf",
        "gpt2.context_length",
        Value::U64(1 << 63),
        "ctx.gguf",
    );
    expect_error(&p, &["gpt2.context_length"]);
    let p = gguf_with(
        "llama_f16.gguf",
        "llama.feed_forward_length",
        Value::U32(1 << 30),
        "ffn.gguf",
    );
    expect_error(&p, &["llama.feed_forward_length"]);
}

#[test]
fn a_huge_context_claim_allocates_only_what_generation_needs() {
    for ctx in [1u64 << 40, 1 << 63] {
        let p = gguf_with(
            "llama_f16.gguf",
            "llama.context_length",
            Value::U64(ctx),
            "bigctx.gguf",
        );
        let (model, _) = load_gguf_model(&p, Device::Cpu, smith::DType::F32).unwrap();
        let prompt = vec![1, 2];
        let out = smith::infer::generate::generate(
            &model,
            &prompt,
            3,
            &smith::infer::generate::Sampling {
                temperature: 0.0,
                ..Default::default()
            },
            &mut smith::Rng::new(0),
            Device::Cpu,
            |_| Ok(true),
        )
        .unwrap();
        assert_eq!(out.len(), 3);
    }
}

#[test]
fn an_empty_output_head_is_an_error() {
    let (meta, mut tensors) = parts("llama_f16.gguf");
    let head = tensors.iter_mut().find(|t| t.0 == "output.weight");
    let Some(head) = head else {
        return; // a tied fixture: the embedding case below covers it
    };
    head.1[0] = 0;
    head.3.clear();
    let p = scratch("nohead.gguf");
    write_gguf(&p, &meta, &tensors);
    expect_error(&p, &["output.weight"]);
}

#[test]
fn duplicate_metadata_keys_are_refused() {
    let (mut meta, tensors) = parts("llama_f16.gguf");
    let first = meta[1].clone();
    meta.push(first.clone());
    let p = scratch("dup.gguf");
    write_gguf(&p, &meta, &tensors);
    let e = GgufFile::open(&p)
        .err()
        .expect("a duplicate key is an error");
    assert!(e.to_string().contains(&first.0), "{e}");
}

#[test]
fn non_finite_weights_are_refused() {
    let (meta, mut tensors) = parts("llama_f16.gguf");
    let norm = tensors
        .iter_mut()
        .find(|t| t.0 == "output_norm.weight")
        .unwrap();
    // F32 or F16: set the first element to NaN either way.
    match norm.2 {
        0 => norm.3[..4].copy_from_slice(&f32::NAN.to_le_bytes()),
        1 => norm.3[..2].copy_from_slice(&[0x00, 0x7e]),
        t => panic!("unexpected norm type {t}"),
    }
    let p = scratch("nan.gguf");
    write_gguf(&p, &meta, &tensors);
    expect_error(&p, &["NaN"]);
}

#[test]
fn non_finite_quantized_scales_are_refused() {
    for (file, ty) in [("llama_q8_0.gguf", 8), ("llama_q4_0.gguf", 2)] {
        let (meta, mut tensors) = parts(file);
        let t = tensors
            .iter_mut()
            .find(|t| t.0 == "blk.0.attn_q.weight")
            .unwrap();
        assert_eq!(t.2, ty, "{file}: blk.0.attn_q.weight type");
        // The f16 scale `d` leads every block of these types; the third block's becomes NaN.
        let block = if ty == 8 { 34 } else { 18 };
        t.3[2 * block..2 * block + 2].copy_from_slice(&[0x00, 0x7e]);
        let p = scratch(&format!("nan_scale_{file}"));
        write_gguf(&p, &meta, &tensors);
        expect_error(&p, &["blk.0.attn_q.weight", "block 2", "NaN"]);
    }
}

/// A copy of the Hugging Face GPT-2 fixture folder with `config.json` edited by `edit`.
fn hf_with(edit: impl FnOnce(&mut serde_json::Value), name: &str) -> PathBuf {
    let src = fixture("hf_gpt2");
    let dir = scratch(name);
    std::fs::create_dir_all(&dir).unwrap();
    for f in ["model.safetensors", "tokenizer.json"] {
        if src.join(f).exists() {
            std::fs::copy(src.join(f), dir.join(f)).unwrap();
        }
    }
    let text = std::fs::read_to_string(src.join("config.json")).unwrap();
    let mut cfg: serde_json::Value = serde_json::from_str(&text).unwrap();
    edit(&mut cfg);
    std::fs::write(dir.join("config.json"), cfg.to_string()).unwrap();
    dir
}

#[test]
fn hf_config_sizes_are_checked_before_building() {
    let dir = hf_with(|c| c["vocab_size"] = 1_000_000_000.into(), "hf_vocab");
    expect_error(&dir, &["vocab_size", "1000000000"]);
    let dir = hf_with(|c| c["n_embd"] = (1u64 << 63).into(), "hf_embd");
    expect_error(&dir, &["n_embd"]);
    let dir = hf_with(|c| c["n_layer"] = 1_000_000.into(), "hf_layers");
    expect_error(&dir, &["n_layer", "1000000"]);
    let dir = hf_with(|c| c["n_head"] = "twelve".into(), "hf_type");
    let e = load_model(&dir, Device::Cpu).err().unwrap().to_string();
    assert!(
        e.contains("invalid type") && e.contains("`n_head`") && !e.contains("field `model`"),
        "{e}"
    );
}

#[test]
fn a_checkpoint_claiming_more_layers_than_it_holds_is_refused() {
    use smith::train::{TrainConfig, Trainer};
    let cfg = TrainConfig {
        steps: 1,
        batch_size: 2,
        seq_len: 8,
        layers: 1,
        heads: 2,
        dim: 16,
        eval_batches: 1,
        ..TrainConfig::default()
    };
    let text = "the quick brown fox jumps over the lazy dog. ".repeat(20);
    let mut t = Trainer::new(cfg, &text, Device::Cpu).unwrap();
    t.train_step().unwrap();
    let dir = scratch("ckpt_layers");
    let set = t.save(&dir).unwrap();
    let path = set.join("config.json");
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    v["model"]["n_layer"] = 1_000_000.into();
    std::fs::write(&path, v.to_string()).unwrap();
    expect_error(&dir, &["model.n_layer", "1000000"]);
    // A stored config that a fresh run would refuse is refused on resume too.
    v["model"]["n_layer"] = 1.into();
    v["train"]["eval_interval"] = 0.into();
    std::fs::write(&path, v.to_string()).unwrap();
    let e = Trainer::resume(&dir, smith::train::Corpus::Text(&text), None, Device::Cpu)
        .err()
        .unwrap();
    assert!(e.to_string().contains("eval interval"), "{e}");
    // A value of the wrong type is named by its path in the file.
    v["train"]["eval_interval"] = "often".into();
    std::fs::write(&path, v.to_string()).unwrap();
    let e = Trainer::resume(&dir, smith::train::Corpus::Text(&text), None, Device::Cpu)
        .err()
        .unwrap();
    assert!(e.to_string().contains("`train.eval_interval`"), "{e}");
}

#[test]
fn integer_weights_are_refused() {
    let dir = scratch("int_weights");
    std::fs::create_dir_all(&dir).unwrap();
    let src = fixture("hf_gpt2");
    std::fs::copy(src.join("config.json"), dir.join("config.json")).unwrap();
    let mut w = smith::io::load_safetensors(&src.join("model.safetensors")).unwrap();
    let key = w
        .keys()
        .find(|k| k.ends_with("ln_f.weight"))
        .unwrap()
        .clone();
    let t = w[&key].to_dtype(smith::DType::I64).unwrap();
    w.insert(key, t);
    let list: Vec<(String, smith::Tensor)> = w.into_iter().collect();
    smith::io::save_safetensors(&dir.join("model.safetensors"), &list).unwrap();
    expect_error(&dir, &["ln_f.weight", "integers"]);
}
