//! Chat prompts: a conversation laid out the way a model was trained to read it. The
//! template family is recognised from the GGUF file's `tokenizer.chat_template` (by the
//! markers it uses, as llama.cpp does, rather than by running its Jinja) or, without one,
//! from the architecture; an unknown template is an error that says so.

use crate::{Error, Result};

/// One turn of a conversation.
#[derive(Clone, Debug, PartialEq)]
pub struct Message {
    /// `system`, `user` or `assistant`.
    pub role: String,
    pub content: String,
}

impl Message {
    /// A turn of `role` saying `content`.
    pub fn new(role: &str, content: &str) -> Self {
        Message {
            role: role.to_string(),
            content: content.to_string(),
        }
    }
}

/// The chat layouts smith knows.
#[derive(Clone, Debug, PartialEq)]
pub enum ChatTemplate {
    /// `<|im_start|>role\n...<|im_end|>\n` (Qwen, SmolLM), with the system prompt the
    /// template adds when the conversation has none.
    ChatMl { default_system: Option<String> },
    /// `<start_of_turn>user\n...<end_of_turn>\n`, the system prompt folded into the first
    /// user turn (Gemma).
    Gemma,
    /// `<|start_header_id|>role<|end_header_id|>\n\n...<|eot_id|>` (Llama 3).
    Llama3,
    /// `<|user|>\n...<|end|>\n` (Phi 3).
    Phi3,
    /// `[INST] ... [/INST]` (Llama 2, Mistral), the system prompt in `<<SYS>>` markers.
    Llama2,
}

impl ChatTemplate {
    /// The family of a Jinja chat template, or of an architecture when the file has no
    /// template; `None` when neither is recognised.
    pub fn detect(template: Option<&str>, architecture: Option<&str>) -> Option<Self> {
        match template {
            Some(t) if t.contains("<|im_start|>") => Some(ChatTemplate::ChatMl {
                default_system: chatml_default_system(t),
            }),
            Some(t) if t.contains("<start_of_turn>") => Some(ChatTemplate::Gemma),
            Some(t) if t.contains("<|start_header_id|>") => Some(ChatTemplate::Llama3),
            Some(t) if t.contains("<|assistant|>") && t.contains("<|end|>") => {
                Some(ChatTemplate::Phi3)
            }
            Some(t) if t.contains("[INST]") => Some(ChatTemplate::Llama2),
            Some(_) => None,
            None => match architecture {
                Some(a) if a.starts_with("gemma") => Some(ChatTemplate::Gemma),
                Some("qwen2") => Some(ChatTemplate::ChatMl {
                    default_system: None,
                }),
                _ => None,
            },
        }
    }

    /// The text of `messages` followed by the opening of the assistant's turn. Special
    /// markers are spelled out; encode it with special tokens on.
    pub fn render(&self, messages: &[Message]) -> Result<String> {
        if messages.is_empty() {
            return Err(Error::invalid("chat", "a conversation needs a message"));
        }
        let mut out = String::new();
        match self {
            ChatTemplate::ChatMl { default_system } => {
                if let (Some(sys), false) = (default_system, messages[0].role == "system") {
                    out.push_str(&format!("<|im_start|>system\n{sys}<|im_end|>\n"));
                }
                for m in messages {
                    out.push_str(&format!(
                        "<|im_start|>{}\n{}<|im_end|>\n",
                        m.role, m.content
                    ));
                }
                out.push_str("<|im_start|>assistant\n");
            }
            ChatTemplate::Gemma => {
                let mut system = String::new();
                for m in messages {
                    match m.role.as_str() {
                        "system" => system = format!("{}\n\n", m.content),
                        role => {
                            let role = if role == "assistant" { "model" } else { role };
                            let text = format!("{}{}", std::mem::take(&mut system), m.content);
                            out.push_str(&format!(
                                "<start_of_turn>{role}\n{}<end_of_turn>\n",
                                text.trim()
                            ));
                        }
                    }
                }
                out.push_str("<start_of_turn>model\n");
            }
            ChatTemplate::Llama3 => {
                for m in messages {
                    out.push_str(&format!(
                        "<|start_header_id|>{}<|end_header_id|>\n\n{}<|eot_id|>",
                        m.role,
                        m.content.trim()
                    ));
                }
                out.push_str("<|start_header_id|>assistant<|end_header_id|>\n\n");
            }
            ChatTemplate::Phi3 => {
                for m in messages {
                    out.push_str(&format!("<|{}|>\n{}<|end|>\n", m.role, m.content));
                }
                out.push_str("<|assistant|>\n");
            }
            ChatTemplate::Llama2 => {
                let mut system = String::new();
                for m in messages {
                    match m.role.as_str() {
                        "system" => system = format!("<<SYS>>\n{}\n<</SYS>>\n\n", m.content),
                        "user" => out.push_str(&format!(
                            "[INST] {}{} [/INST]",
                            std::mem::take(&mut system),
                            m.content.trim()
                        )),
                        _ => out.push_str(&format!(" {} ", m.content.trim())),
                    }
                }
            }
        }
        Ok(out)
    }

    /// Tokens that end the assistant's turn in this layout.
    pub fn stop_tokens(&self) -> &'static [&'static str] {
        match self {
            ChatTemplate::ChatMl { .. } => &["<|im_end|>"],
            ChatTemplate::Gemma => &["<end_of_turn>"],
            ChatTemplate::Llama3 => &["<|eot_id|>"],
            ChatTemplate::Phi3 => &["<|end|>"],
            ChatTemplate::Llama2 => &["</s>"],
        }
    }
}

/// The system prompt a ChatML template writes when the conversation starts without one
/// (SmolLM2's `You are a helpful AI assistant named SmolLM, ...`).
fn chatml_default_system(t: &str) -> Option<String> {
    if !t.contains("!= 'system'") && !t.contains("!= \"system\"") {
        return None;
    }
    let start = t.find("<|im_start|>system\n")? + "<|im_start|>system\n".len();
    let end = start + t[start..].find("<|im_end|>")?;
    let text = &t[start..end];
    // Only a literal prompt, not one built from variables.
    (!text.contains("{{") && !text.contains('\'')).then(|| text.to_string())
}
