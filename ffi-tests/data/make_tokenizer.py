#!/usr/bin/env python3
"""Writes tokenizer.json next to this script: the byte-level BPE vocabulary of
the C API tests' tokenizer model (see ../Makefile).

ids 0..255 are the 256 bytes (GPT-2's byte-to-character table, in byte
order), then a few merges (ASCII ones, and ones that make tokens of part of a
multi-byte UTF-8 character, so characters split across tokens), then Huginn's
special tokens. A TemplateProcessing post-processor puts <|begin_text|> first,
so the tokenizer asks for a BOS. Plain `json` only; the output is committed.
"""
import json
import os

def byte_chars():
    printable = list(range(33, 127)) + list(range(161, 173)) + list(range(174, 256))
    table, n = {}, 0
    for b in range(256):
        if b in printable:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + n)
            n += 1
    return [table[b] for b in range(256)]

def bl(data: bytes) -> str:
    t = byte_chars()
    return "".join(t[b] for b in data)

MERGES = [
    (b" ", b"t"), (b"h", b"e"), (b" t", b"he"), (b"i", b"n"), (b"e", b"r"),
    (b"l", b"l"), (b"H", b"i"),
    # Whole two-byte characters: e with acute accent, n with tilde.
    (b"\xc3", b"\xa9"), (b"\xc3", b"\xb1"),
    # The first two bytes of the euro sign (E2 82 AC) and of the emoji
    # U+1F600 (F0 9F 98 80): these characters always end in another token.
    (b"\xe2", b"\x82"), (b"\xf0", b"\x9f"),
]
SPECIALS = ["<|begin_text|>", "<|end_text|>", "<|begin_header|>", "<|end_header|>",
            "<|end_turn|>", "<|pad|>"]

def main():
    vocab = {c: i for i, c in enumerate(byte_chars())}
    merges = []
    for a, b in MERGES:
        merges.append([bl(a), bl(b)])
        vocab[bl(a + b)] = len(vocab)
    added = []
    for s in SPECIALS:
        added.append({"id": len(vocab) + len(added), "content": s, "single_word": False,
                      "lstrip": False, "rstrip": False, "normalized": False,
                      "special": True})
    bos = added[0]
    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
                  "use_regex": True}
    tok = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": None,
        "pre_tokenizer": byte_level,
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": bos["content"], "type_id": 0}},
                       {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": bos["content"], "type_id": 0}},
                     {"Sequence": {"id": "A", "type_id": 0}},
                     {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {bos["content"]: {"id": bos["content"], "ids": [bos["id"]],
                                                "tokens": [bos["content"]]}},
        },
        "decoder": byte_level,
        "model": {"type": "BPE", "dropout": None, "unk_token": None,
                  "continuing_subword_prefix": None, "end_of_word_suffix": None,
                  "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                  "vocab": vocab, "merges": merges},
    }
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tokenizer.json")
    with open(out, "w", encoding="utf-8") as f:
        json.dump(tok, f, ensure_ascii=False, indent=1)
        f.write("\n")
    print(f"wrote {out}: {len(vocab) + len(added)} ids")

if __name__ == "__main__":
    main()
