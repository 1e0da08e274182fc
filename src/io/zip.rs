//! A reader for the zip archives `torch.save` writes: the central directory (zip64
//! included) and the bytes of stored (uncompressed) entries, borrowed from the file's
//! bytes. Every offset and length is checked against the file, so a truncated or corrupt
//! archive is an error, never a read past its end or an allocation beyond its size.

use crate::{Error, Result};
use std::path::Path;

/// One entry of the central directory.
#[derive(Clone, Debug)]
pub struct ZipEntry {
    /// The entry's name inside the archive (`archive/data.pkl`).
    pub name: String,
    /// Where its bytes start in the file.
    pub data_offset: usize,
    /// Its length in bytes.
    pub size: usize,
}

/// The entries of a zip archive held in memory (or memory-mapped).
pub struct ZipArchive<'a> {
    bytes: &'a [u8],
    path: &'a Path,
    /// Every entry, in the central directory's order.
    pub entries: Vec<ZipEntry>,
}

const EOCD: u32 = 0x0605_4b50;
const ZIP64_EOCD: u32 = 0x0606_4b50;
const ZIP64_LOCATOR: u32 = 0x0706_4b50;
const CENTRAL: u32 = 0x0201_4b50;
const LOCAL: u32 = 0x0403_4b50;

/// Little-endian reads that fail instead of reading past the end.
struct Reader<'a> {
    bytes: &'a [u8],
    path: &'a Path,
}

impl<'a> Reader<'a> {
    fn slice(&self, at: usize, len: usize) -> Result<&'a [u8]> {
        at.checked_add(len)
            .and_then(|end| self.bytes.get(at..end))
            .ok_or_else(|| corrupt(self.path, format!("{len} bytes at {at} are past its end")))
    }
    fn u16(&self, at: usize) -> Result<u16> {
        let b = self.slice(at, 2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&self, at: usize) -> Result<u32> {
        let b = self.slice(at, 4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&self, at: usize) -> Result<u64> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.slice(at, 8)?);
        Ok(u64::from_le_bytes(a))
    }
}

fn corrupt(path: &Path, msg: impl std::fmt::Display) -> Error {
    Error::Checkpoint {
        path: path.to_path_buf(),
        msg: format!("not a readable zip archive: {msg}"),
    }
}

fn to_usize(v: u64, path: &Path) -> Result<usize> {
    usize::try_from(v).map_err(|_| corrupt(path, format!("offset {v} does not fit in memory")))
}

impl<'a> ZipArchive<'a> {
    /// Whether `bytes` start like a zip archive (a local file header).
    pub fn is_zip(bytes: &[u8]) -> bool {
        bytes.len() >= 4 && u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) == LOCAL
    }

    /// Reads the central directory of `bytes` (the contents of `path`, named in errors).
    pub fn parse(bytes: &'a [u8], path: &'a Path) -> Result<Self> {
        let r = Reader { bytes, path };
        // The end-of-central-directory record is in the last 22 + 65535 bytes.
        let min = bytes.len().saturating_sub(22 + 0xFFFF);
        let eocd = (min..bytes.len().saturating_sub(21))
            .rev()
            .find(|&i| r.u32(i).ok() == Some(EOCD))
            .ok_or_else(|| corrupt(path, "no end-of-central-directory record (truncated?)"))?;
        let mut count = u64::from(r.u16(eocd + 10)?);
        let mut cd_size = u64::from(r.u32(eocd + 12)?);
        let mut cd_offset = u64::from(r.u32(eocd + 16)?);
        if count == 0xFFFF || cd_size == 0xFFFF_FFFF || cd_offset == 0xFFFF_FFFF {
            let loc = eocd
                .checked_sub(20)
                .filter(|&l| r.u32(l).ok() == Some(ZIP64_LOCATOR))
                .ok_or_else(|| corrupt(path, "zip64 sizes without a zip64 locator"))?;
            let rec = to_usize(r.u64(loc + 8)?, path)?;
            if r.u32(rec)? != ZIP64_EOCD {
                return Err(corrupt(path, "the zip64 locator points at no zip64 record"));
            }
            count = r.u64(rec + 32)?;
            cd_size = r.u64(rec + 40)?;
            cd_offset = r.u64(rec + 48)?;
        }
        let cd_offset = to_usize(cd_offset, path)?;
        r.slice(cd_offset, to_usize(cd_size, path)?)?;
        // Each central entry takes at least 46 bytes: a count beyond that is corrupt.
        if count > (cd_size / 46).max(1) {
            return Err(corrupt(path, format!("{count} entries in {cd_size} bytes")));
        }
        let mut entries = Vec::with_capacity(count as usize);
        let mut at = cd_offset;
        for _ in 0..count {
            if r.u32(at)? != CENTRAL {
                return Err(corrupt(path, format!("no central directory entry at {at}")));
            }
            let method = r.u16(at + 10)?;
            let mut compressed = u64::from(r.u32(at + 20)?);
            let mut size = u64::from(r.u32(at + 24)?);
            let name_len = usize::from(r.u16(at + 28)?);
            let extra_len = usize::from(r.u16(at + 30)?);
            let comment_len = usize::from(r.u16(at + 32)?);
            let mut local = u64::from(r.u32(at + 42)?);
            let name = String::from_utf8_lossy(r.slice(at + 46, name_len)?).into_owned();
            let extra = r.slice(at + 46 + name_len, extra_len)?;
            zip64_extra(extra, &mut size, &mut compressed, &mut local, path)?;
            if method != 0 {
                return Err(Error::Checkpoint {
                    path: path.to_path_buf(),
                    msg: format!(
                        "entry `{name}` is compressed (method {method}); only stored entries \
                         are read, as torch.save writes them"
                    ),
                });
            }
            if compressed != size {
                return Err(corrupt(path, format!("entry `{name}` has two sizes")));
            }
            let local = to_usize(local, path)?;
            if r.u32(local)? != LOCAL {
                return Err(corrupt(path, format!("entry `{name}` has no local header")));
            }
            let data_offset =
                local + 30 + usize::from(r.u16(local + 26)?) + usize::from(r.u16(local + 28)?);
            let size = to_usize(size, path)?;
            r.slice(data_offset, size).map_err(|_| {
                corrupt(
                    path,
                    format!("entry `{name}` runs past the end (truncated?)"),
                )
            })?;
            entries.push(ZipEntry {
                name,
                data_offset,
                size,
            });
            at += 46 + name_len + extra_len + comment_len;
        }
        Ok(ZipArchive {
            bytes,
            path,
            entries,
        })
    }

    /// The entry named `name`, if any.
    pub fn find(&self, name: &str) -> Option<&ZipEntry> {
        self.entries.iter().find(|e| e.name == name)
    }

    /// The bytes of the entry named `name`; its absence is an error naming it.
    pub fn read(&self, name: &str) -> Result<&'a [u8]> {
        let e = self
            .find(name)
            .ok_or_else(|| corrupt(self.path, format!("no entry `{name}`")))?;
        Ok(&self.bytes[e.data_offset..e.data_offset + e.size])
    }
}

/// Applies the zip64 extended-information field: the 64-bit values of whichever of
/// size, compressed size and offset were saturated in the 32-bit fields, in that order.
fn zip64_extra(
    mut extra: &[u8],
    size: &mut u64,
    compressed: &mut u64,
    local: &mut u64,
    path: &Path,
) -> Result<()> {
    while extra.len() >= 4 {
        let id = u16::from_le_bytes([extra[0], extra[1]]);
        let len = usize::from(u16::from_le_bytes([extra[2], extra[3]]));
        let body = extra
            .get(4..4 + len)
            .ok_or_else(|| corrupt(path, "an extra field runs past its entry"))?;
        if id == 1 {
            let mut fields = body.chunks_exact(8).map(|c| {
                let mut a = [0u8; 8];
                a.copy_from_slice(c);
                u64::from_le_bytes(a)
            });
            for v in [&mut *size, &mut *compressed, &mut *local] {
                if *v == 0xFFFF_FFFF {
                    *v = fields
                        .next()
                        .ok_or_else(|| corrupt(path, "a zip64 field is missing"))?;
                }
            }
        }
        extra = &extra[4 + len..];
    }
    Ok(())
}
