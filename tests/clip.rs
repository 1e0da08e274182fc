//! CLIP against transformers (fixtures from tools/make_clip_fixtures.py, run with
//! transformers 5 in f32): two small `CLIPModel`s saved whole (QuickGELU with the old
//! end-of-text id, and GELU with a real one and `position_ids` buffers in the file) give
//! transformers' projected features, embeddings and logits on padded text batches, on the
//! CPU and the GPU; CLIP's tokenizer (built from OpenAI's vocabulary by
//! tools/fetch_clip_vocab.sh) gives transformers' ids for a few hundred strings; the
//! photos preprocess to `CLIPImageProcessor`'s pixels; `smith embed` prints and writes
//! embeddings and zero-shot probabilities; bad folders and inputs are clear errors.
//! With `SMITH_CLIP_B32=DIR` (a folder the fixture script wrote with `--b32`), the ViT-B/32
//! shapes too.

mod common;

use common::devices::*;
use common::{photo_dir, photos_missing};
use smith::infer::ClipEmbedder;
use smith::io::load_safetensors;
use smith::models::clip::{l2_normalize, pool_position, Clip};
use smith::text::ClipTokenizer;
use smith::vision::{read_image, ClipPreprocess};
use smith::{DType, Device, Tensor};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

fn main() {
    let vocab = vocab_missing();
    let photos = photos_missing();
    let b32 = std::env::var_os("SMITH_CLIP_B32").map_or_else(
        || Some("SMITH_CLIP_B32 names no folder (tools/make_clip_fixtures.py --b32 DIR)".into()),
        |_| None,
    );
    common::run_suite(vec![
        ("tiny_models_match_transformers_on_cpu", tiny_cpu, None),
        (
            "tiny_models_match_transformers_on_gpu",
            tiny_gpu,
            needs_gpu(),
        ),
        ("pooling_picks_the_end_of_text", pooling, None),
        ("tokenization_matches_transformers", tokenization, vocab),
        (
            "photos_preprocess_like_clip_image_processor",
            photos_pre,
            photos.clone(),
        ),
        ("smith_embed_prints_and_writes", smith_embed, photos),
        ("bad_folders_and_inputs_are_clear_errors", bad_inputs, None),
        ("vit_b32_matches_transformers", vit_b32, b32),
    ]);
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/clip")
        .join(name)
}

fn vocab_dir() -> PathBuf {
    std::env::var_os("SMITH_CLIP_VOCAB")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/clip-vocab"))
}

/// Why the tokenizer test cannot run (`SMITH_REQUIRE_CLIP_VOCAB` makes it a failure).
fn vocab_missing() -> Option<String> {
    if vocab_dir().join("tokenizer.json").exists() {
        return None;
    }
    assert!(
        std::env::var_os("SMITH_REQUIRE_CLIP_VOCAB").is_none(),
        "SMITH_REQUIRE_CLIP_VOCAB is set but {} has no tokenizer.json (bash tools/fetch_clip_vocab.sh)",
        vocab_dir().display()
    );
    Some(format!(
        "no CLIP vocabulary in {} (bash tools/fetch_clip_vocab.sh)",
        vocab_dir().display()
    ))
}

fn smith_bin() -> PathBuf {
    std::env::var_os("SMITH_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_smith").into())
}

fn values(t: &Tensor) -> Vec<f64> {
    t.to_dtype(DType::F64).unwrap().to_vec_f64().unwrap()
}

/// Token rows of an i64 `[B, T]` tensor.
fn id_rows(t: &Tensor) -> Vec<Vec<u32>> {
    let t_len = t.shape()[1];
    values(t)
        .chunks(t_len)
        .map(|r| r.iter().map(|&v| v as u32).collect())
        .collect()
}

/// Every output of `model` on the reference's inputs against the reference.
fn compare(model: &Clip, reference: &HashMap<String, Tensor>, tol: f64, what: &str) {
    let pixels = &reference["pixel_values"];
    let ids = id_rows(&reference["input_ids"]);
    let image = model.image_features(pixels).unwrap();
    let text = model.text_features(&ids).unwrap();
    let (ie, te) = (l2_normalize(&image).unwrap(), l2_normalize(&text).unwrap());
    let logits = model.logits(&ie, &te).unwrap();
    for (name, got) in [
        ("image_features", &image),
        ("text_features", &text),
        ("image_embeds", &ie),
        ("text_embeds", &te),
        ("logits_per_image", &logits),
    ] {
        let want = &reference[name];
        assert_eq!(got.shape(), want.shape(), "{what}: {name}");
        let err = rel_err(&values(got), &values(want));
        eprintln!("{what}: {name} rel err {err:.2e}");
        assert!(err < tol, "{what}: {name} rel err {err:e} above {tol:e}");
    }
}

fn tiny_cpu() {
    for name in ["tiny_quick", "tiny_gelu"] {
        let dir = fixture(name);
        let reference = load_safetensors(&dir.join("reference.safetensors")).unwrap();
        let model = Clip::load(&dir, Device::Cpu, DType::F32).unwrap();
        compare(&model, &reference, 1e-5, &format!("{name} cpu f32"));
    }
}

fn tiny_gpu() {
    let (dev, _lock) = require_gpu();
    let _exact = exact_f32();
    for name in ["tiny_quick", "tiny_gelu"] {
        let dir = fixture(name);
        let reference = load_safetensors(&dir.join("reference.safetensors")).unwrap();
        let model = Clip::load(&dir, dev, DType::F32).unwrap();
        compare(&model, &reference, 1e-5, &format!("{name} gpu f32"));
        for dtype in [DType::F16, DType::BF16] {
            let model = Clip::load(&dir, dev, dtype).unwrap();
            compare(&model, &reference, 3e-2, &format!("{name} gpu {dtype:?}"));
        }
    }
}

fn pooling() {
    // A real end-of-text id: its first occurrence, whatever follows.
    assert_eq!(pool_position(&[49406, 320, 49407, 49407], 49407), 2);
    assert_eq!(pool_position(&[49406, 320, 1, 49407, 1], 49407), 3);
    // The old id 2: the first largest id, as transformers' argmax.
    assert_eq!(pool_position(&[49406, 320, 49407, 49407], 2), 2);
    assert_eq!(pool_position(&[5, 9, 7, 9], 2), 1);
    // No end-of-text id: position 0, as argmax of all-false gives.
    assert_eq!(pool_position(&[49406, 320, 321], 49407), 0);
}

#[derive(serde::Deserialize)]
struct Tokenization {
    texts: Vec<String>,
    ids: Vec<Vec<u32>>,
}

fn tokenization() {
    let doc: Tokenization =
        serde_json::from_slice(&std::fs::read(fixture("tokenization.json")).unwrap()).unwrap();
    assert!(doc.texts.len() >= 200, "{} strings", doc.texts.len());
    let tok = ClipTokenizer::from_file(&vocab_dir().join("tokenizer.json"), 77, 1).unwrap();
    let mut cut = 0;
    for (text, want) in doc.texts.iter().zip(&doc.ids) {
        let (got, truncated) = tok.encode(text).unwrap();
        assert_eq!(&got, want, "{text:?}");
        assert_eq!(got.first(), Some(&49406), "{text:?} starts with BOS");
        assert_eq!(got.last(), Some(&49407), "{text:?} ends with EOS");
        cut += usize::from(truncated);
        if truncated {
            assert_eq!(got.len(), 77, "{text:?} was cut to the context");
        }
    }
    assert!(cut >= 3, "only {cut} texts were long enough to truncate");
    // A batch pads every row to the longest with <|endoftext|>.
    let batch = tok
        .batch(&["a cat".to_string(), "a photo of a dog".to_string()])
        .unwrap();
    assert_eq!(batch.ids[0].len(), batch.ids[1].len());
    // BOS, "a", "cat", EOS, then three pads.
    assert_eq!(batch.ids[0][3..], [49407; 4]);
    assert!(batch.truncated.is_empty());
}

fn photos_pre() {
    let levels = load_safetensors(&fixture("photos.safetensors")).unwrap();
    let want = values(&levels["levels"]);
    let rows = values(&levels["pixel_rows"]);
    let pre = ClipPreprocess::new(224);
    let plane = 224 * 224;
    for (i, name) in ["chelsea.png", "coffee.png", "astronaut.png", "rocket.jpg"]
        .iter()
        .enumerate()
    {
        let img = read_image(&photo_dir().join(name)).unwrap();
        let crop = pre.crop_image(&img).unwrap();
        assert_eq!((crop.width, crop.height), (224, 224));
        let ours = &want[i * 3 * plane..(i + 1) * 3 * plane];
        let mut worst = 0.0f64;
        let mut off = 0usize;
        for (p, px) in crop.data.chunks_exact(3).enumerate() {
            for c in 0..3 {
                let d = (f64::from(px[c]) - ours[c * plane + p]).abs();
                worst = worst.max(d);
                off += usize::from(d > 0.0);
            }
        }
        eprintln!(
            "{name}: {off} of {} levels differ, by at most {worst}",
            3 * plane
        );
        // PNGs decode identically: the resize and crop must match level for level (one
        // level where Pillow takes the other pass order); JPEG decoders differ a little.
        let limit = if name.ends_with(".png") { 1.0 } else { 2.0 };
        assert!(worst <= limit, "{name}: levels differ by {worst}");
        if i == 0 {
            let px = pre.apply(&img).unwrap();
            for c in 0..3 {
                for j in 0..8 * 224 {
                    let (g, w) = (f64::from(px[c * plane + j]), rows[c * 8 * 224 + j]);
                    assert!((g - w).abs() < 2e-2, "{name}: pixel {c},{j}: {g} vs {w}");
                }
            }
        }
    }
}

/// A folder holding `tiny_quick` and a small word-level tokenizer whose ids it knows.
fn tiny_folder_with_tokenizer() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("smith_clip_cli_{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(fixture("tiny_quick").join(f), dir.join(f)).unwrap();
    }
    let vocab = serde_json::json!({
        "[UNK]": 0, "a": 3, "photo": 4, "of": 5, "cat": 6, "dog": 7, "rocket": 8,
        "<|startoftext|>": 510, "<|endoftext|>": 511
    });
    let tok = serde_json::json!({
        "version": "1.0",
        "added_tokens": [
            {"id": 510, "content": "<|startoftext|>", "single_word": false, "lstrip": false,
             "rstrip": false, "normalized": false, "special": true},
            {"id": 511, "content": "<|endoftext|>", "single_word": false, "lstrip": false,
             "rstrip": false, "normalized": false, "special": true}
        ],
        "normalizer": {"type": "Lowercase"},
        "pre_tokenizer": {"type": "Whitespace"},
        "post_processor": {"type": "RobertaProcessing", "sep": ["<|endoftext|>", 511],
                           "cls": ["<|startoftext|>", 510], "trim_offsets": false,
                           "add_prefix_space": false},
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "[UNK]"}
    });
    std::fs::write(dir.join("tokenizer.json"), tok.to_string()).unwrap();
    dir
}

fn smith_embed() {
    let dir = tiny_folder_with_tokenizer();
    let images = [
        photo_dir().join("chelsea.png"),
        photo_dir().join("rocket.jpg"),
    ];
    let labels = "a photo of a cat,a photo of a dog,a rocket";
    let run = |extra: &[&str]| {
        let out = std::process::Command::new(smith_bin())
            .args(["embed", "--device", "cpu", "--model"])
            .arg(&dir)
            .arg("--image")
            .args(&images)
            .args(extra)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            out.status.success(),
            "{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    };
    // The library on the same inputs.
    let embedder = ClipEmbedder::load(&dir, Device::Cpu, DType::F32).unwrap();
    let decoded: Vec<_> = images.iter().map(|p| read_image(p).unwrap()).collect();
    let ie = embedder.embed_images(&decoded).unwrap();
    let texts: Vec<String> = labels.split(',').map(String::from).collect();
    let te = embedder.embed_texts(&texts).unwrap().embeds;
    let probs = values(&embedder.probabilities(&ie, &te).unwrap());
    for row in probs.chunks(3) {
        assert!((row.iter().sum::<f64>() - 1.0).abs() < 1e-5);
    }
    // Printed: each image's probabilities over the labels, most probable first.
    let stdout = run(&["--labels", labels]);
    for (i, img) in images.iter().enumerate() {
        let at = stdout.rfind(&img.display().to_string()).unwrap();
        let best = (0..3)
            .max_by(|&a, &b| probs[i * 3 + a].total_cmp(&probs[i * 3 + b]))
            .unwrap();
        let first = stdout[at..].lines().nth(1).unwrap();
        assert!(
            first.contains(&texts[best]) && first.contains('%'),
            "{first:?} should name {:?}\n{stdout}",
            texts[best]
        );
    }
    // Written: the same embeddings, as JSON and as safetensors.
    let json = dir.join("out.json");
    run(&["--text", "a cat", "--output", json.to_str().unwrap()]);
    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let first: Vec<f64> = doc["image_embeds"][1]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    let d = ie.shape()[1];
    assert!(rel_err(&first, &values(&ie)[d..]) < 1e-6);
    assert_eq!(doc["texts"][0], "a cat");
    let st = dir.join("out.safetensors");
    run(&["--text", "a cat", "--output", st.to_str().unwrap()]);
    let back = load_safetensors(&st).unwrap();
    assert!(rel_err(&values(&back["image_embeds"]), &values(&ie)) < 1e-6);
    assert_eq!(back["text_embeds"].shape(), [1, d]);
    std::fs::remove_dir_all(&dir).ok();
}

fn expect_err<T>(r: smith::Result<T>, needle: &str) {
    match r {
        Ok(_) => panic!("expected an error mentioning {needle:?}"),
        Err(e) => {
            let msg = e.to_string();
            assert!(msg.contains(needle), "{msg:?} should mention {needle:?}");
        }
    }
}

fn bad_inputs() {
    let tmp = std::env::temp_dir().join(format!("smith_clip_bad_{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    // A folder without weights.
    std::fs::copy(fixture("tiny_gelu/config.json"), tmp.join("config.json")).unwrap();
    expect_err(
        Clip::load(&tmp, Device::Cpu, DType::F32),
        "model.safetensors",
    );
    // A tensor of the wrong shape is named.
    let mut w = load_safetensors(&fixture("tiny_gelu/model.safetensors")).unwrap();
    w.insert(
        "text_projection.weight".into(),
        Tensor::zeros(&[3, 3], DType::F32, Device::Cpu).unwrap(),
    );
    let named: Vec<(String, Tensor)> = w.into_iter().collect();
    smith::io::save_safetensors(&tmp.join("model.safetensors"), &named).unwrap();
    expect_err(
        Clip::load(&tmp, Device::Cpu, DType::F32),
        "text_projection.weight",
    );
    // A missing tensor is named.
    let named: Vec<(String, Tensor)> = named
        .into_iter()
        .filter(|(n, _)| n != "text_projection.weight")
        .collect();
    smith::io::save_safetensors(&tmp.join("model.safetensors"), &named).unwrap();
    expect_err(
        Clip::load(&tmp, Device::Cpu, DType::F32),
        "text_projection.weight",
    );
    // A config that cannot be a CLIP: heads that do not split the width.
    let mut cfg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fixture("tiny_gelu/config.json")).unwrap()).unwrap();
    cfg["vision_config"]["num_attention_heads"] = 5.into();
    std::fs::write(tmp.join("config.json"), cfg.to_string()).unwrap();
    expect_err(
        Clip::load(&tmp, Device::Cpu, DType::F32),
        "num_attention_heads",
    );
    cfg["vision_config"]["num_attention_heads"] = 2.into();
    cfg["text_config"]["hidden_act"] = "swish".into();
    std::fs::write(tmp.join("config.json"), cfg.to_string()).unwrap();
    expect_err(Clip::load(&tmp, Device::Cpu, DType::F32), "hidden_act");
    // Inputs the model cannot take.
    let model = Clip::load(&fixture("tiny_gelu"), Device::Cpu, DType::F32).unwrap();
    let wrong = Tensor::zeros(&[1, 3, 32, 32], DType::F32, Device::Cpu).unwrap();
    expect_err(model.image_features(&wrong), "[N, 3, 48, 48]");
    expect_err(model.text_features(&[vec![1; 78]]), "77");
    expect_err(model.text_features(&[vec![9999]]), "vocabulary");
    expect_err(model.text_features(&[vec![1, 2], vec![1]]), "one length");
    // Text without a tokenizer, and an image that does not decode.
    let embedder = ClipEmbedder::load(&fixture("tiny_gelu"), Device::Cpu, DType::F32).unwrap();
    expect_err(embedder.embed_texts(&["a cat".into()]), "tokenizer.json");
    std::fs::write(tmp.join("broken.png"), b"\x89PNG\r\n\x1a\nnot really").unwrap();
    expect_err(read_image(&tmp.join("broken.png")), "broken.png");
    std::fs::remove_dir_all(&tmp).ok();
}

fn vit_b32() {
    let dir = PathBuf::from(std::env::var_os("SMITH_CLIP_B32").unwrap());
    let reference = load_safetensors(&dir.join("reference.safetensors")).unwrap();
    let model = Clip::load(&dir, Device::Cpu, DType::F32).unwrap();
    compare(&model, &reference, 1e-4, "ViT-B/32 cpu f32");
    // The folder's tokenizer gives the reference's padded ids.
    let embedder = ClipEmbedder::load(&dir, Device::Cpu, DType::F32).unwrap();
    let tok = embedder.tokenizer.as_ref().unwrap();
    let ids = id_rows(&reference["input_ids"]);
    let (first, _) = tok.encode("a photo of a cat").unwrap();
    assert_eq!(first[..], ids[0][..first.len()]);
    if let Some((dev, _lock)) = gpu() {
        let _exact = exact_f32();
        let model = Clip::load(&dir, dev, DType::F32).unwrap();
        compare(&model, &reference, 1e-4, "ViT-B/32 gpu f32");
        drop(_exact);
        let model = Clip::load(&dir, dev, DType::BF16).unwrap();
        compare(&model, &reference, 5e-2, "ViT-B/32 gpu bf16");
    }
}
