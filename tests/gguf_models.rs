//! Models from GGUF files (`common::GGUF_MODEL_FIXTURES`: Llama, GPT-2, Phi-2, and Llamas
//! with Llama 3.1 and YaRN rope scaling, in several types) against transformers run on the
//! same dequantized weights (fixtures from tools/make_gguf_model_fixtures.py): logits, 32
//! greedy tokens and perplexity, on the CPU (tests/cuda_parity.rs repeats them on a GPU).

mod common;

use common::check_gguf_fixture;
use smith::models::from_gguf::load_gguf_model;
use smith::{DType, Device};
use std::path::Path;

#[test]
fn gguf_models_match_transformers_on_the_cpu() {
    for name in common::GGUF_MODEL_FIXTURES {
        let (logits, ppl) = check_gguf_fixture(name, Device::Cpu);
        eprintln!("{name}: logits error {logits:.1e}, perplexity error {ppl:.1e}");
        assert!(logits < 1e-4, "{name}: logits error {logits:e}");
        assert!(ppl < 1e-3, "{name}: perplexity error {ppl:e}");
    }
}

#[test]
fn unsupported_architectures_and_missing_tensors_are_named() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    // The quantization fixture says `llama` but holds no model tensors.
    let err = load_gguf_model(&dir.join("gguf/quant_types.gguf"), Device::Cpu, DType::F32)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("token_embd.weight") || err.contains("metadata"),
        "{err}"
    );
}

#[test]
fn quantized_matrices_stay_quantized_and_agree_with_dense_loading() {
    use smith::models::from_gguf::{load_gguf_model_dense, GgufModel};
    use smith::models::LanguageModel;
    use smith::Tensor;
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gguf_models");
    let _g = smith::no_grad();
    for name in ["llama_q4_0", "llama_q8_0", "gpt2_q4_0", "llama_f16"] {
        let path = dir.join(format!("{name}.gguf"));
        let (quant, _) = load_gguf_model(&path, Device::Cpu, DType::F32).unwrap();
        let (dense, _) = load_gguf_model_dense(&path, Device::Cpu, DType::F32).unwrap();
        let first_qkv = match &quant {
            GgufModel::Llama(m) => &m.blocks[0].attn.qkv,
            GgufModel::Gpt(m) => &m.blocks[0].attn.qkv,
        };
        // Only quantized files give quantized layers.
        assert_eq!(first_qkv.quant.is_some(), !name.ends_with("f16"), "{name}");
        let ids = Tensor::from_vec((0..24i64).collect(), &[2, 12], Device::Cpu).unwrap();
        let a = quant.forward(&ids).unwrap().to_vec_f64().unwrap();
        let b = dense.forward(&ids).unwrap().to_vec_f64().unwrap();
        let err = common::rel_err(&a, &b);
        assert!(
            err < 1e-5,
            "{name}: quantized vs dense logits differ by {err:e}"
        );
    }
}

/// Phi-3 files (fused `attn_qkv`, gate and up in one `ffn_up`) give the same logits and
/// greedy tokens as the same weights stored unfused under `qwen2` (fixtures from
/// tools/make_phi3_fixtures.py), dense and with the quantized matrices split in place.
#[test]
fn phi3_fused_tensors_load_like_their_unfused_twin() {
    use smith::models::LanguageModel;
    use smith::Tensor;
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gguf_models");
    let _g = smith::no_grad();
    for tag in ["f32", "q8_0"] {
        let (phi3, _) = load_gguf_model(
            &dir.join(format!("phi3_{tag}.gguf")),
            Device::Cpu,
            DType::F32,
        )
        .unwrap();
        let (twin, _) = load_gguf_model(
            &dir.join(format!("qwen2eq_{tag}.gguf")),
            Device::Cpu,
            DType::F32,
        )
        .unwrap();
        let ids = Tensor::from_vec(
            (0..20i64).map(|i| i * 7 % 96).collect(),
            &[2, 10],
            Device::Cpu,
        )
        .unwrap();
        let a = phi3.forward(&ids).unwrap().to_vec_f64().unwrap();
        let b = twin.forward(&ids).unwrap().to_vec_f64().unwrap();
        let err = common::rel_err(&a, &b);
        assert!(
            err < 1e-6,
            "{tag}: phi3 vs unfused logits differ by {err:e}"
        );
        let prompt = vec![vec![3u32, 14, 15, 92, 65]];
        let x = common::greedy(&phi3, &prompt, 12, &[], Device::Cpu).unwrap();
        let y = common::greedy(&twin, &prompt, 12, &[], Device::Cpu).unwrap();
        assert_eq!(x, y, "{tag}: greedy tokens");
    }
}
