//! The tokenizers GGUF files embed, against llama.cpp's test vectors: vocab-only GGUF
//! files with `.inp` (texts) and `.out` (token ids) pairs, fetched by
//! tools/fetch_vocab_tests.sh into target/vocab-tests (or SMITH_VOCAB_TESTS). Without them
//! the tests are reported as ignored, with the reason; under SMITH_REQUIRE_VOCAB_TESTS (as
//! in CI) they run and fail.

use smith::io::gguf::GgufFile;
use smith::text::tokenizer::TextTokenizer;
use std::path::PathBuf;

mod common;

fn vocab_root() -> PathBuf {
    std::env::var_os("SMITH_VOCAB_TESTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/vocab-tests"))
}

/// The folder of test vectors (the tests are ignored when it is missing; see [`missing`]).
fn vocab_dir() -> PathBuf {
    let dir = vocab_root();
    assert!(
        dir.join("ggml-vocab-gpt-2.gguf.out").exists(),
        "{} has no tokenizer test vectors: run tools/fetch_vocab_tests.sh",
        dir.display()
    );
    dir
}

/// Why these tests cannot run here, if they cannot (under SMITH_REQUIRE_VOCAB_TESTS they
/// always run, and fail when the vectors are missing).
fn missing() -> Option<String> {
    let dir = vocab_root();
    if dir.join("ggml-vocab-gpt-2.gguf.out").exists()
        || std::env::var_os("SMITH_REQUIRE_VOCAB_TESTS").is_some()
    {
        return None;
    }
    Some(format!(
        "{} has no llama.cpp tokenizer test vectors (tools/fetch_vocab_tests.sh fetches them)",
        dir.display()
    ))
}

fn main() {
    let tests: Vec<(&'static str, fn())> = vec![
        (
            "gguf_bpe_tokenizers_match_llama_cpp_vectors",
            gguf_bpe_tokenizers_match_llama_cpp_vectors,
        ),
        (
            "gguf_sentencepiece_tokenizers_match_llama_cpp_vectors",
            gguf_sentencepiece_tokenizers_match_llama_cpp_vectors,
        ),
        (
            "unsupported_tokenizer_kinds_are_named",
            unsupported_tokenizer_kinds_are_named,
        ),
        (
            "token_files_hold_gpt2_ids_as_u16",
            token_files_hold_gpt2_ids_as_u16,
        ),
        (
            "bos_follows_the_file_and_llama_cpp_defaults",
            bos_follows_the_file_and_llama_cpp_defaults,
        ),
        (
            "bos_settings_match_transformers_gguf_tokenizer",
            bos_settings_match_transformers_gguf_tokenizer,
        ),
    ];
    common::run_suite(
        tests
            .into_iter()
            .map(|(name, body)| (name, body, missing()))
            .collect(),
    )
}

/// (text, expected ids) pairs of one vocabulary.
fn vectors(dir: &std::path::Path, name: &str) -> Vec<(String, Vec<u32>)> {
    let inp = std::fs::read_to_string(dir.join(format!("{name}.gguf.inp"))).unwrap();
    let out = std::fs::read_to_string(dir.join(format!("{name}.gguf.out"))).unwrap();
    // Every text is followed by the separator line, the last one too.
    let mut texts: Vec<&str> = inp.split("\n__ggml_vocab_test__\n").collect();
    if texts.last() == Some(&"") {
        texts.pop();
    }
    let ids: Vec<Vec<u32>> = out
        .lines()
        .map(|l| l.split_whitespace().map(|t| t.parse().unwrap()).collect())
        .collect();
    assert_eq!(
        texts.len(),
        ids.len(),
        "{name}: {} texts, {} id lines",
        texts.len(),
        ids.len()
    );
    texts.into_iter().map(str::to_string).zip(ids).collect()
}

/// Encodes every vector of each vocabulary in `names` and compares with llama.cpp's ids;
/// with `round_trip`, decoding must give the text back after the added leading space.
fn check_vocabularies(names: &[&str], round_trip: bool) {
    let dir = vocab_dir();
    for name in names {
        let f = GgufFile::open(&dir.join(format!("{name}.gguf"))).unwrap();
        let tok = TextTokenizer::from_gguf(&f).unwrap();
        let cases = vectors(&dir, name);
        let mut failed = Vec::new();
        for (text, want) in &cases {
            let got = tok.encode(text, false).unwrap();
            if &got != want {
                failed.push(format!("{text:?}: got {got:?}, want {want:?}"));
            }
            if round_trip && !text.is_empty() {
                assert_eq!(tok.decode(&got).unwrap(), format!(" {text}"), "{name}");
            }
        }
        eprintln!(
            "{name}: {} of {} vectors match",
            cases.len() - failed.len(),
            cases.len()
        );
        assert!(failed.is_empty(), "{name}:\n{}", failed.join("\n"));
        if round_trip {
            // With special tokens, BOS comes first.
            assert_eq!(tok.encode("Hello", true).unwrap()[0], 1);
        }
    }
}

fn gguf_bpe_tokenizers_match_llama_cpp_vectors() {
    check_vocabularies(
        &[
            "ggml-vocab-gpt-2",
            "ggml-vocab-starcoder",
            "ggml-vocab-qwen2",
            "ggml-vocab-llama-bpe",
        ],
        false,
    );
}

fn gguf_sentencepiece_tokenizers_match_llama_cpp_vectors() {
    check_vocabularies(&["ggml-vocab-llama-spm", "ggml-vocab-phi-3"], true);
}

fn unsupported_tokenizer_kinds_are_named() {
    let dir = vocab_dir();
    let f = GgufFile::open(&dir.join("ggml-vocab-bert-bge.gguf")).unwrap();
    let err = TextTokenizer::from_gguf(&f).err().unwrap().to_string();
    assert!(err.contains("bert"), "{err}");
}

/// `smith tokenize`'s library side: every GPT-2 test text written as u16 ids and read back
/// equals llama.cpp's ids; ids past u16 and odd-sized files are errors.
fn token_files_hold_gpt2_ids_as_u16() {
    use smith::text::token_file::{read_token_file, tokenize_file, write_token_file};
    let dir = vocab_dir();
    let tmp = std::env::temp_dir().join(format!("smith_tokens_{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    let vocab = dir.join("ggml-vocab-gpt-2.gguf");
    for (i, (text, want)) in vectors(&dir, "ggml-vocab-gpt-2").iter().enumerate() {
        let (input, output) = (tmp.join("in.txt"), tmp.join("out.bin"));
        std::fs::write(&input, text).unwrap();
        let n = tokenize_file(&vocab, &input, &output, false).unwrap();
        assert_eq!(n, want.len(), "text {i}");
        assert_eq!(std::fs::metadata(&output).unwrap().len(), 2 * n as u64);
        assert_eq!(
            &read_token_file(&output).unwrap(),
            want,
            "text {i}: {text:?}"
        );
    }
    let bad = tmp.join("bad.bin");
    assert!(write_token_file(&[1, 70000], &bad).is_err());
    std::fs::write(&bad, [1u8, 2, 3]).unwrap();
    assert!(read_token_file(&bad).is_err());
    std::fs::remove_dir_all(&tmp).unwrap();
}

/// BOS as the file says: `tokenizer.ggml.add_bos_token` true or false wins; without it,
/// llama.cpp's default (BOS for Llama 3's pre-tokenizer, none for GPT-2's).
fn bos_follows_the_file_and_llama_cpp_defaults() {
    use smith::io::gguf::Value;
    let dir = vocab_dir();
    for (name, default_bos) in [("ggml-vocab-llama-bpe", true), ("ggml-vocab-gpt-2", false)] {
        let mut f = GgufFile::open(&dir.join(format!("{name}.gguf"))).unwrap();
        let key = "tokenizer.ggml.add_bos_token";
        f.metadata.retain(|(k, _)| k != key);
        let bos = f
            .get("tokenizer.ggml.bos_token_id")
            .and_then(|v| v.as_u64())
            .map(|v| v as u32);
        let plain = TextTokenizer::from_gguf(&f)
            .unwrap()
            .encode_with("Hello world", false, false)
            .unwrap();
        for setting in [None, Some(true), Some(false)] {
            f.metadata.retain(|(k, _)| k != key);
            if let Some(b) = setting {
                f.metadata.push((key.to_string(), Value::Bool(b)));
            }
            let tok = TextTokenizer::from_gguf(&f).unwrap();
            let got = tok.encode_with("Hello world", false, true).unwrap();
            let want_bos = setting.unwrap_or(default_bos) && bos.is_some();
            let mut want = Vec::new();
            if want_bos {
                want.extend(bos);
            }
            want.extend(&plain);
            assert_eq!(got, want, "{name}, add_bos_token {setting:?}");
            // --no-bos: never a BOS.
            assert_eq!(tok.encode_with("Hello world", false, false).unwrap(), plain);
        }
    }
}

/// Token ids against transformers' GGUF tokenizer (`AutoTokenizer.from_pretrained(dir,
/// gguf_file=...)`, fixture by tools/make_gguf_tokenizer_reference.py) for files whose
/// `add_bos_token` is true, false and absent; and `perplexity` scores as many tokens as
/// transformers' sliding-window recipe over the same ids.
///
/// Two differences are known, and the test expects exactly them, so that anything else
/// fails: a Llama-3 (`llama-bpe`) file without the key, where smith keeps llama.cpp's
/// default (BOS) and transformers adds none; and a text that starts with a space in the
/// Llama SentencePiece vocabulary, where smith (like llama.cpp and sentencepiece, see the
/// vector tests above) keeps the lone `▁` piece that transformers' rebuilt tokenizer drops.
fn bos_settings_match_transformers_gguf_tokenizer() {
    use smith::infer::perplexity;
    use smith::io::gguf::Value;
    use smith::models::{Gpt, GptConfig};
    let dir = vocab_dir();
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gguf_bos.json");
    let fixture: serde_json::Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    let texts: Vec<&str> = fixture["texts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    let key = "tokenizer.ggml.add_bos_token";
    let cases = fixture["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 15, "five vocabularies, three settings each");
    let mut models: std::collections::HashMap<String, Gpt> = Default::default();
    let mut failed = Vec::new();
    for case in cases {
        let vocab = case["vocab"].as_str().unwrap();
        let setting = case["add_bos_token"].as_str().unwrap();
        assert!(
            case.get("error").is_none(),
            "{vocab} {setting}: {}",
            case["error"]
        );
        let mut f = GgufFile::open(&dir.join(format!("{vocab}.gguf"))).unwrap();
        f.metadata.retain(|(k, _)| k != key);
        match setting {
            "true" => f.metadata.push((key.into(), Value::Bool(true))),
            "false" => f.metadata.push((key.into(), Value::Bool(false))),
            _ => {}
        }
        let tok = TextTokenizer::from_gguf(&f).unwrap();
        let bos = case["bos_token_id"].as_u64().unwrap() as u32;
        let llama_cpp_default = vocab == "ggml-vocab-llama-bpe" && setting == "absent";
        for (text, want) in texts.iter().zip(case["ids"].as_array().unwrap()) {
            let mut want: Vec<u32> = want
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap() as u32)
                .collect();
            if llama_cpp_default {
                want.insert(0, bos);
            }
            if vocab == "ggml-vocab-llama-spm" && text.starts_with(' ') {
                let at = usize::from(want.first() == Some(&bos));
                want.insert(at, tok.token_id("\u{2581}").unwrap());
            }
            // `generate` parses control tokens, `perplexity` does not; these texts hold none.
            for special in [true, false] {
                let got = tok.encode_with(text, special, true).unwrap();
                if got != want {
                    failed.push(format!(
                        "{vocab}, add_bos_token {setting}: {text:?}: got {got:?}, want {want:?}"
                    ));
                }
            }
        }
        // The longest text, scored in windows as the recipe does.
        let ppl = &case["perplexity"];
        let (ctx, stride) = (
            ppl["ctx"].as_u64().unwrap() as usize,
            ppl["stride"].as_u64().unwrap() as usize,
        );
        let ids = tok
            .encode_with(texts[texts.len() - 1], false, true)
            .unwrap();
        let hf_ids = ppl["ids"].as_u64().unwrap() as usize;
        assert_eq!(ids.len(), hf_ids + llama_cpp_default as usize);
        let vocab_size = f
            .get("tokenizer.ggml.tokens")
            .and_then(|v| match v {
                Value::Array(a) => Some(a.len()),
                _ => None,
            })
            .unwrap();
        let model = models.entry(vocab.to_string()).or_insert_with(|| {
            let cfg = GptConfig {
                vocab_size,
                block_size: ctx,
                n_layer: 1,
                n_head: 1,
                n_embd: 8,
                dropout: 0.0,
            };
            Gpt::new(cfg, &mut smith::Rng::new(1), smith::Device::Cpu).unwrap()
        });
        let (value, scored) = perplexity(&*model, &ids, ctx, stride, smith::Device::Cpu).unwrap();
        assert!(
            value.is_finite() && value > 1.0,
            "{vocab}: perplexity {value}"
        );
        let want = ppl["scored"].as_u64().unwrap() as usize + llama_cpp_default as usize;
        assert_eq!(scored, want, "{vocab} {setting}: tokens scored");
        assert_eq!(scored, ids.len() - 1);
    }
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}
