//! Running a trained or downloaded model: loading it (smith checkpoints, Hugging Face
//! folders, GGUF files), scoring text (perplexity), generating from it, classifying images and embedding
//! images and texts with CLIP.

pub mod classify;
pub mod embed;
pub mod generate;
mod load;
mod perplexity;

pub use classify::{imagenet_classes, Classifier, Prediction};
pub use embed::{ClipEmbedder, TextEmbeddings};
pub use generate::{generate, generate_batch, Sampling};
pub use load::{chat_template, load_for_inference, load_model, load_model_as, load_model_with};
pub use perplexity::perplexity;
