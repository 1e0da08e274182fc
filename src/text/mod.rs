//! Text and tokens: tokenizers (character-level, Hugging Face `tokenizer.json`, the
//! vocabularies GGUF files embed), chat templates and token files for training.

pub mod char_level;
pub mod chat;
pub mod clip_text;
pub mod gguf_vocab;
pub mod sentencepiece;
pub mod token_file;
pub mod tokenizer;

pub use char_level::CharTokenizer;
pub use chat::ChatTemplate;
pub use clip_text::{ClipTokenizer, TextBatch};
pub use tokenizer::{StreamDecoder, TextTokenizer};
