//! Checkpoint folders that are complete or absent, never mixed.
//!
//! A run folder `DIR` holds each checkpoint as a set in its own subfolder
//! (`DIR/step-000250`), and the one-line file `DIR/latest` names the current set. A save
//! writes a fresh `DIR/step-….tmp` folder, flushes every file and the folder to disk,
//! renames it into place, and only then replaces `latest` atomically: that replace is the
//! switch-over. The previous set is removed after the switch, stale temporaries at the next
//! save. A kill at any moment leaves `latest` naming a complete set (or no `latest` at all,
//! before the first save). Folders written before this layout (the files directly in
//! `DIR`) still load.

use crate::{Error, Result};
use std::path::{Path, PathBuf};

/// The file in a run folder that names its current checkpoint.
pub const LATEST: &str = "latest";

/// The folder holding the files of the current checkpoint of run folder `dir`: the set
/// `latest` names, or `dir` itself for a folder with the files at its top.
pub fn current_checkpoint(dir: &Path) -> Result<PathBuf> {
    let pointer = dir.join(LATEST);
    match std::fs::read_to_string(&pointer) {
        Ok(name) => {
            let name = name.trim();
            let valid = name.starts_with("step-")
                && !name.ends_with(".tmp")
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
            if !valid {
                return Err(Error::Checkpoint {
                    path: pointer,
                    msg: format!("`{name}` is not a checkpoint folder name"),
                });
            }
            Ok(dir.join(name))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(dir.to_path_buf()),
        Err(e) => Err(Error::io(&pointer, e)),
    }
}

/// Flushes a folder's entries (new names, renames) to disk.
pub fn sync_dir(dir: &Path) -> Result<()> {
    #[cfg(unix)]
    std::fs::File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(|e| Error::io(dir, e))?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// Checks, before a long run starts, that `dir` can be created and written: a probe file
/// is written and removed.
pub fn check_writable(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let probe = dir.join(format!(".write-probe-{}", std::process::id()));
    std::fs::write(&probe, b"smith").map_err(|e| Error::io(dir, e))?;
    std::fs::remove_file(&probe).map_err(|e| Error::io(&probe, e))?;
    Ok(())
}

/// Saves checkpoint `step` of run folder `dir` as a set: `write` fills a fresh folder with
/// the set's files, which then becomes current as one atomic switch. Returns the folder.
pub fn commit(dir: &Path, step: u64, write: impl FnOnce(&Path) -> Result<()>) -> Result<PathBuf> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    remove_stale(dir, None)?;
    let current = current_checkpoint(dir)?;
    // A name no earlier save used, so the current set is never written over.
    let name = (0u32..)
        .map(|n| match n {
            0 => format!("step-{step:06}"),
            n => format!("step-{step:06}-{n}"),
        })
        .find(|n| !dir.join(n).exists() && !dir.join(format!("{n}.tmp")).exists())
        .ok_or_else(|| Error::invalid("checkpoint", "no free folder name"))?;
    let tmp = dir.join(format!("{name}.tmp"));
    std::fs::create_dir(&tmp).map_err(|e| Error::io(&tmp, e))?;
    if let Err(e) = write(&tmp) {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    sync_dir(&tmp)?;
    let done = dir.join(&name);
    std::fs::rename(&tmp, &done).map_err(|e| Error::io(&done, e))?;
    sync_dir(dir)?;
    super::write_atomic(&dir.join(LATEST), format!("{name}\n").as_bytes())?;
    sync_dir(dir)?;
    remove_stale(dir, Some(&name))?;
    if current != dir && current != done {
        // The switch is made: the previous set may go.
        let _ = std::fs::remove_dir_all(&current);
    }
    Ok(done)
}

/// Removes what interrupted saves left in `dir`: `*.tmp` folders and files, and with
/// `keep` given, every set other than `keep`. Files of a checkpoint written before the
/// set layout stay where they are.
fn remove_stale(dir: &Path, keep: Option<&str>) -> Result<()> {
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        let stale_tmp = name.ends_with(".tmp");
        let old_set = keep.is_some_and(|k| name.starts_with("step-") && name != k);
        if !(stale_tmp || old_set) {
            continue;
        }
        let removed = if path.is_dir() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        removed.map_err(|e| Error::io(&path, e))?;
    }
    Ok(())
}
