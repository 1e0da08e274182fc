//! Chat layouts: template families recognised from real templates, rendered turn by turn,
//! and special markers in the text turned into their tokens.

use smith::text::chat::{ChatTemplate, Message};
use smith::text::sentencepiece::SpmTokenizer;

/// SmolLM2-135M-Instruct's template, as its GGUF file carries it.
const SMOLLM2: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

#[test]
fn families_are_recognised_from_templates_and_architectures() {
    let chatml = ChatTemplate::detect(Some(SMOLLM2), Some("llama")).unwrap();
    assert_eq!(
        chatml,
        ChatTemplate::ChatMl {
            default_system: Some(
                "You are a helpful AI assistant named SmolLM, trained by Hugging Face".into()
            )
        }
    );
    let gemma = "{{ bos_token }}{% for m in messages %}<start_of_turn>{{ m['role'] }}";
    assert_eq!(
        ChatTemplate::detect(Some(gemma), None),
        Some(ChatTemplate::Gemma)
    );
    assert_eq!(
        ChatTemplate::detect(None, Some("gemma3")),
        Some(ChatTemplate::Gemma)
    );
    let llama3 = "{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>";
    assert_eq!(
        ChatTemplate::detect(Some(llama3), None),
        Some(ChatTemplate::Llama3)
    );
    assert_eq!(ChatTemplate::detect(Some("{{ messages }}"), None), None);
    assert_eq!(ChatTemplate::detect(None, Some("llama")), None);
}

#[test]
fn conversations_render_like_the_templates() {
    let user = [Message::new("user", "Hi")];
    let with_system = [
        Message::new("system", "Be brief."),
        Message::new("user", "Hi"),
    ];
    let chatml = ChatTemplate::detect(Some(SMOLLM2), None).unwrap();
    assert_eq!(
        chatml.render(&user).unwrap(),
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    );
    assert_eq!(
        chatml.render(&with_system).unwrap(),
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    );
    assert_eq!(
        ChatTemplate::Gemma.render(&with_system).unwrap(),
        "<start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\n"
    );
    assert_eq!(
        ChatTemplate::Llama3.render(&user).unwrap(),
        "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
    );
    assert_eq!(
        ChatTemplate::Phi3.render(&user).unwrap(),
        "<|user|>\nHi<|end|>\n<|assistant|>\n"
    );
    assert_eq!(
        ChatTemplate::Llama2.render(&with_system).unwrap(),
        "[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nHi [/INST]"
    );
    assert!(ChatTemplate::Gemma.render(&[]).is_err());
    assert_eq!(ChatTemplate::Gemma.stop_tokens(), &["<end_of_turn>"]);
}

#[test]
fn sentencepiece_turns_spelled_markers_into_tokens_only_with_special() {
    // 0 <unk>, 1 <s>, 2 <turn> (control), 3.. normal pieces, then byte pieces.
    let mut pieces: Vec<String> = ["<unk>", "<s>", "<turn>", "\u{2581}", "h", "i", "hi"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let mut types = vec![2, 3, 3, 1, 1, 1, 1];
    for b in 0..256 {
        pieces.push(format!("<0x{b:02X}>"));
        types.push(6);
    }
    let scores = vec![0.0; pieces.len()];
    let t = SpmTokenizer::new(pieces, scores, types, Some(1), true, false).unwrap();
    // With special tokens: BOS, the marker as one token, the text around it merged.
    assert_eq!(t.encode("hi<turn>hi", true).unwrap(), vec![1, 6, 2, 6]);
    // Without: the marker is plain text (bytes for '<', '>', and the letters).
    let plain = t.encode("hi<turn>hi", false).unwrap();
    assert!(!plain.contains(&2) && plain.len() > 4, "{plain:?}");
}
