//! Checks on the hyper-parameters a file claims, made before anything is allocated: sizes
//! must be positive, consistent with each other and with the tensors the file actually
//! holds, and free of overflow. Each failure is one error naming the file, the key and
//! the value, so a crafted or damaged file cannot make a loader divide by zero, build
//! layers until memory runs out or ask for terabytes.

use crate::{Error, Result};
use std::collections::BTreeSet;
use std::path::Path;

/// Most parameters a model may claim (2^40, a few terabytes of f32): any product past it
/// is refused before it is used as a size.
pub const MAX_PARAMS: u64 = 1 << 40;

/// The error for hyper-parameter `key` of `path` holding `value`.
pub fn hyper_error(path: &Path, key: &str, value: impl std::fmt::Display, why: &str) -> Error {
    Error::Checkpoint {
        path: path.to_path_buf(),
        msg: format!("`{key}` = {value}: {why}"),
    }
}

/// Refuses a zero `value` for `key`.
pub fn positive(path: &Path, key: &str, value: usize) -> Result<()> {
    if value == 0 {
        return Err(hyper_error(path, key, value, "must be positive"));
    }
    Ok(())
}

/// Requires tensor `name` to have `want` (given by hyper-parameter `key` = `value`), or
/// says what it has instead.
pub fn expect_shape(
    path: &Path,
    key: &str,
    value: usize,
    name: &str,
    have: Option<&[usize]>,
    want: &[usize],
) -> Result<()> {
    match have {
        None => Err(Error::Checkpoint {
            path: path.to_path_buf(),
            msg: format!("missing tensor `{name}`"),
        }),
        Some(s) if s == want => Ok(()),
        Some(s) => Err(hyper_error(
            path,
            key,
            value,
            &format!("tensor `{name}` is {s:?}, not the {want:?} this implies"),
        )),
    }
}

/// The number of layers the tensor names hold: distinct `N` in `{prefix}N.…`.
pub fn layers_present<'a>(names: impl IntoIterator<Item = &'a str>, prefix: &str) -> usize {
    let found: BTreeSet<usize> = names
        .into_iter()
        .filter_map(|n| n.strip_prefix(prefix))
        .filter_map(|rest| rest.split('.').next()?.parse().ok())
        .collect();
    found.len()
}

/// Requires the layer count `key` = `claimed` to equal the layers present.
pub fn expect_layers(path: &Path, key: &str, claimed: usize, present: usize) -> Result<()> {
    if claimed != present {
        return Err(hyper_error(
            path,
            key,
            claimed,
            &format!("the file holds tensors for {present} layers"),
        ));
    }
    Ok(())
}

/// `a * b` for sizes claimed by hyper-parameter `key`, or an error when it overflows.
pub fn mul(path: &Path, key: &str, a: usize, b: usize) -> Result<usize> {
    a.checked_mul(b)
        .filter(|&n| n as u64 <= MAX_PARAMS)
        .ok_or_else(|| hyper_error(path, key, a, &format!("times {b} overflows")))
}

/// The shape checks shared by every GPT-2-style source (a Hugging Face folder, a smith
/// checkpoint): `shape(name)` gives the shape of a tensor under smith's names, `key(field)`
/// the name of the field in the source's config, `names` every tensor name.
pub fn check_gpt_shape<'a>(
    path: &Path,
    cfg: &super::GptConfig,
    key: impl Fn(&str) -> String,
    shape: impl Fn(&str) -> Option<Vec<usize>>,
    names: impl IntoIterator<Item = &'a str>,
) -> Result<()> {
    positive(path, &key("vocab_size"), cfg.vocab_size)?;
    positive(path, &key("n_positions"), cfg.block_size)?;
    positive(path, &key("n_embd"), cfg.n_embd)?;
    positive(path, &key("n_layer"), cfg.n_layer)?;
    positive(path, &key("n_head"), cfg.n_head)?;
    if !cfg.n_embd.is_multiple_of(cfg.n_head) {
        return Err(hyper_error(
            path,
            &key("n_head"),
            cfg.n_head,
            &format!("does not divide the width {}", cfg.n_embd),
        ));
    }
    let wte = shape("wte.weight");
    // The width is judged first, so that a wrong `n_embd` is not reported as the vocabulary.
    match wte.as_deref() {
        Some(&[rows, cols]) if cols != cfg.n_embd => {
            return Err(hyper_error(
                path,
                &key("n_embd"),
                cfg.n_embd,
                &format!("tensor `wte.weight` is [{rows}, {cols}]"),
            ))
        }
        _ => {}
    }
    expect_shape(
        path,
        &key("vocab_size"),
        cfg.vocab_size,
        "wte.weight",
        wte.as_deref(),
        &[cfg.vocab_size, cfg.n_embd],
    )?;
    expect_shape(
        path,
        &key("n_positions"),
        cfg.block_size,
        "wpe.weight",
        shape("wpe.weight").as_deref(),
        &[cfg.block_size, cfg.n_embd],
    )?;
    expect_layers(
        path,
        &key("n_layer"),
        cfg.n_layer,
        layers_present(names, "h."),
    )
}
