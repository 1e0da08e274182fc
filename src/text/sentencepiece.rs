//! Llama-style SentencePiece tokenization with scores, as GGUF files carry it
//! (`tokenizer.ggml.model = "llama"`): spaces become `▁`, a `▁` is put in front, then the
//! adjacent pair whose joined text is in the vocabulary with the highest score is merged
//! until none is left; pieces outside the vocabulary fall back to `<0xXX>` byte tokens.

use crate::{Error, Result};
use std::collections::{BinaryHeap, HashMap};

/// The vocabulary of a SentencePiece tokenizer.
pub struct SpmTokenizer {
    pieces: Vec<String>,
    scores: Vec<f32>,
    /// GGUF token types (1 normal, 2 unknown, 3 control, 6 byte, ...).
    types: Vec<u64>,
    ids: HashMap<String, u32>,
    byte_ids: [Option<u32>; 256],
    /// Token id of `<s>`, put first when special tokens are asked for.
    pub bos: Option<u32>,
    add_bos: bool,
    add_space_prefix: bool,
    /// Control and user-defined pieces (`<start_of_turn>`, ...) by first character,
    /// longest first: with `special`, text that spells one becomes that token.
    specials: HashMap<char, Vec<(String, u32)>>,
}

/// A candidate merge: joined score, its left and right symbols, joined byte length.
#[derive(PartialEq)]
struct Bigram {
    score: f32,
    left: usize,
    right: usize,
    len: usize,
}

impl Eq for Bigram {}

impl Ord for Bigram {
    /// Highest score first; the leftmost pair among equal scores.
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.score
            .total_cmp(&other.score)
            .then(other.left.cmp(&self.left))
    }
}

impl PartialOrd for Bigram {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl SpmTokenizer {
    /// A tokenizer from its pieces, scores and types (all of one length).
    pub fn new(
        pieces: Vec<String>,
        scores: Vec<f32>,
        types: Vec<u64>,
        bos: Option<u32>,
        add_bos: bool,
        add_space_prefix: bool,
    ) -> Result<Self> {
        if scores.len() != pieces.len() || types.len() != pieces.len() {
            return Err(Error::invalid(
                "tokenizer",
                format!(
                    "{} pieces but {} scores and {} types",
                    pieces.len(),
                    scores.len(),
                    types.len()
                ),
            ));
        }
        let ids: HashMap<String, u32> = pieces
            .iter()
            .enumerate()
            .map(|(i, p)| (p.clone(), i as u32))
            .collect();
        let mut byte_ids = [None; 256];
        for (b, slot) in byte_ids.iter_mut().enumerate() {
            *slot = ids.get(&format!("<0x{b:02X}>")).copied();
        }
        let mut specials: HashMap<char, Vec<(String, u32)>> = HashMap::new();
        for (i, (p, &t)) in pieces.iter().zip(&types).enumerate() {
            if let (3 | 4, Some(c)) = (t, p.chars().next()) {
                specials.entry(c).or_default().push((p.clone(), i as u32));
            }
        }
        for v in specials.values_mut() {
            v.sort_by_key(|p| std::cmp::Reverse(p.0.len()));
        }
        Ok(SpmTokenizer {
            specials,
            pieces,
            scores,
            types,
            ids,
            byte_ids,
            bos,
            add_bos,
            add_space_prefix,
        })
    }

    /// Token ids of `text`; `special` puts BOS first when the model asks for it and turns
    /// control and user-defined pieces spelled in the text (`<start_of_turn>`) into their
    /// tokens.
    pub fn encode(&self, text: &str, special: bool) -> Result<Vec<u32>> {
        self.encode_with(text, special, special)
    }

    /// [`SpmTokenizer::encode`] with BOS (when the model asks for it) chosen apart from the
    /// parsing of control pieces.
    pub fn encode_with(&self, text: &str, special: bool, bos: bool) -> Result<Vec<u32>> {
        let mut out = Vec::new();
        if bos && self.add_bos {
            out.extend(self.bos);
        }
        if !special {
            self.encode_plain(text, true, &mut out)?;
            return Ok(out);
        }
        let mut start = 0;
        let mut first = true;
        let mut i = 0;
        while i < text.len() {
            let c = text[i..].chars().next().unwrap_or(' ');
            let hit = self.specials.get(&c).and_then(|cands| {
                cands
                    .iter()
                    .find(|(p, _)| text[i..].starts_with(p.as_str()))
            });
            match hit {
                Some((p, id)) => {
                    self.encode_plain(&text[start..i], first, &mut out)?;
                    out.push(*id);
                    first = false;
                    i += p.len();
                    start = i;
                }
                None => i += c.len_utf8(),
            }
        }
        self.encode_plain(&text[start..], first, &mut out)?;
        Ok(out)
    }

    /// Appends the ids of text holding no special pieces (`first`: it starts the input, so
    /// it takes the space prefix when the model uses one).
    fn encode_plain(&self, text: &str, first: bool, out: &mut Vec<u32>) -> Result<()> {
        if text.is_empty() {
            return Ok(());
        }
        let mut s = String::with_capacity(text.len() + 3);
        if self.add_space_prefix && first {
            s.push(' ');
        }
        s.push_str(text);
        let s = s.replace(' ', "\u{2581}");
        // Symbols: byte ranges of s, linked as a list; merged-away symbols get length 0.
        let start: Vec<usize> = s.char_indices().map(|(i, _)| i).collect();
        let mut len: Vec<usize> = start
            .iter()
            .enumerate()
            .map(|(k, &i)| start.get(k + 1).copied().unwrap_or(s.len()) - i)
            .collect();
        let n = start.len();
        let mut prev: Vec<Option<usize>> = (0..n).map(|k| k.checked_sub(1)).collect();
        let mut next: Vec<Option<usize>> = (0..n).map(|k| (k + 1 < n).then_some(k + 1)).collect();
        let mut heap = BinaryHeap::new();
        let push =
            |heap: &mut BinaryHeap<Bigram>, start: &[usize], len: &[usize], l: usize, r: usize| {
                let joined = &s[start[l]..start[r] + len[r]];
                if let Some(&id) = self.ids.get(joined) {
                    heap.push(Bigram {
                        score: self.scores[id as usize],
                        left: l,
                        right: r,
                        len: joined.len(),
                    });
                }
            };
        for k in 1..n {
            push(&mut heap, &start, &len, k - 1, k);
        }
        while let Some(b) = heap.pop() {
            let (l, r) = (b.left, b.right);
            // Stale: one side changed since this pair was queued.
            if len[l] == 0 || len[r] == 0 || len[l] + len[r] != b.len {
                continue;
            }
            len[l] += len[r];
            len[r] = 0;
            next[l] = next[r];
            if let Some(rn) = next[r] {
                prev[rn] = Some(l);
            }
            if let Some(p) = prev[l] {
                push(&mut heap, &start, &len, p, l);
            }
            if let Some(nx) = next[l] {
                push(&mut heap, &start, &len, l, nx);
            }
        }
        let mut k = Some(0);
        while let Some(i) = k {
            let piece = &s[start[i]..start[i] + len[i]];
            match self.ids.get(piece) {
                Some(&id) => out.push(id),
                None => {
                    for b in piece.bytes() {
                        let id = self.byte_ids[b as usize].ok_or_else(|| {
                            Error::invalid(
                                "tokenizer",
                                format!("no token for {piece:?} and no byte token <0x{b:02X}>"),
                            )
                        })?;
                        out.push(id);
                    }
                }
            }
            k = next[i];
        }
        Ok(())
    }

    /// The text of `ids`: `▁` back to spaces, byte tokens back to bytes, control and
    /// unknown tokens skipped.
    pub fn decode(&self, ids: &[u32]) -> String {
        let mut bytes = Vec::new();
        for &id in ids {
            let Some(piece) = self.pieces.get(id as usize) else {
                continue;
            };
            match self.types[id as usize] {
                2 | 3 => {}
                6 => {
                    let hex = piece.trim_start_matches("<0x").trim_end_matches('>');
                    if let Ok(b) = u8::from_str_radix(hex, 16) {
                        bytes.push(b);
                    }
                }
                _ => bytes.extend(piece.replace('\u{2581}', " ").bytes()),
            }
        }
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// The id of a piece.
    pub fn token_id(&self, piece: &str) -> Option<u32> {
        self.ids.get(piece).copied()
    }
}
