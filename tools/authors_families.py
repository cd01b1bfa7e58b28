#!/usr/bin/env python3
"""Writes tests/golden_families/: logits computed by the public modeling code
of two looped model families, on random models made by our maker, so that
tests/families_authors.rs can compare the runtime with the authors' code.

- Retrofitted recurrence (McLeish et al. 2025): `RavenForCausalLM` of
  `raven_modeling_minimal_llama.py` (Llama blocks as prelude, core and coda,
  an adapter), with `raven_config_minimal.py`; both from
  github.com/LoopedLMs/retrofitting-recurrence, `convert_pretrained_model/`.
- Ouro (ByteDance Seed): `OuroForCausalLM` of `modeling_ouro.py` (the Hugging
  Face hub file of ByteDance/Ouro-1.4B, or a copy). Its package imports an
  `OuroConfig` from `configuration_ouro`; this tool supplies a minimal one.

Usage:
    python3 tools/authors_families.py --raven-code DIR --ouro-code DIR [--rd target/release/rd]

Needs torch, transformers and gguf (not installed by tools/setup.sh: CI only
reads the files this writes). Measured with torch 2.15.0 and transformers
4.56.2 (`pip install torch transformers==4.56.2 gguf`; Ouro's file needs a
transformers with `masking_utils`). The modeling files are imported from a temporary
package in /tmp; nothing of them is copied into this repository.

What it does, per model (one manifest row per (model, iterations)):
1. `rd make-test-model` writes a random F32 file (`--retrofitted` or `--ouro`)
   and its FNV-1a 64 hash is recorded (the test rebuilds it from the row).
2. Every tensor is loaded into the authors' model (tools/reference.py reads
   the GGUF; ggml shapes are PyTorch's reversed, so matrices carry over
   unchanged; Ouro's q/k/v and gate/up are split again, its gate is a
   (1, hidden) row).
3. Logits of a 9-token prompt: for the retrofitted model at 1, 4 and 8
   recurrences from a zero state (`init_scale = 0`) and at 4 from the
   runtime's seeded state 5 (passed as `input_states`); for Ouro the
   hidden state of every loop of one 8-loop forward pass (each loop's
   attention reads only that loop's cache, so loop t is the model run with
   t loops) through the head, and the exit gate's lambda per loop at every
   position.
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import reference as ref  # noqa: E402

OUT = os.path.join(ROOT, "tests", "golden_families")
PROMPT = [1, 2, 3, 4, 77, 140, 9, 200, 31]

# name, family, seed, n_embd, n_head, n_head_kv, blocks, untied
MODELS = [
    ("retro-a", "retrofitted", 41, 128, 4, 2, "2,2,1", False),
    ("retro-b", "retrofitted", 42, 96, 2, 2, "1,3,2", True),
    ("ouro-a", "ouro", 43, 128, 4, 2, "0,3,0", False),
    ("ouro-b", "ouro", 44, 96, 2, 1, "0,2,0", True),
]

OURO_CONFIG = '''
from transformers import PretrainedConfig


class OuroConfig(PretrainedConfig):
    model_type = "ouro"

    def __init__(self, **kwargs):
        for k in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                  "num_attention_heads", "num_key_value_heads", "max_position_embeddings",
                  "rms_norm_eps", "rope_theta", "total_ut_steps"):
            setattr(self, k, kwargs.pop(k))
        self.hidden_act = "silu"
        self.rope_scaling = None
        self.attention_dropout = 0.0
        self.sliding_window = None
        self.layer_types = ["full_attention"] * self.num_hidden_layers
        self.use_cache = False
        self.early_exit_threshold = 1.0
        super().__init__(**kwargs)
'''


def fnv1a64(path):
    h = 0xcbf29ce484222325
    with open(path, "rb") as f:
        for b in f.read():
            h ^= b
            h = (h * 0x100000001b3) & 0xFFFFFFFFFFFFFFFF
    return f"{h:016x}"


def package(name, files, config_text=None):
    """A temporary package `name` holding the modeling files (and a config module)."""
    d = tempfile.mkdtemp(prefix="rd-authors-")
    pkg = os.path.join(d, name)
    os.makedirs(pkg)
    open(os.path.join(pkg, "__init__.py"), "w").close()
    for f in files:
        shutil.copy(f, pkg)
    if config_text:
        with open(os.path.join(pkg, "configuration_ouro.py"), "w") as f:
            f.write(config_text)
    sys.path.insert(0, d)
    return pkg


def retrofitted_logits(code_dir, m, cases):
    import torch
    package("authors_raven", [os.path.join(code_dir, "raven_modeling_minimal_llama.py"),
                              os.path.join(code_dir, "raven_config_minimal.py")])
    from authors_raven.raven_config_minimal import RavenConfig
    from authors_raven.raven_modeling_minimal_llama import RavenForCausalLM
    hp = m.hp
    cfg = RavenConfig(n_embd=hp.d, n_heads=hp.n_head, n_layers=hp.n_prelude + hp.n_core + hp.n_coda,
                      block_size=hp.context_length, vocab_size=hp.vocab, tie_embeddings=m.tied,
                      intermediate_size=hp.ffn, bias=False, norm_eps=hp.eps,
                      n_layers_in_recurrent_block=hp.n_core, n_layers_in_prelude=hp.n_prelude,
                      n_layers_in_coda=hp.n_coda, qk_bias=False, mean_recurrence=8)
    # As the retrofitting scripts set them.
    cfg.num_key_value_heads = hp.n_head_kv
    cfg.rope_theta = hp.rope_base
    cfg.rope_scaling = None
    cfg.max_position_embeddings = hp.context_length
    cfg.init_values["embed_scale"] = 1.0
    cfg.init_values["std"] = hp.state_init_std
    cfg._attn_implementation = "sdpa"
    model = RavenForCausalLM(cfg).eval()
    sd = {"transformer.wte.weight": m.token_embd, "transformer.adapter.weight": m.adapter,
          "transformer.ln_f.weight": m.output_norm, "lm_head.weight": m.output}
    parts = [("prelude", hp.n_prelude), ("core_block", hp.n_core), ("coda", hp.n_coda)]
    n = 0
    for part, count in parts:
        for i in range(count):
            b = m.blocks[n]
            p = f"transformer.{part}.{i}."
            sd[p + "norm_1.weight"] = b["attn_norm"]
            sd[p + "attn.Wqkv.weight"] = b["attn_qkv"]
            sd[p + "attn.proj.weight"] = b["attn_output"]
            sd[p + "norm_2.weight"] = b["ffn_norm"]
            sd[p + "mlp.fc.weight"] = b["ffn_gate_up"]
            sd[p + "mlp.proj.weight"] = b["ffn_down"]
            n += 1
    missing, unexpected = model.load_state_dict(
        {k: torch.tensor(np.asarray(v, dtype=np.float32)) for k, v in sd.items()}, strict=False)
    missing = [k for k in missing if not k.endswith("inv_freq")]
    assert not missing and not unexpected, (missing, unexpected)
    ids = torch.tensor([PROMPT])
    out = {}
    with torch.no_grad():
        for r, init in cases:
            if init == "zeros":
                res = model(ids, num_steps=[r, 0], init_scale=0.0, use_cache=False)
            else:
                state = ref.Session(m, r, init).initial_state(len(PROMPT))
                res = model(ids, num_steps=[r, 0], input_states=torch.tensor(
                    state[None].astype(np.float32)), use_cache=False)
            out[(r, init)] = res.logits[0].float().numpy()
    return out


def ouro_logits(code_dir, m, loops):
    import torch
    package("authors_ouro", [os.path.join(code_dir, "modeling_ouro.py")], OURO_CONFIG)
    from authors_ouro.configuration_ouro import OuroConfig
    from authors_ouro.modeling_ouro import OuroForCausalLM
    hp = m.hp
    cfg = OuroConfig(vocab_size=hp.vocab, hidden_size=hp.d, intermediate_size=hp.ffn,
                     num_hidden_layers=hp.n_core, num_attention_heads=hp.n_head,
                     num_key_value_heads=hp.n_head_kv, max_position_embeddings=hp.context_length,
                     rms_norm_eps=hp.eps, rope_theta=hp.rope_base, total_ut_steps=loops,
                     tie_word_embeddings=m.tied)
    cfg._attn_implementation = "eager"
    model = OuroForCausalLM(cfg).eval()
    q = hp.n_head * hp.head_dim
    kv = hp.n_head_kv * hp.head_dim
    sd = {"model.embed_tokens.weight": m.token_embd, "model.norm.weight": m.output_norm,
          "lm_head.weight": m.output, "model.early_exit_gate.weight": m.gate_w[None, :],
          "model.early_exit_gate.bias": np.array([m.gate_b])}
    for i, b in enumerate(m.blocks):
        p = f"model.layers.{i}."
        qkv = b["attn_qkv"]
        sd[p + "self_attn.q_proj.weight"] = qkv[:q]
        sd[p + "self_attn.k_proj.weight"] = qkv[q:q + kv]
        sd[p + "self_attn.v_proj.weight"] = qkv[q + kv:]
        sd[p + "self_attn.o_proj.weight"] = b["attn_output"]
        sd[p + "input_layernorm.weight"] = b["attn_norm"]
        sd[p + "input_layernorm_2.weight"] = b["attn_post_norm"]
        sd[p + "post_attention_layernorm.weight"] = b["ffn_norm"]
        sd[p + "post_attention_layernorm_2.weight"] = b["ffn_post_norm"]
        sd[p + "mlp.gate_proj.weight"] = b["ffn_gate_up"][:hp.ffn]
        sd[p + "mlp.up_proj.weight"] = b["ffn_gate_up"][hp.ffn:]
        sd[p + "mlp.down_proj.weight"] = b["ffn_down"]
    missing, unexpected = model.load_state_dict(
        {k: torch.tensor(np.asarray(v, dtype=np.float32)) for k, v in sd.items()}, strict=False)
    missing = [k for k in missing if not k.endswith("inv_freq")]
    assert not missing and not unexpected, (missing, unexpected)
    with torch.no_grad():
        _, states, gates = model.model(input_ids=torch.tensor([PROMPT]), use_cache=False)
        logits = [model.lm_head(h)[0].float().numpy() for h in states]
        lam = np.stack([torch.sigmoid(g)[0, :, 0].float().numpy() for g in gates])
    return logits, lam


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--raven-code", required=True)
    ap.add_argument("--ouro-code", required=True)
    ap.add_argument("--rd", default=os.path.join(ROOT, "target", "release", "rd"))
    args = ap.parse_args(argv)
    os.makedirs(OUT, exist_ok=True)
    rows = ["name\tfamily\tseed\tn_embd\tn_head\tn_head_kv\tblocks\ttied\titerations\tinit\tfnv1a64\tfile"]
    work = tempfile.mkdtemp(prefix="rd-families-")
    for name, family, seed, d, nh, nkv, blocks, untied in MODELS:
        path = os.path.join(work, f"{name}.gguf")
        cmd = [args.rd, "make-test-model", "--out", path, "--seed", str(seed), "--n-embd", str(d),
               "--n-head", str(nh), "--n-head-kv", str(nkv), "--blocks", blocks, "--no-qk-bias",
               f"--{family}"]
        if untied:
            cmd.append("--untied")
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        h = fnv1a64(path)
        m = ref.Model(path)
        tied = int(m.tied)
        common = f"{name}\t{family}\t{seed}\t{d}\t{nh}\t{nkv}\t{blocks}\t{tied}"
        if family == "retrofitted":
            cases = [(1, "zeros"), (4, "zeros"), (8, "zeros"), (4, 5)]
            for (r, init), logits in retrofitted_logits(args.raven_code, m, cases).items():
                f = f"{name}-r{r}-{init}.logits.npy"
                np.save(os.path.join(OUT, f), logits.astype(np.float32))
                rows.append(f"{common}\t{r}\t{init}\t{h}\t{f}")
        else:
            logits, lam = ouro_logits(args.ouro_code, m, 8)
            for r in (1, 2, 4, 8):
                f = f"{name}-r{r}-zeros.logits.npy"
                np.save(os.path.join(OUT, f), logits[r - 1].astype(np.float32))
                rows.append(f"{common}\t{r}\tzeros\t{h}\t{f}")
            f = f"{name}-gate.npy"
            np.save(os.path.join(OUT, f), lam.astype(np.float32))   # [loops, positions]
            rows.append(f"{common}\t0\tgate\t{h}\t{f}")
        # The independent reference agrees (a check of this tool's mapping).
        for row in rows[1:]:
            cols = row.split("\t")
            if cols[0] != name or cols[9] == "gate":
                continue
            r, init = int(cols[8]), cols[9]
            want = np.load(os.path.join(OUT, cols[11]))
            got, _, _, _ = ref.run(m, PROMPT, r, r, "zeros" if init == "zeros" else int(init))
            err = np.abs(got - want).max() / np.ptp(want)
            print(f"{name} r={r} init={init}: reference vs authors {err:.2e} of the logit range")
            assert err < 1e-4, err
    with open(os.path.join(OUT, "manifest.tsv"), "w") as f:
        f.write("\n".join(rows) + "\n")
    print(f"wrote {len(rows) - 1} rows to {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
