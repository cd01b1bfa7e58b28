"""The demo model's task without PyTorch: its character tokenizer (Huginn's
special-token names) and the addition problems it is trained and evaluated
on. tools/train_demo.py trains on them; tools/eval_demo.py rebuilds the
held-out problems from here, so evaluating a GGUF needs no PyTorch.
"""

from __future__ import annotations

import random

# ---------------------------------------------------------------------------
# Tokenizer: one token per character, Huginn's special-token names.
# ---------------------------------------------------------------------------

CHARS = list("0123456789+=")
SPECIALS = [
    "<|begin_text|>",  # bos
    "<|end_text|>",  # eos: ends an answer
    "<|begin_header|>",
    "<|end_header|>",
    "<|end_turn|>",
    "<|pad|>",
]
VOCAB = CHARS + SPECIALS
TOKEN_ID = {t: i for i, t in enumerate(VOCAB)}
BOS = TOKEN_ID["<|begin_text|>"]
EOS = TOKEN_ID["<|end_text|>"]
PAD = TOKEN_ID["<|pad|>"]

# The prompt is the problem text; the answer follows and ends with <|end_text|>.
# A conversation is rendered as bos + user text (+ assistant text + eos ...).
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['role'] == 'assistant' %}{{ message['content'] }}{{ eos_token }}"
    "{% else %}{{ message['content'] }}{% endif %}"
    "{% endfor %}"
)


def encode(text: str, bos: bool = True) -> list[int]:
    ids = [TOKEN_ID[c] for c in text]
    return [BOS] + ids if bos else ids


def decode(ids) -> str:
    return "".join(VOCAB[i] for i in ids if i < len(CHARS))


def build_hf_tokenizer():
    """A GPT-2 style byte-level BPE tokenizer with no merges: every character of
    the task is its own token (digits, '+' and '=' map to themselves under the
    byte-level alphabet)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    vocab = {t: i for i, t in enumerate(CHARS)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(SPECIALS)
    assert tok.get_vocab_size() == len(VOCAB)
    for t in VOCAB:
        assert tok.token_to_id(t) == TOKEN_ID[t], t
    return tok


def tokenizer_config() -> dict:
    return {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": "<|begin_text|>",
        "eos_token": "<|end_text|>",
        "pad_token": "<|pad|>",
        "add_bos_token": True,
        "add_eos_token": False,
        "model_max_length": 64,
        "chat_template": CHAT_TEMPLATE,
    }


# ---------------------------------------------------------------------------
# The task: a+b with up to N digits per operand, answer written normally.
# ---------------------------------------------------------------------------


def random_operand(rng: random.Random, max_digits: int) -> int:
    n = rng.randint(1, max_digits)
    if n == 1:
        return rng.randint(0, 9)
    return rng.randint(10 ** (n - 1), 10**n - 1)


def carry_problem_always(rng: random.Random, max_digits: int) -> tuple[int, int]:
    """Two operands of one length whose sum has a long carry chain: a digit pair
    that carries, then a run of pairs summing to 9 (each passes the carry on).
    (Used by the second training stage of the bundled model; it biases the model
    towards assuming that a run of 9s carries, which --carry-kind mixed corrects.)"""
    n = rng.randint(2, max_digits)
    start = rng.randint(0, n - 2)  # position (from the right) of the first carry
    run = rng.randint(1, n - 1 - start)
    a = b = 0
    for pos in range(n):
        if pos == start:
            x = rng.randint(1, 9)
            y = rng.randint(10 - x, 9)
        elif start < pos <= start + run:
            x = rng.randint(0, 9)
            y = 9 - x
        else:
            x, y = rng.randint(0, 9), rng.randint(0, 9)
        if pos == n - 1:  # no leading zeros
            x, y = max(x, 1), max(y, 1)
        a += x * 10**pos
        b += y * 10**pos
    return (a, b) if rng.random() < 0.5 else (b, a)


def carry_problem(rng: random.Random, max_digits: int) -> tuple[int, int]:
    """Two operands with a run of digit pairs that sum to 9 (each passes a carry
    on), above a pair that either carries (sum >= 10) or not (sum <= 8), half
    and half: only the bottom of the run tells whether the whole run carries.
    Sometimes one operand is shorter (its missing digits count as 0)."""
    n = rng.randint(2, max_digits)
    m = n if rng.random() < 0.7 else rng.randint(1, n - 1)  # digits of the shorter one
    start = rng.randint(0, m - 1)  # bottom of the chain
    top = rng.randint(start + 1, n - 1) if start < n - 1 else start
    carries = rng.random() < 0.5
    a = b = 0
    for pos in range(n):
        lo_x = 1 if pos == n - 1 else 0
        lo_y = 1 if (pos == m - 1 and m > 1) else 0
        while True:
            x = rng.randint(lo_x, 9)
            y = rng.randint(lo_y, 9) if pos < m else 0
            if pos == start:
                ok = (x + y >= 10) if carries else (x + y <= 8)
            elif start < pos <= top:
                ok = x + y == 9
            else:
                ok = True
            if ok:
                break
        a += x * 10**pos
        b += y * 10**pos
    return (a, b) if rng.random() < 0.5 else (b, a)


def answer_text(a: int, b: int, order: str) -> str:
    s = str(a + b)
    return s[::-1] if order == "lsd" else s


def make_problems(seed: int, n: int, max_digits: int, exclude=None) -> list[tuple[int, int]]:
    rng = random.Random(seed)
    out, seen = [], set(exclude or ())
    while len(out) < n:
        p = (random_operand(rng, max_digits), random_operand(rng, max_digits))
        if p in seen:
            continue
        seen.add(p)
        out.append(p)
    return out


def carry_chain(a: int, b: int) -> int:
    """Length of the longest run of consecutive carries when adding a and b."""
    best = run = carry = 0
    while a or b or carry:
        s = a % 10 + b % 10 + carry
        carry = 1 if s >= 10 else 0
        run = run + 1 if carry else 0
        best = max(best, run)
        a //= 10
        b //= 10
    return best
