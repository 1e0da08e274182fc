//! Real models fetched by tools/fetch_models.sh into target/models (or SMITH_MODELS): a
//! test whose model is absent is reported as ignored, with the reason (and fails when
//! SMITH_REQUIRE_MODELS is set).

mod common;

use smith::infer::{load_model, load_model_as};
use smith::{DType, Device};
use std::path::PathBuf;

fn models_dir() -> PathBuf {
    std::env::var_os("SMITH_MODELS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/models"))
}

/// The model file `file` (the test is ignored when it is missing; see [`missing`]).
fn model_path(file: &str) -> PathBuf {
    let path = models_dir().join(file);
    assert!(
        path.exists(),
        "{} is missing: run tools/fetch_models.sh",
        path.display()
    );
    path
}

/// Why a test of `file` cannot run here, if it cannot (under SMITH_REQUIRE_MODELS it always
/// runs, and fails when the file is missing).
fn missing(file: &str) -> Option<String> {
    let path = models_dir().join(file);
    if path.exists() || std::env::var_os("SMITH_REQUIRE_MODELS").is_some() {
        return None;
    }
    Some(format!(
        "{} is missing (tools/fetch_models.sh fetches it)",
        path.display()
    ))
}

const SMOLLM2: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
const GEMMA3: &str = "gemma-3-270m-q4_k_m.gguf";

fn main() {
    common::run_suite(vec![
        (
            "smollm2_answers_greedily_on_the_cpu",
            smollm2_answers_greedily_on_the_cpu,
            missing(SMOLLM2),
        ),
        (
            "smollm2_matches_transformers_token_for_token",
            smollm2_matches_transformers_token_for_token,
            missing(SMOLLM2),
        ),
        (
            "gemma3_matches_transformers_token_for_token",
            gemma3_matches_transformers_token_for_token,
            missing(GEMMA3),
        ),
        (
            "smollm2_answers_in_its_chat_template",
            smollm2_answers_in_its_chat_template,
            missing(SMOLLM2),
        ),
    ])
}

/// SmolLM2-135M-Instruct (Q4_1, llama architecture, `smollm` BPE tokenizer) loads from its
/// GGUF file and answers a factual prompt greedily on the CPU.
fn smollm2_answers_greedily_on_the_cpu() {
    let path = model_path(SMOLLM2);
    let (model, tok) = load_model(&path, Device::Cpu).unwrap();
    assert_eq!(model.vocab_size(), 49152);
    let prompt = tok.encode("The capital of France is", true).unwrap();
    let out = common::greedy(model.as_ref(), &[prompt], 6, &[], Device::Cpu).unwrap();
    let text = tok.decode(&out[0]).unwrap();
    eprintln!("SmolLM2: The capital of France is{text}");
    assert!(text.contains("Paris"), "{text:?}");
}

/// The first GPU, or `None` (said loudly; a failure under SMITH_REQUIRE_CUDA).
fn gpu() -> Option<Device> {
    if smith::device::cuda_available() {
        return Some(Device::Cuda(0));
    }
    assert!(
        std::env::var_os("SMITH_REQUIRE_CUDA").is_none(),
        "SMITH_REQUIRE_CUDA is set but no usable GPU"
    );
    eprintln!("NO CUDA DEVICE: the GPU half of this test did NOT run");
    None
}

/// A real model against transformers loading the same GGUF file (`from_pretrained(...,
/// gguf_file=...)`, fixture from tools/make_real_model_reference.py): the same prompt
/// token ids, and the same 32 greedy tokens (or the same stop at `stop`), with the
/// weights kept quantized and f32 activations, on `device`.
fn matches_transformers(file: &str, fixture: &str, stop: &str, device: Device) {
    let path = model_path(file);
    let fixture = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(fixture);
    let cases: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fixture).unwrap()).unwrap();
    let (model, tok) = load_model_as(&path, device, Some(DType::F32)).unwrap();
    let eos = tok.token_id(stop).unwrap();
    let ids = |v: &serde_json::Value| -> Vec<u32> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as u32)
            .collect()
    };
    for case in cases.as_array().unwrap() {
        let prompt = case["prompt"].as_str().unwrap();
        let bos = case["bos"].as_bool().unwrap_or(false);
        let encoded = tok.encode(prompt, bos).unwrap();
        assert_eq!(encoded, ids(&case["ids"]), "{prompt:?}: prompt ids");
        let want = ids(&case["greedy"]);
        let out = common::greedy(model.as_ref(), &[encoded], 32, &[eos], device).unwrap();
        eprintln!(
            "{file} on {device}: {prompt}{}",
            tok.decode(&out[0]).unwrap()
        );
        assert_eq!(out[0], want, "{prompt:?}: greedy tokens on {device}");
    }
}

/// SmolLM2-135M-Instruct Q4_1 (llama architecture, `smollm` BPE tokenizer).
fn smollm2_matches_transformers_token_for_token() {
    let (file, fixture) = (SMOLLM2, "smollm2_greedy.json");
    matches_transformers(file, fixture, "<|im_end|>", Device::Cpu);
    if let Some(dev) = gpu() {
        matches_transformers(file, fixture, "<|im_end|>", dev);
    }
}

/// Gemma 3 270M Q4_K_M (gemma3 architecture: sliding-window layers, QK norms, post norms;
/// SentencePiece tokenizer without a space prefix; Q4_K, Q5_0, Q6_K and Q8_0 matrices).
fn gemma3_matches_transformers_token_for_token() {
    let (file, fixture) = (GEMMA3, "gemma3_greedy.json");
    matches_transformers(file, fixture, "<eos>", Device::Cpu);
    if let Some(dev) = gpu() {
        matches_transformers(file, fixture, "<eos>", dev);
    }
}

/// SmolLM2-135M-Instruct answers a question laid out with its own chat template (ChatML
/// with its default system prompt) and stops at the end of its turn.
fn smollm2_answers_in_its_chat_template() {
    let path = model_path(SMOLLM2);
    let template = smith::infer::chat_template(&path).unwrap().unwrap();
    let text = template
        .render(&[smith::text::chat::Message::new(
            "user",
            "What is the capital of France?",
        )])
        .unwrap();
    let (model, tok) = load_model(&path, Device::Cpu).unwrap();
    let ids = tok.encode(&text, true).unwrap();
    let im_start = tok.token_id("<|im_start|>").unwrap();
    assert_eq!(ids.iter().filter(|&&t| t == im_start).count(), 3, "{ids:?}");
    let end = tok.token_id(template.stop_tokens()[0]).unwrap();
    let out = common::greedy(model.as_ref(), &[ids], 24, &[end], Device::Cpu).unwrap();
    let answer = tok.decode(&out[0]).unwrap();
    eprintln!("SmolLM2 chat: {answer}");
    assert!(answer.contains("Paris"), "{answer:?}");
    assert_eq!(out[0].last(), Some(&end), "the turn ends with <|im_end|>");
}
