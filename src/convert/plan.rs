//! Which GGUF tensors a Huginn checkpoint becomes: names, shapes and storage
//! types.

use crate::gguf::GgmlType;

use super::HfConfig;
use super::config::Layout;

/// Part of a checkpoint tensor that one GGUF tensor takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Piece {
    /// The whole tensor.
    Whole,
    /// Half `i` (0: q, 1: k) of `attn.qk_bias`, flattened.
    QkHalf(usize),
    /// The whole tensor, a single row `(1, n)` stored as a vector `[n]`
    /// (Ouro's exit gate).
    Row,
    /// Not in the checkpoint: Llama 3's RoPE frequency divisors, computed
    /// from `rope_scaling` (`rope_freqs.weight`).
    RopeFactors,
}

/// Whether a tensor is a weight matrix (stored in the requested type) or a
/// vector (norm weight or bias, always F32).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A matrix; quantizable along rows of `shape[0]` elements.
    Matrix,
    /// A norm weight or bias.
    Vector,
}

/// One tensor of the output file.
#[derive(Clone, Debug, PartialEq)]
pub struct Planned {
    /// GGUF name (`blk.3.attn_qkv.weight`).
    pub name: String,
    /// Checkpoint name it comes from.
    pub source: String,
    /// Which part of the source.
    pub piece: Piece,
    /// Matrix or vector.
    pub kind: Kind,
    /// Shape in ggml order (row length first).
    pub shape: Vec<u64>,
    /// Storage type.
    pub ty: GgmlType,
    /// Why `ty` differs from the type asked for, if it does.
    pub note: Option<String>,
}

impl Planned {
    /// Elements per row (ggml `ne0`).
    pub fn row_len(&self) -> usize {
        self.shape.first().copied().unwrap_or(1) as usize
    }
}

/// A checkpoint tensor the model needs, with its expected PyTorch shape.
#[derive(Clone, Debug, PartialEq)]
pub struct Expected {
    /// Checkpoint name.
    pub name: String,
    /// PyTorch shape.
    pub shape: Vec<usize>,
}

/// The name a checkpoint's block `i` of `part` has.
fn block_prefix(part: &str, i: usize) -> String {
    format!("transformer.{part}.{i}")
}

/// The block layout of a checkpoint's tensors: pre-norm (retrofitted) when
/// its first block has `norm_1` and `norm_2` but no `norm_3`, else Huginn's.
pub fn detect_layout(cfg: &HfConfig, has: impl Fn(&str) -> bool) -> Layout {
    let first = blocks(cfg).into_iter().next().map(|(p, _)| p);
    match first {
        Some(p)
            if has(&format!("{p}.norm_1.weight"))
                && has(&format!("{p}.norm_2.weight"))
                && !has(&format!("{p}.norm_3.weight")) =>
        {
            Layout::Retrofitted
        }
        _ => Layout::Huginn,
    }
}

/// Every block as (checkpoint prefix, GGUF index), in GGUF order.
fn blocks(cfg: &HfConfig) -> Vec<(String, usize)> {
    let mut out = Vec::with_capacity(cfg.n_blocks());
    for i in 0..cfg.n_prelude {
        out.push((block_prefix("prelude", i), i));
    }
    for j in 0..cfg.n_core {
        out.push((block_prefix("core_block", j), cfg.n_prelude + j));
    }
    for k in 0..cfg.n_coda {
        out.push((block_prefix("coda", k), cfg.n_prelude + cfg.n_core + k));
    }
    out
}

/// Name of the checkpoint's token embedding.
pub const WTE: &str = "transformer.wte.weight";
/// Name of an Ouro checkpoint's token embedding.
pub const OURO_WTE: &str = "model.embed_tokens.weight";
/// Name of the checkpoint's output head.
pub const LM_HEAD: &str = "lm_head.weight";

/// The token embedding's name in a checkpoint of `cfg`'s layout.
pub fn wte(cfg: &HfConfig) -> &'static str {
    if cfg.layout == Layout::Ouro {
        OURO_WTE
    } else {
        WTE
    }
}
/// Checkpoint tensors that are recomputed at run time and never stored.
pub const IGNORED: &[&str] = &["freqs_cis", "transformer.freqs_cis"];

/// The checkpoint tensors a model with `cfg` has (the head `lm_head.weight`
/// included only when `with_head`), with their shapes.
pub fn expected(cfg: &HfConfig, with_head: bool) -> Vec<Expected> {
    plan_inner(cfg, with_head, GgmlType::F32)
        .into_iter()
        .filter(|p| p.piece != Piece::QkHalf(1) && p.piece != Piece::RopeFactors)
        .map(|p| Expected {
            shape: torch_shape(cfg, &p),
            name: p.source,
        })
        .collect()
}

/// PyTorch shape of the checkpoint tensor behind `p`.
fn torch_shape(cfg: &HfConfig, p: &Planned) -> Vec<usize> {
    match p.piece {
        Piece::QkHalf(_) => vec![2, 1, cfg.n_head, cfg.head_dim()],
        Piece::Row => vec![1, p.shape[0] as usize],
        Piece::RopeFactors => Vec::new(),
        Piece::Whole => p.shape.iter().rev().map(|&d| d as usize).collect(),
    }
}

/// The output tensors for `cfg` with weight matrices in `requested`. The head
/// is `output.weight` when `with_head`, else the tied `token_embd.weight`.
pub fn plan(cfg: &HfConfig, with_head: bool, requested: GgmlType) -> Vec<Planned> {
    plan_inner(cfg, with_head, requested)
}

fn plan_inner(cfg: &HfConfig, with_head: bool, requested: GgmlType) -> Vec<Planned> {
    if cfg.layout == Layout::Ouro {
        return plan_ouro(cfg, with_head, requested);
    }
    let d = cfg.n_embd as u64;
    let hd = cfg.head_dim() as u64;
    let q = cfg.n_head as u64 * hd;
    let kv = cfg.n_head_kv as u64 * hd;
    let ff = cfg.n_ff as u64;
    let vocab = cfg.n_vocab as u64;
    let mut out = Vec::new();
    let mut push =
        |name: String, source: String, piece: Piece, kind: Kind, shape: Vec<u64>, role: Role| {
            let (ty, note) = match kind {
                Kind::Vector => (GgmlType::F32, None),
                Kind::Matrix => storage_type(requested, role, shape[0]),
            };
            out.push(Planned {
                name,
                source,
                piece,
                kind,
                shape,
                ty,
                note,
            });
        };
    let embd_role = if with_head {
        Role::Embedding
    } else {
        Role::Head
    };
    push(
        "token_embd.weight".into(),
        WTE.into(),
        Piece::Whole,
        Kind::Matrix,
        vec![d, vocab],
        embd_role,
    );
    for (src, n) in blocks(cfg) {
        let s = |x: &str| format!("{src}.{x}");
        let g = |x: &str| format!("blk.{n}.{x}");
        let vector = Kind::Vector;
        let matrix = Kind::Matrix;
        let whole = Piece::Whole;
        let body = Role::Body;
        push(
            g("attn_norm.weight"),
            s("norm_1.weight"),
            whole,
            vector,
            vec![d],
            body,
        );
        push(
            g("attn_qkv.weight"),
            s("attn.Wqkv.weight"),
            whole,
            matrix,
            vec![d, q + 2 * kv],
            body,
        );
        if cfg.qk_bias {
            push(
                g("attn_q.bias"),
                s("attn.qk_bias"),
                Piece::QkHalf(0),
                vector,
                vec![q],
                body,
            );
            push(
                g("attn_k.bias"),
                s("attn.qk_bias"),
                Piece::QkHalf(1),
                vector,
                vec![kv],
                body,
            );
        }
        push(
            g("attn_output.weight"),
            s("attn.proj.weight"),
            whole,
            matrix,
            vec![q, d],
            body,
        );
        // Huginn: norm_2 after the attention, norm_3 before the MLP, norm_4
        // after it; retrofitted (pre-norm): norm_2 before the MLP.
        let sandwich = cfg.layout == Layout::Huginn;
        if sandwich {
            push(
                g("attn_post_norm.weight"),
                s("norm_2.weight"),
                whole,
                vector,
                vec![d],
                body,
            );
        }
        push(
            g("ffn_norm.weight"),
            s(if sandwich {
                "norm_3.weight"
            } else {
                "norm_2.weight"
            }),
            whole,
            vector,
            vec![d],
            body,
        );
        push(
            g("ffn_gate_up.weight"),
            s("mlp.fc.weight"),
            whole,
            matrix,
            vec![d, 2 * ff],
            body,
        );
        push(
            g("ffn_down.weight"),
            s("mlp.proj.weight"),
            whole,
            matrix,
            vec![ff, d],
            body,
        );
        if sandwich {
            push(
                g("ffn_post_norm.weight"),
                s("norm_4.weight"),
                whole,
                vector,
                vec![d],
                body,
            );
        }
    }
    if let (Layout::Retrofitted, Some(_)) = (cfg.layout, cfg.rope_llama3) {
        push(
            "rope_freqs.weight".into(),
            String::new(),
            Piece::RopeFactors,
            Kind::Vector,
            vec![hd / 2],
            Role::Body,
        );
    }
    push(
        "adapter.weight".into(),
        "transformer.adapter.weight".into(),
        Piece::Whole,
        Kind::Matrix,
        vec![2 * d, d],
        Role::Body,
    );
    push(
        "output_norm.weight".into(),
        "transformer.ln_f.weight".into(),
        Piece::Whole,
        Kind::Vector,
        vec![d],
        Role::Body,
    );
    if with_head {
        push(
            "output.weight".into(),
            LM_HEAD.into(),
            Piece::Whole,
            Kind::Matrix,
            vec![d, vocab],
            Role::Head,
        );
    }
    out
}

/// The output tensors of an Ouro checkpoint (docs/gguf.md, `ouro` schema).
fn plan_ouro(cfg: &HfConfig, with_head: bool, requested: GgmlType) -> Vec<Planned> {
    let d = cfg.n_embd as u64;
    let hd = cfg.head_dim() as u64;
    let (q, kv) = (cfg.n_head as u64 * hd, cfg.n_head_kv as u64 * hd);
    let ff = cfg.n_ff as u64;
    let vocab = cfg.n_vocab as u64;
    let mut out = Vec::new();
    let mut push =
        |name: String, source: String, piece: Piece, shape: Vec<u64>, role: Option<Role>| {
            let (kind, (ty, note)) = match role {
                None => (Kind::Vector, (GgmlType::F32, None)),
                Some(role) => (Kind::Matrix, storage_type(requested, role, shape[0])),
            };
            out.push(Planned {
                name,
                source,
                piece,
                kind,
                shape,
                ty,
                note,
            });
        };
    let embd_role = if with_head {
        Role::Embedding
    } else {
        Role::Head
    };
    push(
        "token_embd.weight".into(),
        OURO_WTE.into(),
        Piece::Whole,
        vec![d, vocab],
        Some(embd_role),
    );
    let body = Some(Role::Body);
    for i in 0..cfg.n_core {
        let s = |x: &str| format!("model.layers.{i}.{x}");
        let g = |x: &str| format!("blk.{i}.{x}");
        let w = Piece::Whole;
        push(
            g("attn_norm.weight"),
            s("input_layernorm.weight"),
            w,
            vec![d],
            None,
        );
        push(
            g("attn_q.weight"),
            s("self_attn.q_proj.weight"),
            w,
            vec![d, q],
            body,
        );
        push(
            g("attn_k.weight"),
            s("self_attn.k_proj.weight"),
            w,
            vec![d, kv],
            body,
        );
        push(
            g("attn_v.weight"),
            s("self_attn.v_proj.weight"),
            w,
            vec![d, kv],
            body,
        );
        push(
            g("attn_output.weight"),
            s("self_attn.o_proj.weight"),
            w,
            vec![q, d],
            body,
        );
        push(
            g("attn_post_norm.weight"),
            s("input_layernorm_2.weight"),
            w,
            vec![d],
            None,
        );
        push(
            g("ffn_norm.weight"),
            s("post_attention_layernorm.weight"),
            w,
            vec![d],
            None,
        );
        push(
            g("ffn_gate.weight"),
            s("mlp.gate_proj.weight"),
            w,
            vec![d, ff],
            body,
        );
        push(
            g("ffn_up.weight"),
            s("mlp.up_proj.weight"),
            w,
            vec![d, ff],
            body,
        );
        push(
            g("ffn_down.weight"),
            s("mlp.down_proj.weight"),
            w,
            vec![ff, d],
            body,
        );
        push(
            g("ffn_post_norm.weight"),
            s("post_attention_layernorm_2.weight"),
            w,
            vec![d],
            None,
        );
    }
    push(
        "output_norm.weight".into(),
        "model.norm.weight".into(),
        Piece::Whole,
        vec![d],
        None,
    );
    if with_head {
        push(
            "output.weight".into(),
            LM_HEAD.into(),
            Piece::Whole,
            vec![d, vocab],
            Some(Role::Head),
        );
    }
    push(
        "exit_gate.weight".into(),
        "model.early_exit_gate.weight".into(),
        Piece::Row,
        vec![d],
        None,
    );
    push(
        "exit_gate.bias".into(),
        "model.early_exit_gate.bias".into(),
        Piece::Whole,
        vec![1],
        None,
    );
    out
}

/// What a matrix is used for, which sets its type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    /// Projections inside blocks and the adapter.
    Body,
    /// The token embedding of an untied model (only rows are looked up).
    Embedding,
    /// The output head (its own tensor, or the tied embedding).
    Head,
}

/// Type of the output head for a requested type: at least Q6_K below 6 bits
/// per weight, because the head's error lands directly on every logit (as in
/// llama.cpp's quantizer); other types unchanged.
pub fn head_type(requested: GgmlType) -> GgmlType {
    use GgmlType::*;
    match requested {
        Q4_0 | Q4_1 | Q5_0 | Q5_1 | Q2_K | Q3_K | Q4_K | Q5_K => Q6_K,
        t => t,
    }
}

/// The type for a matrix with rows of `row_len` when `requested` is asked for,
/// and why it differs, if it does.
fn storage_type(requested: GgmlType, role: Role, row_len: u64) -> (GgmlType, Option<String>) {
    let wanted = match role {
        Role::Head => head_type(requested),
        Role::Body | Role::Embedding => requested,
    };
    let (ty, why) = row_fallback(wanted, row_len);
    let note = match (role == Role::Head && wanted != requested, why) {
        (_, Some(why)) if wanted != requested => Some(format!(
            "output head: {} instead of {}; {why}",
            wanted.name(),
            requested.name()
        )),
        (_, Some(why)) => Some(why),
        (true, None) => Some(format!(
            "output head kept at {} (requested {})",
            wanted.name(),
            requested.name()
        )),
        (false, None) => None,
    };
    (ty, note)
}

/// `ty` if rows of `row_len` elements fill whole blocks of it; otherwise the
/// nearest type with 32-element blocks of at least its precision (Q4_K ->
/// Q5_0, Q5_K -> Q5_1, Q6_K -> Q8_0, the mapping llama.cpp uses), or F16 when
/// even 32 does not divide the row. Returns the reason for a change.
pub fn row_fallback(ty: GgmlType, row_len: u64) -> (GgmlType, Option<String>) {
    use GgmlType::*;
    if row_len.is_multiple_of(ty.block_size() as u64) {
        return (ty, None);
    }
    let next = match ty {
        Q4_K => Q5_0,
        Q5_K => Q5_1,
        Q6_K => Q8_0,
        Q2_K | Q3_K => Q4_1,
        _ => F16,
    };
    let next = if row_len.is_multiple_of(next.block_size() as u64) {
        next
    } else {
        F16
    };
    (
        next,
        Some(format!(
            "{} instead of {}: rows of {row_len} are not a multiple of its block size {}",
            next.name(),
            ty.name(),
            ty.block_size()
        )),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn huginn() -> HfConfig {
        HfConfig {
            n_embd: 5280,
            n_head: 55,
            n_head_kv: 55,
            n_ff: 17920,
            n_vocab: 65536,
            n_ctx: 4096,
            norm_eps: 1e-6,
            rope_base: 50000.0,
            rope_theta: None,
            embed_scale: None,
            state_init_std: None,
            layout: Layout::Huginn,
            rope_llama3: None,
            n_prelude: 2,
            n_core: 4,
            n_coda: 2,
            mean_recurrence: 32,
            qk_bias: true,
            tie_embeddings: true,
            name: None,
        }
    }

    #[test]
    fn names_and_shapes() {
        let p = plan(&huginn(), false, GgmlType::Q8_0);
        assert_eq!(p.len(), 1 + 8 * 10 + 2);
        let find = |n: &str| p.iter().find(|t| t.name == n).unwrap();
        assert_eq!(
            find("blk.2.attn_qkv.weight").source,
            "transformer.core_block.0.attn.Wqkv.weight"
        );
        assert_eq!(
            find("blk.5.ffn_down.weight").source,
            "transformer.core_block.3.mlp.proj.weight"
        );
        assert_eq!(
            find("blk.6.attn_norm.weight").source,
            "transformer.coda.0.norm_1.weight"
        );
        assert_eq!(
            find("blk.1.ffn_post_norm.weight").source,
            "transformer.prelude.1.norm_4.weight"
        );
        assert_eq!(find("blk.7.attn_k.bias").piece, Piece::QkHalf(1));
        assert_eq!(find("blk.7.attn_k.bias").shape, vec![5280]);
        assert_eq!(find("adapter.weight").shape, vec![10560, 5280]);
        assert_eq!(find("blk.0.ffn_gate_up.weight").shape, vec![5280, 35840]);
        assert_eq!(find("blk.0.attn_norm.weight").ty, GgmlType::F32);
        assert!(p.iter().all(|t| t.name != "output.weight"));
        let e = expected(&huginn(), true);
        let qk = e
            .iter()
            .find(|t| t.name.ends_with("0.attn.qk_bias"))
            .unwrap();
        assert_eq!(qk.shape, vec![2, 1, 55, 96]);
        let wqkv = e
            .iter()
            .find(|t| t.name.ends_with("prelude.0.attn.Wqkv.weight"))
            .unwrap();
        assert_eq!(wqkv.shape, vec![15840, 5280]);
        assert_eq!(e.last().unwrap().name, LM_HEAD);
        assert_eq!(e.len(), 1 + 8 * 9 + 3);
    }

    #[test]
    fn types_for_huginn_widths() {
        // d = 5280 is a multiple of 32 but not of 256.
        let p = plan(&huginn(), false, GgmlType::Q4_K);
        let ty = |n: &str| p.iter().find(|t| t.name == n).unwrap().ty;
        assert_eq!(ty("blk.0.attn_qkv.weight"), GgmlType::Q5_0);
        assert_eq!(ty("blk.0.ffn_down.weight"), GgmlType::Q4_K);
        // Tied head: Q6_K wanted, Q8_0 because of the row length.
        assert_eq!(ty("token_embd.weight"), GgmlType::Q8_0);
        let untied = plan(&huginn(), true, GgmlType::Q4_0);
        let ty = |n: &str| untied.iter().find(|t| t.name == n).unwrap().ty;
        assert_eq!(ty("token_embd.weight"), GgmlType::Q4_0);
        assert_eq!(ty("output.weight"), GgmlType::Q8_0);
        assert_eq!(ty("blk.0.attn_output.weight"), GgmlType::Q4_0);
        assert_eq!(row_fallback(GgmlType::Q8_0, 48).0, GgmlType::F16);
        assert_eq!(row_fallback(GgmlType::Q6_K, 512), (GgmlType::Q6_K, None));
        assert_eq!(head_type(GgmlType::Q8_0), GgmlType::Q8_0);
        assert_eq!(head_type(GgmlType::BF16), GgmlType::BF16);
    }
}
