"""CLIP's BPE vocabulary (OpenAI's bpe_simple_vocab_16e6.txt.gz) as the files Hugging Face
checkpoints carry: vocab.json and merges.txt (what transformers' CLIPTokenizer reads) and
tokenizer.json (what smith reads through the `tokenizers` crate), built here with the
standard library alone.

    python3 tools/make_clip_vocab.py bpe_simple_vocab_16e6.txt.gz OUT_DIR

The vocabulary is OpenAI's: the 256 byte symbols, the same with the end-of-word mark
`</w>`, one symbol per merge (the first 48,894), then <|startoftext|> and <|endoftext|>:
49,408 ids. The tokenizer pipeline is the one transformers builds for CLIP: NFC, runs of
whitespace to one space, lowercase; CLIP's split pattern; byte-level symbols; BOS and EOS
around every text.
"""

import gzip
import json
import sys


def bytes_to_unicode():
    """GPT-2's reversible map from bytes to printable characters."""
    bs = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("\u00a1"), ord("\u00ac") + 1))
        + list(range(ord("\u00ae"), ord("\u00ff") + 1))
    )
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


def main():
    src, out = sys.argv[1], sys.argv[2]
    lines = gzip.open(src).read().decode("utf-8").split("\n")
    merges = [tuple(m.split()) for m in lines[1 : 49152 - 256 - 2 + 1]]
    symbols = list(bytes_to_unicode().values())
    vocab = symbols + [s + "</w>" for s in symbols]
    vocab += ["".join(m) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    ids = {tok: i for i, tok in enumerate(vocab)}
    assert len(ids) == 49408, len(ids)
    bos, eos = ids["<|startoftext|>"], ids["<|endoftext|>"]

    with open(f"{out}/vocab.json", "w", encoding="utf-8") as f:
        json.dump(ids, f, ensure_ascii=False)
    with open(f"{out}/merges.txt", "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n")
        for a, b in merges:
            f.write(f"{a} {b}\n")

    def special(i, content):
        return {
            "id": i,
            "content": content,
            "single_word": False,
            "lstrip": False,
            "rstrip": False,
            "normalized": True,
            "special": True,
        }

    tokenizer = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [special(bos, "<|startoftext|>"), special(eos, "<|endoftext|>")],
        "normalizer": {
            "type": "Sequence",
            "normalizers": [
                {"type": "NFC"},
                {"type": "Replace", "pattern": {"Regex": "\\s+"}, "content": " "},
                {"type": "Lowercase"},
            ],
        },
        "pre_tokenizer": {
            "type": "Sequence",
            "pretokenizers": [
                {
                    "type": "Split",
                    "pattern": {
                        "Regex": "'s|'t|'re|'ve|'m|'ll|'d|[\\p{L}]+|[\\p{N}]|[^\\s\\p{L}\\p{N}]+"
                    },
                    "behavior": "Removed",
                    "invert": True,
                },
                {
                    "type": "ByteLevel",
                    "add_prefix_space": False,
                    "trim_offsets": True,
                    "use_regex": False,
                },
            ],
        },
        "post_processor": {
            "type": "RobertaProcessing",
            "sep": ["<|endoftext|>", eos],
            "cls": ["<|startoftext|>", bos],
            "trim_offsets": False,
            "add_prefix_space": False,
        },
        "decoder": {
            "type": "ByteLevel",
            "add_prefix_space": True,
            "trim_offsets": True,
            "use_regex": True,
        },
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": "<|endoftext|>",
            "continuing_subword_prefix": "",
            "end_of_word_suffix": "</w>",
            "fuse_unk": False,
            "byte_fallback": False,
            "ignore_merges": False,
            "vocab": ids,
            "merges": [f"{a} {b}" for a, b in merges],
        },
    }
    with open(f"{out}/tokenizer.json", "w", encoding="utf-8") as f:
        json.dump(tokenizer, f, ensure_ascii=False)


if __name__ == "__main__":
    main()
