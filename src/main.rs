//! The `smith` command-line tool.

mod cli;

use clap::{Args, Parser, Subcommand};
use cli::corpus::SHAKESPEARE;
use cli::{bench, info, interrupt, plot};
use indicatif::{ProgressBar, ProgressStyle};
use smith::infer::{generate, generate_batch, load_model, perplexity, Sampling};
use smith::text::StreamDecoder;
use smith::train::{Corpus, TrainConfig, Trainer};
use smith::{Device, Error, Result, Rng};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(Parser)]
#[command(
    name = "smith",
    version,
    about = "Deep learning in Rust: train and sample a GPT on any machine"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train a GPT: character-level on the bundled plays (or --data), or GPT-2 124M on a
    /// token file (--model gpt2-124m --tokens FILE).
    Train(Box<TrainArgs>),
    /// Stream continuations of prompts from a smith checkpoint or a Hugging Face GPT-2.
    Generate(GenerateArgs),
    /// Perplexity of a model on a text file (strided windows).
    Perplexity(PerplexityArgs),
    /// Describe a GGUF file, a safetensors file, a PyTorch .pth file or a model folder.
    Info(InfoArgs),
    /// Classify images with a ResNet (a torchvision .pth or safetensors state dict).
    Classify(ClassifyArgs),
    /// CLIP embeddings of images and texts, and zero-shot classification of the images
    /// by the texts (a Hugging Face CLIP folder).
    Embed(EmbedArgs),
    /// Time the key workloads and print them beside PyTorch's on the same device.
    Bench(BenchArgs),
    /// Turn a text file into a token file (little-endian u16 ids) for training.
    Tokenize(TokenizeArgs),
}

#[derive(Args)]
struct ClassifyArgs {
    /// A ResNet state dict in torchvision's names: a .pth file, a safetensors file, or a
    /// folder holding one.
    #[arg(long)]
    model: PathBuf,
    /// The images (PNG or JPEG); they run as one batch.
    #[arg(long, num_args = 1.., required = true)]
    image: Vec<PathBuf>,
    /// How many classes to print per image.
    #[arg(long, default_value_t = 5)]
    top_k: usize,
    /// Class names, one per line (default: ImageNet's for a 1000-class model).
    #[arg(long)]
    labels: Option<PathBuf>,
    /// cpu, cuda, cuda:N or auto.
    #[arg(long, default_value = "auto")]
    device: String,
}

#[derive(Args)]
struct EmbedArgs {
    /// A CLIP folder: config.json, model.safetensors, tokenizer.json (for text) and
    /// optionally preprocessor_config.json.
    #[arg(long)]
    model: PathBuf,
    /// Images (PNG or JPEG) to embed; they run as one batch.
    #[arg(long, num_args = 1..)]
    image: Vec<PathBuf>,
    /// Texts to embed; they run as one padded batch.
    #[arg(long, num_args = 1..)]
    text: Vec<String>,
    /// Zero-shot labels, comma-separated ("a photo of a cat,a photo of a dog"): texts
    /// too, and each image gets its probabilities over them.
    #[arg(long)]
    labels: Option<String>,
    /// Write the embeddings to FILE (.safetensors or .json) instead of printing them.
    #[arg(long)]
    output: Option<PathBuf>,
    /// cpu, cuda, cuda:N or auto.
    #[arg(long, default_value = "auto")]
    device: String,
    /// f32, f16 or bf16 (default: f32 on the CPU, bf16 on a GPU).
    #[arg(long)]
    dtype: Option<String>,
}

#[derive(Args)]
struct TokenizeArgs {
    /// A tokenizer.json, a GGUF file (its tokenizer) or a Hugging Face model folder.
    #[arg(long)]
    tokenizer: PathBuf,
    /// The UTF-8 text to tokenize.
    #[arg(long)]
    input: PathBuf,
    /// Where to write the ids.
    #[arg(long)]
    output: PathBuf,
    /// Do not add the BOS/EOS tokens the tokenizer's rules add (a GGUF file's
    /// `add_bos_token`, a tokenizer.json's post-processor).
    #[arg(long)]
    no_bos: bool,
}

#[derive(Args)]
struct BenchArgs {
    /// cpu, cuda, cuda:N or auto.
    #[arg(long, default_value = "auto")]
    device: String,
    /// Smaller sizes (for a CPU or a quick look).
    #[arg(long)]
    quick: bool,
    /// Script that prints PyTorch's figures as JSON (skipped when it is not there).
    #[arg(long, default_value = "tools/torch_baseline.py")]
    baseline: String,
    /// Do not run the PyTorch baseline.
    #[arg(long)]
    no_baseline: bool,
    /// Also time a GPT-2 124M training step (B=16, T=1024; needs a large GPU), in f32 and
    /// in bf16 mixed precision.
    #[arg(long)]
    gpt2: bool,
    /// Print the profiler's kernel tables (two GPT-2 training steps with --gpt2, one
    /// generation with --generate, five forward+backward passes of each shape with
    /// --attention).
    #[arg(long)]
    profile: bool,
    /// Also time greedy decoding of this GGUF file with quantized weights (may be given
    /// several times); prints tokens/s, weight bytes per token and the bandwidth.
    #[arg(long)]
    gguf: Vec<PathBuf>,
    /// Only the model workloads (--gpt2, --generate, --attention, --vision, --clip, --gguf), not the
    /// kernels.
    #[arg(long)]
    gpt2_only: bool,
    /// Also time greedy GPT-2 124M generation (256 tokens, batch 1) in f32 and bf16.
    #[arg(long)]
    generate: bool,
    /// Also time fused attention (bf16, forward and forward+backward) against PyTorch's
    /// scaled_dot_product_attention.
    #[arg(long)]
    attention: bool,
    /// Also time the vision workloads (ResNet-50's 3x3 convolutions, ResNet-50 inference
    /// and training at batch 256, bf16, channels-last) against PyTorch with cuDNN, and CLIP
    /// (as --clip).
    #[arg(long)]
    vision: bool,
    /// Also time CLIP ViT-B/32 image and text embeddings (batch 1024, bf16) against
    /// transformers with SDPA attention.
    #[arg(long)]
    clip: bool,
}

#[derive(Args)]
struct TrainArgs {
    /// `char` (a small character-level GPT) or `gpt2-124m` (GPT-2 124M on --tokens); it
    /// sets the defaults that the other flags override.
    #[arg(long, default_value = "char")]
    model: String,
    /// Train on this token file (little-endian u16 ids, from `smith tokenize`).
    #[arg(long)]
    tokens: Option<PathBuf>,
    /// Vocabulary size of a token-file run (gpt2-124m: 50304, GPT-2's 50257 padded to a
    /// multiple of 64 for fast matmuls; with --init: the folder's; otherwise the largest
    /// id + 1).
    #[arg(long)]
    vocab_size: Option<usize>,
    /// Start from the weights of this Hugging Face GPT-2 folder (a token-file run).
    #[arg(long)]
    init: Option<PathBuf>,
    /// Print the training loss every N steps (default: every step for token-file runs,
    /// only at evaluations otherwise; 0 turns it off).
    #[arg(long)]
    log_interval: Option<u64>,
    /// After training, also write the model as a Hugging Face GPT-2 folder here.
    #[arg(long)]
    export_hf: Option<PathBuf>,
    /// The tokenizer.json to copy into the --export-hf folder.
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    /// Optimizer steps.
    #[arg(long)]
    steps: Option<u64>,
    /// Sequences per batch.
    #[arg(long)]
    batch_size: Option<usize>,
    /// Tokens per sequence (also the model's context).
    #[arg(long)]
    seq_len: Option<usize>,
    /// Transformer blocks.
    #[arg(long)]
    layers: Option<usize>,
    /// Attention heads.
    #[arg(long)]
    heads: Option<usize>,
    /// Model width.
    #[arg(long)]
    dim: Option<usize>,
    /// Peak learning rate.
    #[arg(long)]
    lr: Option<f64>,
    /// Final learning rate of the cosine decay.
    #[arg(long)]
    min_lr: Option<f64>,
    /// Warmup steps.
    #[arg(long)]
    warmup: Option<u64>,
    /// Step at which the cosine decay ends (default: --steps).
    #[arg(long)]
    lr_decay_steps: Option<u64>,
    /// Residual dropout.
    #[arg(long)]
    dropout: Option<f64>,
    /// Held-out evaluation every N steps.
    #[arg(long)]
    eval_interval: Option<u64>,
    /// Save a checkpoint every N steps (default: at each held-out evaluation); one is
    /// also saved at the end and when the run is interrupted (Ctrl-C or SIGTERM).
    #[arg(long)]
    save_interval: Option<u64>,
    /// Seed for initialisation, batches and dropout.
    #[arg(long)]
    seed: Option<u64>,
    /// cpu, cuda, cuda:N or auto.
    #[arg(long, default_value = "auto")]
    device: String,
    /// Folder for the checkpoint, loss curves and sample.
    #[arg(long, default_value = "runs/shakespeare")]
    out: PathBuf,
    /// Train on this UTF-8 text file instead of the bundled plays.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Continue the run saved in this folder (its settings apply; --steps extends it).
    #[arg(long)]
    resume: Option<PathBuf>,
    /// Characters to sample at the end.
    #[arg(long, default_value_t = 600)]
    sample_tokens: usize,
    /// f32, or mixed precision: bf16, or f16 with dynamic loss scaling (weights and
    /// optimizer state stay f32).
    #[arg(long, default_value = "f32")]
    precision: String,
    /// Train an image classifier (--model resnet-small or resnet18 ...) on this
    /// ImageFolder (one sub-folder per class; or a folder holding train/ and val/).
    #[arg(long)]
    images: Option<PathBuf>,
    /// Held-out images for --images (default: the val/ beside train/).
    #[arg(long)]
    val: Option<PathBuf>,
    /// Epochs of an image run (default 15).
    #[arg(long)]
    epochs: Option<usize>,
    /// Side images are resized to for an image run (default: the first image's).
    #[arg(long)]
    image_size: Option<usize>,
    /// Random horizontal flips in an image run (off by default: digits and letters change
    /// class in a mirror).
    #[arg(long)]
    hflip: bool,
}

#[derive(Args)]
struct GenerateArgs {
    /// A folder written by `smith train`, a Hugging Face GPT-2 folder, or a GGUF file.
    #[arg(long, alias = "checkpoint")]
    model: PathBuf,
    /// Text to continue; give it several times for a batch (prompts of one token length
    /// run together).
    #[arg(long, default_value = "\n")]
    prompt: Vec<String>,
    /// Most tokens to generate per prompt.
    #[arg(long, default_value_t = 200)]
    max_tokens: usize,
    /// Softmax temperature (0 = greedy).
    #[arg(long, default_value_t = 0.8)]
    temperature: f64,
    /// Sample among the k most likely tokens.
    #[arg(long)]
    top_k: Option<usize>,
    /// Nucleus sampling threshold.
    #[arg(long)]
    top_p: Option<f64>,
    /// Drop tokens less likely than this fraction of the most likely one.
    #[arg(long)]
    min_p: Option<f64>,
    /// Penalty for tokens already in the context (1 = none).
    #[arg(long, default_value_t = 1.0)]
    repetition_penalty: f64,
    /// Stop when the text produces this string (may be given several times).
    #[arg(long)]
    stop: Vec<String>,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// cpu, cuda, cuda:N or auto.
    #[arg(long, default_value = "auto")]
    device: String,
    /// GGUF files: dequantize every matrix at load time instead of keeping it quantized.
    #[arg(long)]
    dequantize: bool,
    /// Treat each prompt as a user message and lay it out with the model's chat template.
    #[arg(long)]
    chat: bool,
    /// With --chat: a system message before the user's.
    #[arg(long)]
    system: Option<String>,
    /// Do not add the BOS/EOS tokens the tokenizer's rules add (a GGUF file's
    /// `add_bos_token`, a tokenizer.json's post-processor).
    #[arg(long)]
    no_bos: bool,
}

#[derive(Args)]
struct InfoArgs {
    /// The file or folder.
    path: PathBuf,
    /// Also list every metadata entry and tensor.
    #[arg(long)]
    all: bool,
}

#[derive(Args)]
struct PerplexityArgs {
    /// A folder written by `smith train`, or a Hugging Face GPT-2 folder.
    #[arg(long)]
    model: PathBuf,
    /// The text to score.
    #[arg(long)]
    file: PathBuf,
    /// Window length in tokens (at most the model's context).
    #[arg(long)]
    ctx: Option<usize>,
    /// How far each window moves (defaults to the window length).
    #[arg(long)]
    stride: Option<usize>,
    /// Do not add the BOS/EOS tokens the tokenizer's rules add (a GGUF file's
    /// `add_bos_token`, a tokenizer.json's post-processor).
    #[arg(long)]
    no_bos: bool,
    /// cpu, cuda, cuda:N or auto.
    #[arg(long, default_value = "auto")]
    device: String,
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Train(a) => train(*a),
        Command::Generate(a) => generate_cmd(a),
        Command::Perplexity(a) => perplexity_cmd(a),
        Command::Info(a) => info::describe(&a.path, a.all).map(|s| print!("{s}")),
        Command::Bench(a) => bench_cmd(a),
        Command::Classify(a) => classify_cmd(a),
        Command::Embed(a) => embed_cmd(a),
        Command::Tokenize(a) => {
            smith::text::token_file::tokenize_file(&a.tokenizer, &a.input, &a.output, !a.no_bos)
                .map(|n| println!("{n} tokens written to {}", a.output.display()))
        }
    };
    if let Err(e) = result {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn embed_cmd(a: EmbedArgs) -> Result<()> {
    use smith::Tensor;
    let device = Device::parse(&a.device)?;
    let dtype = match a.dtype.as_deref() {
        Some(d) => d.parse::<smith::DType>()?,
        None if device == Device::Cpu => smith::DType::F32,
        None => smith::DType::BF16,
    };
    let mut texts = a.text.clone();
    if let Some(l) = &a.labels {
        texts.extend(
            l.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from),
        );
    }
    if a.image.is_empty() && texts.is_empty() {
        return Err(smith::Error::invalid(
            "embed",
            "nothing to embed: give --image, --text or --labels",
        ));
    }
    let embedder = smith::infer::ClipEmbedder::load(&a.model, device, dtype)?;
    let images = smith::vision::read_images(&a.image)?;
    let start = std::time::Instant::now();
    let image_embeds = if images.is_empty() {
        None
    } else {
        Some(embedder.embed_images(&images)?)
    };
    let text_embeds = if texts.is_empty() {
        None
    } else {
        let t = embedder.embed_texts(&texts)?;
        if !t.truncated.is_empty() {
            eprintln!(
                "note: {} text(s) longer than the model's {} tokens were truncated (the end-of-text token kept)",
                t.truncated.len(),
                embedder.model.cfg.text_config.max_position_embeddings
            );
        }
        Some(t.embeds)
    };
    let elapsed = start.elapsed().as_secs_f64();
    let rows = |t: &Tensor| -> Result<Vec<Vec<f32>>> {
        let d = t.shape()[1];
        Ok(t.to_vec_f32()?.chunks(d).map(<[f32]>::to_vec).collect())
    };
    if let Some(out) = &a.output {
        smith::infer::embed::write_embeddings(
            out,
            &a.image,
            image_embeds.as_ref(),
            &texts,
            text_embeds.as_ref(),
        )?;
        println!("embeddings written to {}", out.display());
    } else {
        let show = |name: &str, v: &[f32]| {
            let head: Vec<String> = v.iter().take(6).map(|x| format!("{x:+.4}")).collect();
            println!("{name}\n  [{}, ...] ({} dims)", head.join(", "), v.len());
        };
        if let Some(e) = &image_embeds {
            for (p, v) in a.image.iter().zip(rows(e)?) {
                show(&p.display().to_string(), &v);
            }
        }
        if let Some(e) = &text_embeds {
            for (t, v) in texts.iter().zip(rows(e)?) {
                show(&format!("{t:?}"), &v);
            }
        }
    }
    if let (Some(i), Some(t)) = (&image_embeds, &text_embeds) {
        let sims = rows(&i.matmul(&t.t()?)?)?;
        let probs = rows(&embedder.probabilities(i, t)?)?;
        println!(
            "\nsimilarity (cosine) and probability over the {} texts:",
            texts.len()
        );
        for ((p, s), pr) in a.image.iter().zip(&sims).zip(&probs) {
            println!("{}", p.display());
            let mut order: Vec<usize> = (0..texts.len()).collect();
            order.sort_by(|&x, &y| pr[y].total_cmp(&pr[x]));
            for j in order {
                println!("  {:>6.2}%  cos {:+.4}  {}", 100.0 * pr[j], s[j], texts[j]);
            }
        }
    }
    eprintln!(
        "{} image(s) and {} text(s) on {device:?} ({dtype:?}) in {elapsed:.2} s",
        images.len(),
        texts.len()
    );
    Ok(())
}

fn classify_cmd(a: ClassifyArgs) -> Result<()> {
    let device = Device::parse(&a.device)?;
    let mut classifier = smith::infer::Classifier::load(&a.model, device)?;
    if let Some(l) = &a.labels {
        classifier = classifier.with_labels_file(l)?;
    }
    let images = smith::vision::read_images(&a.image)?;
    let start = std::time::Instant::now();
    let results = classifier.classify(&images, a.top_k)?;
    for (path, preds) in a.image.iter().zip(&results) {
        println!("{}", path.display());
        for (rank, p) in preds.iter().enumerate() {
            println!(
                "  {:>2}. {:<32} {:>6.2}%  (class {})",
                rank + 1,
                p.label,
                100.0 * p.probability,
                p.class
            );
        }
    }
    eprintln!(
        "{} image(s) in one batch on {device:?} in {:.2} s ({})",
        images.len(),
        start.elapsed().as_secs_f64(),
        classifier.model.cfg.torchvision_name().unwrap_or("ResNet")
    );
    Ok(())
}

fn train_config(a: &TrainArgs, tokens: Option<&[u32]>) -> Result<TrainConfig> {
    let mut d = match a.model.as_str() {
        "char" => TrainConfig::default(),
        "gpt2-124m" => TrainConfig::gpt2_124m(),
        other => {
            return Err(Error::invalid(
                "train",
                format!("--model `{other}` is not one of char, gpt2-124m"),
            ))
        }
    };
    match (tokens, a.model.as_str()) {
        (None, "gpt2-124m") => {
            return Err(Error::invalid(
                "train",
                "--model gpt2-124m trains on a token file: pass --tokens FILE (`smith tokenize` makes one)",
            ))
        }
        (Some(ids), _) => {
            // A run from a GPT-2 folder takes the folder's vocabulary.
            let largest = ids.iter().max().map_or(0, |&m| m as usize + 1);
            let preset = d.vocab_size.unwrap_or(largest);
            d.vocab_size = a.vocab_size.or(a.init.is_none().then_some(preset));
            d.batch_order = smith::train::BatchOrder::Ordered;
        }
        (None, _) => {}
    }
    Ok(TrainConfig {
        steps: a.steps.unwrap_or(d.steps),
        batch_size: a.batch_size.unwrap_or(d.batch_size),
        seq_len: a.seq_len.unwrap_or(d.seq_len),
        layers: a.layers.unwrap_or(d.layers),
        heads: a.heads.unwrap_or(d.heads),
        dim: a.dim.unwrap_or(d.dim),
        lr: a.lr.unwrap_or(d.lr),
        min_lr: a.min_lr.unwrap_or(d.min_lr),
        warmup: a.warmup.unwrap_or(d.warmup),
        lr_decay_steps: a.lr_decay_steps.or(d.lr_decay_steps),
        dropout: a.dropout.unwrap_or(d.dropout),
        eval_interval: a.eval_interval.unwrap_or(d.eval_interval),
        seed: a.seed.unwrap_or(d.seed),
        precision: smith::train::Precision::parse(&a.precision)?,
        ..d
    })
}

fn read_text(path: &Option<PathBuf>) -> Result<String> {
    match path {
        Some(p) => std::fs::read_to_string(p).map_err(|e| Error::io(p, e)),
        None => Ok(SHAKESPEARE.to_string()),
    }
}

fn train_images(a: &TrainArgs, images: &Path) -> Result<()> {
    use smith::train::images::{format_confusion, split_folders, ImageTrainConfig, ImageTrainer};
    let device = Device::parse(&a.device)?;
    let (train_dir, val_dir) = split_folders(images, a.val.as_deref())?;
    let out = a.resume.clone().unwrap_or(a.out.clone());
    smith::io::checkpoint::check_writable(&out)?;
    let mut t = match &a.resume {
        Some(dir) => ImageTrainer::resume(dir, &train_dir, &val_dir, a.epochs, device)?,
        None => {
            let d = ImageTrainConfig::default();
            let cfg = ImageTrainConfig {
                model: if a.model == "char" {
                    d.model.clone()
                } else {
                    a.model.clone()
                },
                image_size: a.image_size.unwrap_or(0),
                epochs: a.epochs.unwrap_or(d.epochs),
                batch_size: a.batch_size.unwrap_or(d.batch_size),
                lr: a.lr.unwrap_or(d.lr),
                warmup: a.warmup.unwrap_or(d.warmup),
                hflip: a.hflip,
                seed: a.seed.unwrap_or(0),
                ..d
            };
            ImageTrainer::new(cfg, &train_dir, &val_dir, device)?
        }
    };
    let cfg = t.state.config.clone();
    println!(
        "{} on {} classes, {}x{} images, {} epochs of {} steps (batch {}), on {device:?}",
        cfg.model,
        t.state.classes.len(),
        cfg.image_size,
        cfg.image_size,
        cfg.epochs,
        t.steps_per_epoch(),
        cfg.batch_size
    );
    let started = Instant::now();
    interrupt::install();
    let mut confusion = None;
    while t.state.epoch < cfg.epochs {
        let bar = ProgressBar::new(t.steps_per_epoch());
        bar.set_style(
            ProgressStyle::with_template("{bar:30} {pos}/{len} {msg} [{elapsed_precise}]")
                .map_err(|e| Error::invalid("progress", e.to_string()))?,
        );
        let loss = t.train_epoch(&mut |_, l| {
            bar.set_message(format!("loss {l:.4}"));
            bar.inc(1);
        })?;
        bar.finish_and_clear();
        let (acc, m) = t.evaluate()?;
        t.state.accuracy.push(acc);
        println!(
            "epoch {}: train loss {loss:.4}, held-out accuracy {:.2}% ({:.0} s)",
            t.state.epoch,
            100.0 * acc,
            started.elapsed().as_secs_f64()
        );
        t.save(&out)?;
        confusion = Some(m);
        if interrupt::requested() {
            println!(
                "interrupted: saved at epoch {} in {}",
                t.state.epoch,
                out.display()
            );
            return Ok(());
        }
    }
    let m = match confusion {
        Some(m) => m,
        None => t.evaluate()?.1,
    };
    println!("confusion matrix (rows: true class, columns: predicted)");
    print!("{}", format_confusion(&t.state.classes, &m));
    println!("saved to {}", out.display());
    Ok(())
}

fn train(a: TrainArgs) -> Result<()> {
    if let Some(images) = a.images.clone() {
        return train_images(&a, &images);
    }
    let device = Device::parse(&a.device)?;
    let out = a.resume.clone().unwrap_or(a.out.clone());
    // An unwritable folder fails now, not after the whole run.
    smith::io::checkpoint::check_writable(&out)?;
    if a.save_interval == Some(0) || a.eval_interval == Some(0) {
        return Err(Error::invalid(
            "train",
            "--save-interval and --eval-interval must be positive",
        ));
    }
    // A resumed token-file run finds its token file in the checkpoint.
    let token_path = match (&a.tokens, &a.resume) {
        (Some(p), _) => Some(p.clone()),
        (None, Some(dir)) => smith::train::checkpoint_token_file(dir)?,
        (None, None) => None,
    };
    let ids = token_path
        .as_deref()
        .map(smith::text::token_file::read_token_file)
        .transpose()?;
    let text = match ids {
        Some(_) => String::new(),
        None => read_text(&a.data)?,
    };
    let corpus = match &ids {
        Some(ids) => Corpus::Tokens(ids),
        None => Corpus::Text(&text),
    };
    let mut trainer = match &a.resume {
        Some(dir) => Trainer::resume(dir, corpus, a.steps, device)?,
        None => Trainer::start(
            train_config(&a, ids.as_deref())?,
            corpus,
            a.init.as_deref(),
            device,
        )?,
    };
    if let Some(p) = &token_path {
        trainer.token_file = Some(std::path::absolute(p).map_err(|e| Error::io(p, e))?);
    }
    let cfg = trainer.cfg.clone();
    let save_interval = a.save_interval.unwrap_or(cfg.eval_interval);
    let tokens_per_step = (cfg.batch_size * cfg.seq_len) as f64;
    let corpus_size = match &ids {
        Some(ids) => format!("{} tokens", ids.len()),
        None => format!("{} characters", text.chars().count()),
    };
    println!(
        "smith: training a {:.2}M-parameter GPT ({} layers, {} heads, width {}, context {}) on {corpus_size}, vocabulary {}, {} precision, device {device}",
        trainer.model.num_params() as f64 / 1e6,
        cfg.layers,
        cfg.heads,
        cfg.dim,
        cfg.seq_len,
        trainer.vocab_size(),
        cfg.precision.dtype(),
    );
    println!(
        "steps {}..{} with batch {} x {}",
        trainer.state.step, cfg.steps, cfg.batch_size, cfg.seq_len
    );
    let log_interval = a.log_interval.unwrap_or(if ids.is_some() { 1 } else { 0 });
    if trainer.state.step == 0 {
        let v = trainer.record_eval()?;
        println!(
            "step 0: held-out loss {v:.4} (uniform guess: {:.4})",
            (trainer.vocab_size() as f64).ln()
        );
    }
    let remaining = cfg.steps.saturating_sub(trainer.state.step);
    let bar = ProgressBar::new(remaining);
    bar.set_style(
        ProgressStyle::with_template(
            "{bar:30} {pos}/{len} {msg} [{elapsed_precise} < {eta_precise}]",
        )
        .map_err(|e| Error::invalid("progress", e.to_string()))?,
    );
    let started = Instant::now();
    interrupt::install();
    while trainer.state.step < cfg.steps {
        let step_started = Instant::now();
        let loss = trainer.train_step()?;
        let done = trainer.state.step;
        if log_interval > 0 && done % log_interval == 0 {
            let secs = step_started.elapsed().as_secs_f64();
            let line = format!(
                "step {done}: loss {loss:.4} ({:.0} ms, {:.0} tok/s)",
                secs * 1e3,
                tokens_per_step / secs
            );
            say(&bar, line);
        }
        let rate = bar.position().saturating_add(1) as f64 * tokens_per_step
            / started.elapsed().as_secs_f64();
        bar.set_message(format!("step {done} loss {loss:.4} {rate:.0} tok/s"));
        bar.inc(1);
        if bar.position() == 10 && remaining > 20 {
            let per_step = started.elapsed().as_secs_f64() / 10.0;
            let line = format!(
                "measured {:.0} ms/step: about {:.1} minutes for the remaining {} steps",
                per_step * 1e3,
                per_step * remaining as f64 / 60.0,
                remaining - 10
            );
            say(&bar, line);
        }
        if done % cfg.eval_interval == 0 || done == cfg.steps {
            let v = trainer.record_eval()?;
            let line = format!("step {done}: train loss {loss:.4}, held-out loss {v:.4}");
            say(&bar, line);
        }
        if interrupt::requested() {
            bar.finish_and_clear();
            trainer.save(&out)?;
            println!(
                "interrupted after step {done}: checkpoint saved to {}; continue with `smith train --resume {}`",
                out.display(),
                out.display()
            );
            std::process::exit(130);
        }
        if done % save_interval == 0 && done < cfg.steps {
            trainer.save(&out)?;
        }
    }
    bar.finish_and_clear();
    trainer.save(&out)?;
    interrupt::uninstall();
    if smith::profile::enabled() {
        let report = smith::profile::take_report()?;
        println!(
            "\n--- profile (GPU time per kernel) ---\n{}",
            report.table(25)
        );
        report.write_chrome_trace(&out.join("profile.json"))?;
        println!(
            "Chrome trace: {} (open in ui.perfetto.dev)",
            out.join("profile.json").display()
        );
    }

    plot::write_loss_svg(
        &out.join("loss.svg"),
        &trainer.state.train_losses,
        &trainer.state.val_losses,
    )?;
    let secs = started.elapsed().as_secs_f64();
    if let Some(&(s, v)) = trainer.state.val_losses.last() {
        println!("held-out loss {v:.4} at step {s}; {remaining} steps in {secs:.1}s");
    }
    println!(
        "checkpoint: {} (loss curves: {})",
        out.display(),
        out.join("loss.svg").display()
    );
    if let Some(dir) = &a.export_hf {
        smith::models::save_hf_gpt2(&trainer.model, dir, a.tokenizer.as_deref())?;
        println!("Hugging Face GPT-2 folder: {}", dir.display());
    }
    let Some(tokenizer) = &trainer.tokenizer else {
        return Ok(());
    };
    if a.sample_tokens > 0 {
        println!("\n--- sample ---");
        let sampling = Sampling {
            temperature: 0.8,
            top_p: Some(0.95),
            ..Sampling::default()
        };
        stream(
            &trainer.model,
            tokenizer,
            "\n",
            a.sample_tokens,
            &sampling,
            cfg.seed,
            device,
        )?;
        println!();
    }
    Ok(())
}

/// Prints a line above the progress bar (or plainly when the bar is hidden, e.g. in a pipe).
fn say(bar: &ProgressBar, line: String) {
    if bar.is_hidden() {
        println!("{line}");
    } else {
        bar.println(line);
    }
}

fn stream(
    model: &smith::models::Gpt,
    tok: &smith::text::CharTokenizer,
    prompt: &str,
    n: usize,
    s: &Sampling,
    seed: u64,
    device: Device,
) -> Result<()> {
    let ids = tok.encode(prompt)?;
    let mut rng = Rng::new(seed);
    let mut stdout = std::io::stdout();
    generate(model, &ids, n, s, &mut rng, device, |t| {
        write!(stdout, "{}", tok.decode(&[t]))
            .and_then(|_| stdout.flush())
            .map_err(|e| Error::io(Path::new("<stdout>"), e))?;
        Ok(true)
    })?;
    Ok(())
}

fn generate_cmd(a: GenerateArgs) -> Result<()> {
    let device = Device::parse(&a.device)?;
    let (model, tok) = smith::infer::load_model_with(&a.model, device, None, a.dequantize)?;
    let sampling = Sampling {
        temperature: a.temperature,
        top_k: a.top_k,
        top_p: a.top_p,
        min_p: a.min_p,
        repetition_penalty: a.repetition_penalty,
    };
    sampling.validate()?;
    if a.stop.iter().any(|s| s.is_empty()) {
        return Err(Error::invalid(
            "generate",
            "--stop needs a non-empty string (every text contains the empty one)",
        ));
    }
    let template = if a.chat {
        Some(smith::infer::chat_template(&a.model)?.ok_or_else(|| {
            Error::invalid(
                "generate",
                format!(
                    "--chat: {} has no chat template smith recognises (ChatML, Gemma, Llama 3, Phi 3, Llama 2)",
                    a.model.display()
                ),
            )
        })?)
    } else {
        None
    };
    let texts_in = a
        .prompt
        .iter()
        .map(|p| match &template {
            Some(t) => {
                let mut messages = Vec::new();
                if let Some(sys) = &a.system {
                    messages.push(smith::text::chat::Message::new("system", sys));
                }
                messages.push(smith::text::chat::Message::new("user", p));
                t.render(&messages)
            }
            None => Ok(p.clone()),
        })
        .collect::<Result<Vec<_>>>()?;
    let prompts = texts_in
        .iter()
        .map(|p| tok.encode_with(p, true, !a.no_bos))
        .collect::<Result<Vec<_>>>()?;
    if let Some(i) = prompts.iter().position(|p| p.is_empty()) {
        return Err(Error::invalid(
            "generate",
            format!("prompt {} encodes to no tokens", i + 1),
        ));
    }
    let chat_stops = template.as_ref().map_or(&[][..], |t| t.stop_tokens());
    let stop_ids: Vec<u32> = ["<|endoftext|>", "</s>", "<eos>"]
        .iter()
        .chain(chat_stops)
        .filter_map(|t| tok.token_id(t))
        .collect();
    // Prompts of one length run as one batch; a single prompt streams as it comes.
    let mut groups: Vec<(usize, Vec<usize>)> = Vec::new();
    for (i, p) in prompts.iter().enumerate() {
        match groups.iter_mut().find(|g| g.0 == p.len()) {
            Some(g) => g.1.push(i),
            None => groups.push((p.len(), vec![i])),
        }
    }
    let streaming = prompts.len() == 1;
    let mut rng = Rng::new(a.seed);
    let mut texts = vec![String::new(); prompts.len()];
    let (mut prompt_secs, mut gen_secs, mut prompt_tokens, mut gen_tokens) = (0.0, 0.0, 0, 0);
    for (len, members) in groups {
        let batch: Vec<Vec<u32>> = members.iter().map(|&i| prompts[i].clone()).collect();
        let mut decoders: Vec<StreamDecoder> = members.iter().map(|_| Default::default()).collect();
        let mut stdout = std::io::stdout();
        if streaming {
            print!("{}", a.prompt[0]);
        }
        let started = Instant::now();
        let mut first: Option<Instant> = None;
        let out = generate_batch(
            model.as_ref(),
            &batch,
            a.max_tokens,
            &sampling,
            &stop_ids,
            &mut rng,
            device,
            |row, t| {
                let now = Instant::now();
                first.get_or_insert(now);
                let piece = decoders[row].push(&tok, t)?;
                texts[members[row]].push_str(&piece);
                if streaming {
                    write!(stdout, "{piece}")
                        .and_then(|_| stdout.flush())
                        .map_err(|e| Error::io(Path::new("<stdout>"), e))?;
                }
                Ok(!a
                    .stop
                    .iter()
                    .any(|s| texts[members[row]].contains(s.as_str())))
            },
        )?;
        let end = Instant::now();
        let first = first.unwrap_or(end);
        prompt_secs += (first - started).as_secs_f64();
        gen_secs += (end - first).as_secs_f64();
        prompt_tokens += len * members.len();
        gen_tokens += out.iter().map(|o| o.len().saturating_sub(1)).sum::<usize>();
    }
    if streaming {
        println!();
    } else {
        for (p, t) in a.prompt.iter().zip(&texts) {
            println!("--- {p}{t}");
        }
    }
    eprintln!(
        "prompt: {prompt_tokens} tokens in {prompt_secs:.3}s ({:.1} tokens/s); generation: {gen_tokens} tokens in {gen_secs:.3}s ({:.1} tokens/s)",
        prompt_tokens as f64 / prompt_secs.max(1e-9),
        gen_tokens as f64 / gen_secs.max(1e-9)
    );
    Ok(())
}

fn perplexity_cmd(a: PerplexityArgs) -> Result<()> {
    let device = Device::parse(&a.device)?;
    let (model, tok) = load_model(&a.model, device)?;
    let text = std::fs::read_to_string(&a.file).map_err(|e| Error::io(&a.file, e))?;
    let ids = tok.encode_with(&text, false, !a.no_bos)?;
    let ctx = a.ctx.unwrap_or(model.context()).min(model.context());
    let stride = a.stride.unwrap_or(ctx);
    let started = Instant::now();
    let (ppl, n) = perplexity(model.as_ref(), &ids, ctx, stride, device)?;
    println!(
        "perplexity {ppl:.4} over {n} tokens (ctx {ctx}, stride {stride}) in {:.2}s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn bench_cmd(a: BenchArgs) -> Result<()> {
    let device = Device::parse(&a.device)?;
    let quick = a.quick || device == Device::Cpu;
    println!(
        "smith bench on {device}{}",
        if quick { " (quick sizes)" } else { "" }
    );
    let models_only = a.gpt2_only
        && (a.gpt2 || a.generate || a.attention || a.vision || a.clip || !a.gguf.is_empty());
    // PyTorch first: its process has exited, and freed the GPU, before smith allocates.
    let theirs = if a.no_baseline || !Path::new(&a.baseline).exists() {
        println!("(no PyTorch baseline: {} not run)", a.baseline);
        Default::default()
    } else {
        let flags = [
            (models_only, "--models-only"),
            (a.generate, "--generate"),
            (quick, "--quick"),
            (a.gpt2, "--gpt2"),
            (a.attention, "--attention"),
            (a.vision, "--vision"),
            (a.clip && !a.vision, "--clip"),
        ];
        let flags: Vec<&str> = flags.iter().filter(|f| f.0).map(|f| f.1).collect();
        bench::torch_baseline(&a.baseline, &flags)?
    };
    let mut ours = if models_only {
        Vec::new()
    } else {
        bench::run(device, quick)?
    };
    if a.gpt2 {
        for compute in [smith::DType::F32, smith::DType::BF16] {
            let (m, table) = bench::gpt2_step(device, a.profile, compute)?;
            ours.push(m);
            if let Some(table) = table {
                println!("Profile of two GPT-2 124M training steps ({compute}):\n{table}");
            }
        }
    }
    if a.generate {
        for dtype in [smith::DType::F32, smith::DType::BF16] {
            ours.push(bench::gpt2_generate(device, dtype, a.profile)?);
        }
    }
    for path in &a.gguf {
        ours.push(bench::gguf_decode(path, device)?);
    }
    if a.attention {
        let (measured, tables) = bench::attention(device, a.profile)?;
        ours.extend(measured);
        if let Some(tables) = tables {
            println!("Profile of fused attention:\n{tables}");
        }
    }
    if a.vision {
        let (measured, tables) = bench::vision(device, a.profile)?;
        ours.extend(measured);
        if let Some(tables) = tables {
            println!("Profile of the vision workloads:\n{tables}");
        }
    } else if a.clip {
        ours.extend(bench::clip_embeddings(device, a.profile)?);
    }
    println!("| workload | unit | smith | PyTorch | speed ratio | note |");
    println!("|---|---|---|---|---|---|");
    for m in &ours {
        let (torch, ratio) = match theirs.get(&m.name) {
            Some(&t) => (
                format!("{t:.3}"),
                format!("{:.2}x", m.unit.speedup(m.value, t)),
            ),
            None => ("-".to_string(), "-".to_string()),
        };
        println!(
            "| {} | {} | {:.3} | {torch} | {ratio} | {} |",
            m.name,
            m.unit.label(),
            m.value,
            m.note
        );
    }
    Ok(())
}
