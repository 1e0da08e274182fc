//! Labelled images on disk in torchvision's `ImageFolder` layout: one sub-folder per
//! class under a root, the classes sorted by name (their index is the label), the images
//! of each class found recursively and sorted by path.

use crate::{Error, Result};
use std::path::{Path, PathBuf};

/// File extensions read as images (compared without case).
const IMAGE_EXTENSIONS: [&str; 3] = ["png", "jpg", "jpeg"];

/// A labelled image collection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageFolder {
    /// Class names in label order.
    pub classes: Vec<String>,
    /// Every image with its label, class by class, paths sorted within a class.
    pub samples: Vec<(PathBuf, usize)>,
}

fn is_image(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.iter().any(|x| x.eq_ignore_ascii_case(e)))
}

/// The entries of `dir`, sorted by name.
fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut entries = std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .map(|e| e.map(|e| e.path()).map_err(|e| Error::io(dir, e)))
        .collect::<Result<Vec<_>>>()?;
    entries.sort();
    Ok(entries)
}

/// The images under `dir`, recursively, sorted by path.
fn images_under(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for path in sorted_entries(dir)? {
        if path.is_dir() {
            images_under(&path, out)?;
        } else if is_image(&path) {
            out.push(path);
        }
    }
    Ok(())
}

impl ImageFolder {
    /// Lists the classes and images under `root`; a root without class folders, or a
    /// class folder without images, is an error that names it.
    pub fn open(root: &Path) -> Result<Self> {
        let bad = |msg: String| Error::invalid("image folder", msg);
        let class_dirs: Vec<PathBuf> = sorted_entries(root)?
            .into_iter()
            .filter(|p| p.is_dir())
            .collect();
        if class_dirs.is_empty() {
            return Err(bad(format!(
                "{} has no class folders (expected ROOT/CLASS/IMAGE.png)",
                root.display()
            )));
        }
        let mut classes = Vec::with_capacity(class_dirs.len());
        let mut samples = Vec::new();
        for (label, dir) in class_dirs.iter().enumerate() {
            let name = dir
                .file_name()
                .and_then(|n| n.to_str())
                .ok_or_else(|| bad(format!("{} is not a UTF-8 class name", dir.display())))?;
            let mut images = Vec::new();
            images_under(dir, &mut images)?;
            if images.is_empty() {
                return Err(bad(format!(
                    "class folder {} holds no PNG or JPEG images",
                    dir.display()
                )));
            }
            classes.push(name.to_string());
            samples.extend(images.into_iter().map(|p| (p, label)));
        }
        Ok(ImageFolder { classes, samples })
    }

    /// Images per class, in label order.
    pub fn class_counts(&self) -> Vec<usize> {
        let mut counts = vec![0; self.classes.len()];
        for (_, label) in &self.samples {
            counts[*label] += 1;
        }
        counts
    }
}
