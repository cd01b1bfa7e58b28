//! Parameter structs of the C ABI, their defaults, and their conversion to
//! the library's types.
//!
//! Enumerations that the caller passes in are plain `uint32_t` typedefs with
//! `#define`d values, so an out-of-range value is an ordinary invalid argument
//! rather than undefined behaviour.

use super::boundary::{Versioned, guard_value};
use super::rd_token;
use super::status::Fail;
use crate::exit::{ExitCriterion, ExitSpec};
use crate::generate::ComputeLimits;
use crate::model::{BackendKind, LoadParams, Repack};
use crate::sampling::SamplingParams;
use crate::session::{KvType, SessionParams, StateInit};
use std::ffi::c_void;

/// Device choice of `rd_model_params.backend` (and `rd_device_info.backend`).
pub type rd_backend = u32;
/// The first GPU (discrete, then integrated) when this build has a GPU
/// backend (Vulkan or Metal) and the system shows one, else the CPU.
pub const RD_BACKEND_AUTO: rd_backend = 0;
/// The CPU.
pub const RD_BACKEND_CPU: rd_backend = 1;
/// The first GPU of any API; loading fails with `RD_ERR_BACKEND` when there
/// is none.
pub const RD_BACKEND_GPU: rd_backend = 2;
/// Vulkan device `rd_model_params.device_index` (numbered as
/// `rd_device_get_info()` lists them); `RD_ERR_BACKEND` when this build has no
/// Vulkan backend or there is no such device.
pub const RD_BACKEND_VULKAN: rd_backend = 3;
/// The Metal device (Apple platforms); `RD_ERR_BACKEND` when this build has no
/// Metal backend.
pub const RD_BACKEND_METAL: rd_backend = 4;

/// Where exit values are computed (`rd_session_params.exit_place`).
pub type rd_exit_place = u32;
/// Inside the graph on GPU devices, on the host for the CPU.
pub const RD_EXIT_PLACE_AUTO: rd_exit_place = 0;
/// On the host, in f64, from the logits read back at every check.
pub const RD_EXIT_PLACE_HOST: rd_exit_place = 1;
/// Inside the graph (f32): a check reads back three numbers, the logits are
/// read once per token.
pub const RD_EXIT_PLACE_DEVICE: rd_exit_place = 2;

/// Element type of the KV cache (`rd_session_params.kv_type`).
pub type rd_kv_type = u32;
/// 32-bit floats.
pub const RD_KV_F32: rd_kv_type = 0;
/// 16-bit floats: half the memory of `RD_KV_F32`.
pub const RD_KV_F16: rd_kv_type = 1;

/// How the recurrent state of a new position starts
/// (`rd_session_params.state_init`).
pub type rd_state_init = u32;
/// All zeros (deterministic; what the tests use).
pub const RD_STATE_INIT_ZEROS: rd_state_init = 0;
/// A truncated normal drawn from the session's seeded generator, as the model
/// was trained (zeros when the model's init std is 0).
pub const RD_STATE_INIT_RANDOM: rd_state_init = 1;

/// Early-exit criterion of `rd_compute_limits.exit_criterion`. Criteria
/// marked "logits" run the coda and the head at every check (costly: see
/// `check_every`); the latent ones only compare states.
pub type rd_exit_criterion = u32;
/// Never exit early: every token runs `max_iterations`.
pub const RD_EXIT_NONE: rd_exit_criterion = 0;
/// Logits: KL(p_{t-1} || p_t) of successive next-token distributions below
/// the threshold (usual: 5e-4); the previous one is uniform at a token's
/// first check. The authors' definition (docs/semantics.md).
pub const RD_EXIT_KL: rd_exit_criterion = 1;
/// Logits: the same KL between min-p(0.1) filtered distributions
/// (probabilities below 0.1 p_max set to 1/V, renormalised; usual: 1e-5).
pub const RD_EXIT_MINP_KL: rd_exit_criterion = 2;
/// Logits: |H_t - H_{t-1}| of the entropies below the threshold (usual:
/// 1e-3); H_0 is taken as 100 nats, so a token's first check never exits.
pub const RD_EXIT_ENTROPY_DIFF: rd_exit_criterion = 3;
/// Latent: |x_t - x_{t-1}| / |x_t| below the threshold (usual: 0.03).
pub const RD_EXIT_LATENT_DIFF: rd_exit_criterion = 4;
/// Latent: 1 - cos(x_t, x_{t-1}) below the threshold (usual: 1e-3).
pub const RD_EXIT_COSINE: rd_exit_criterion = 5;
/// Logits: the argmax unchanged for `threshold` consecutive checks (an
/// integer >= 1; usual: 5).
pub const RD_EXIT_ARGMAX_STABILITY: rd_exit_criterion = 6;
/// The model's learned exit gate (Ouro): the accumulated probability of
/// having exited; exits when it reaches the threshold (default 0.9). Needs a
/// model with a gate (`RD_ERR_INVALID_ARGUMENT` otherwise). Added in 0.4.
pub const RD_EXIT_GATE: rd_exit_criterion = 7;
/// Logits: the top probability of this check's next-token distribution
/// reaches the threshold (usual: 0.9). Needs no previous check, so a token's
/// first check can exit: one coda per check, against at least two for the
/// criteria that compare successive checks. Added in 0.5.
pub const RD_EXIT_CONFIDENCE: rd_exit_criterion = 8;

/// Options of `rd_tokenize()` and `rd_generate_params.tokenize_flags`: a
/// bitwise OR of `RD_TOKENIZE_*` values (0 for none). Unknown bits are an
/// invalid argument.
pub type rd_tokenize_flags = u32;
/// Put the BOS token first when the tokenizer asks for one
/// (`rd_model_info.add_bos`).
pub const RD_TOKENIZE_ADD_SPECIAL: rd_tokenize_flags = 1;
/// Turn special-token text written in the input (e.g. `<|end_turn|>`) into
/// the token's id; without this flag it is tokenized as plain text.
pub const RD_TOKENIZE_PARSE_SPECIAL: rd_tokenize_flags = 2;

/// Options of `rd_detokenize()` and `rd_generate_params.detokenize_flags`: a
/// bitwise OR of `RD_DETOKENIZE_*` values (0 for none: control tokens such as
/// `<|end_turn|>` produce their text). Unknown bits are an invalid argument.
pub type rd_detokenize_flags = u32;
/// Control tokens (BOS, EOS, end of turn, ...) produce no text.
pub const RD_DETOKENIZE_SKIP_SPECIAL: rd_detokenize_flags = 1;

/// Checks `flags` against the `known` bits.
pub(crate) fn check_flags(flags: u32, known: u32, what: &str) -> Result<(), Fail> {
    if flags & !known != 0 {
        return Err(Fail::invalid(format!(
            "{what} 0x{flags:x} has unknown bits 0x{:x}",
            flags & !known
        )));
    }
    Ok(())
}

/// `rd_session_params.n_ctx` value meaning "the model's training context
/// length".
pub const RD_N_CTX_FROM_MODEL: u32 = 0xFFFF_FFFF;

/// Load progress callback: `progress` goes from 0 to 1. Return `true` to
/// continue, `false` to cancel the load (`rd_model_load` then returns
/// `RD_ERR_CANCELLED`). Called on the thread that called `rd_model_load`,
/// with non-decreasing values: 0 before the file is opened, 0.5 once it is
/// parsed and validated, up to 0.95 while the weights are placed (one step
/// when they are used in place from the memory map, as on the CPU; after each
/// tensor when they are uploaded to a device such as Vulkan), and 1 at the
/// end. It must not unwind (no C++ exceptions or longjmp across it).
pub type rd_progress_callback =
    Option<unsafe extern "C" fn(progress: f32, user_data: *mut c_void) -> bool>;

/// How to load a model: get defaults from `rd_model_default_params()`, then
/// change fields. The caller owns the struct; the library reads it only during
/// `rd_model_load` and keeps no pointer to it.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct rd_model_params {
    /// `sizeof(rd_model_params)`; set by `rd_model_default_params()`.
    pub struct_size: usize,
    /// Device preference, an `rd_backend` (default `RD_BACKEND_AUTO`).
    pub backend: rd_backend,
    /// CPU threads used by sessions of this model; 0 = the number of physical
    /// cores (default 0). At most 512.
    pub n_threads: u32,
    /// Memory-map the file and use the weights in place on devices that can
    /// (the CPU, Metal; Vulkan copies them once) (default true). When false
    /// the file is read into memory.
    pub use_mmap: bool,
    /// Lock the model's file bytes in RAM with mlock() so they cannot be paged
    /// out (default false). Fails the load with `RD_ERR_IO` when the system
    /// refuses (e.g. RLIMIT_MEMLOCK), and with `RD_ERR_UNSUPPORTED` without
    /// `use_mmap` (only a mapped file is locked) or on platforms without
    /// mlock(). The lock ends when the memory is released.
    pub use_mlock: bool,
    /// Optional progress callback (NULL for none).
    pub progress_callback: rd_progress_callback,
    /// Passed unchanged to `progress_callback`.
    pub progress_user_data: *mut c_void,
    /// Which device of the API `backend` names: the Vulkan device index for
    /// `RD_BACKEND_VULKAN`; must be 0 otherwise (default 0). Added in 0.2;
    /// callers built against an older header get 0.
    pub device_index: u32,
    /// Reserved (the tail padding of the 0.2 layout); ignored.
    pub _reserved: u32,
    /// Whether weight matrices are repacked for the CPU's interleaved
    /// kernels, an `rd_repack` (default `RD_REPACK_AUTO`). Added in 0.3;
    /// callers built against an older header get the default.
    pub repack: rd_repack,
    /// Reserved (the tail padding of the 0.3 layout); ignored.
    pub _reserved2: u32,
    /// Read every weight used in place from the mapped file once during the
    /// load (default true; progress is reported per tensor meanwhile), so
    /// that the first tokens do not wait on page faults. Every token reads
    /// every weight, so this moves that time rather than adding to it; the
    /// pages stay reclaimable file cache. False: a faster load and slower
    /// first tokens. Only for weights used in place (the CPU and Metal with
    /// `use_mmap`). Added in 0.4; callers built against an older header get
    /// true.
    pub prefetch: bool,
}

/// Weight repacking for the CPU (`rd_model_params.repack`).
///
/// ggml has faster matrix kernels for some quantized types when the blocks of
/// several rows are interleaved (x86-64 with AVX2: Q4_0 and Q4_K; ARM with
/// dot product: also Q5_K, Q6_K and Q8_0; Xeons with AMX: ggml's AMX layout
/// for Q4_0, Q4_1 and Q8_0). Repacking converts those matrices once at load
/// into memory the library owns: they are then no longer used in place from
/// the memory-mapped file, so they count as the app's own memory instead of
/// shared, reclaimable file cache (`rd_model_info.repacked_bytes`).
pub type rd_repack = u32;
/// Repack every matrix that has such a kernel on this CPU (the embedding is
/// read by rows and stays as stored; a head tied to it gets a repacked
/// copy); only with the CPU backend.
pub const RD_REPACK_AUTO: rd_repack = 0;
/// Use every weight as stored in the file.
pub const RD_REPACK_OFF: rd_repack = 1;

// SAFETY: repr(C), starts with `struct_size: usize`; bools come from C bools,
// the callback from a C function pointer or NULL.
unsafe impl Versioned for rd_model_params {
    const NAME: &'static str = "rd_model_params";
    // 0.1 ended before `device_index`; 0.2 after it (48 bytes with its tail
    // padding, which `_reserved` now names); 0.3 after `repack` (56 bytes,
    // its tail padding now `_reserved2`).
    const RELEASED_SIZES: &'static [usize] = &[
        std::mem::offset_of!(rd_model_params, device_index),
        std::mem::offset_of!(rd_model_params, repack),
        std::mem::offset_of!(rd_model_params, prefetch),
    ];
    fn defaults() -> Self {
        let d = LoadParams::default();
        rd_model_params {
            struct_size: size_of::<Self>(),
            backend: RD_BACKEND_AUTO,
            n_threads: 0,
            use_mmap: d.use_mmap,
            use_mlock: false,
            progress_callback: None,
            progress_user_data: std::ptr::null_mut(),
            device_index: 0,
            _reserved: 0,
            repack: RD_REPACK_AUTO,
            _reserved2: 0,
            prefetch: d.prefetch,
        }
    }
}

impl rd_model_params {
    /// The library's load parameters.
    pub(crate) fn to_load_params(self) -> Result<LoadParams, Fail> {
        let backend = match self.backend {
            RD_BACKEND_AUTO => BackendKind::Auto,
            RD_BACKEND_CPU => BackendKind::Cpu,
            RD_BACKEND_GPU => BackendKind::Gpu,
            RD_BACKEND_VULKAN => BackendKind::Vulkan(self.device_index as usize),
            RD_BACKEND_METAL => BackendKind::Metal,
            b => return Err(Fail::invalid(format!("unknown backend {b}"))),
        };
        if self.device_index != 0 && self.backend != RD_BACKEND_VULKAN {
            return Err(Fail::invalid(format!(
                "device_index {} is only meaningful with RD_BACKEND_VULKAN",
                self.device_index
            )));
        }
        let repack = match self.repack {
            RD_REPACK_AUTO => Repack::Auto,
            RD_REPACK_OFF => Repack::Off,
            r => return Err(Fail::invalid(format!("unknown repack {r}"))),
        };
        Ok(LoadParams {
            backend,
            n_threads: self.n_threads as usize,
            use_mmap: self.use_mmap,
            repack,
            prefetch: self.prefetch,
        })
    }
}

/// Default model parameters (see each field). Thread-safe.
#[unsafe(no_mangle)]
pub extern "C" fn rd_model_default_params() -> rd_model_params {
    guard_value(rd_model_params::defaults(), rd_model_params::defaults)
}

/// How to create a session: get defaults from `rd_session_default_params()`,
/// then change fields. The caller owns the struct; the library reads it only
/// during `rd_session_new`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct rd_session_params {
    /// `sizeof(rd_session_params)`; set by `rd_session_default_params()`.
    pub struct_size: usize,
    /// Context length in positions: 1 up to the model's training context, or
    /// `RD_N_CTX_FROM_MODEL` (the default) for the training context. 0 is
    /// invalid. The KV cache for all of it is allocated at creation.
    pub n_ctx: u32,
    /// Most positions evaluated in one graph during prefill; 0 = min(n_ctx,
    /// 256) (default 0).
    pub n_batch: u32,
    /// Recurrence budget B: KV slots per core block, 1..=4096 (default 1).
    /// KV memory is independent of the iteration count; B = 1 is what the
    /// paper's vLLM plugin uses.
    pub kv_budget: u32,
    /// KV cache element type, an `rd_kv_type` (default `RD_KV_F32`).
    pub kv_type: rd_kv_type,
    /// Initial recurrent state, an `rd_state_init` (default
    /// `RD_STATE_INIT_ZEROS`).
    pub state_init: rd_state_init,
    /// Seed of the initial-state generator (default 0).
    pub seed: u64,
    /// Where the `kl`, `entropy-diff`, `argmax-stability` and `confidence` exit values are
    /// computed, an `rd_exit_place` (default `RD_EXIT_PLACE_AUTO`). Added in
    /// 0.2.
    pub exit_place: rd_exit_place,
    /// Reserved (the tail padding of the 0.2 layout); ignored.
    pub _reserved: u32,
    /// How hard idle CPU threads poll for work between graph nodes before
    /// they sleep, 0..=100 (default 50): higher can shorten each token, lower
    /// saves power (spinning threads cost a phone's battery). Added in 0.3;
    /// callers built against an older header get the default.
    pub thread_poll: u32,
    /// How attention is computed, an `rd_attention` (default
    /// `RD_ATTENTION_AUTO`). Added in 0.3; callers built against an older
    /// header get the default.
    pub attention: rd_attention,
}

/// How attention is computed (`rd_session_params.attention`).
pub type rd_attention = u32;
/// The library's choice: today separate everywhere (on the CPU fused is
/// faster at prefill; at decode it is level with separate attention on
/// AVX-512 and slower on AVX2; docs/performance.md).
pub const RD_ATTENTION_AUTO: rd_attention = 0;
/// One fused op (`ggml_flash_attn_ext`): no score matrix in memory; V is
/// stored like K. Session states record the layout; a state saved with the
/// other layout is converted when loaded.
pub const RD_ATTENTION_FUSED: rd_attention = 1;
/// Two matrix products around a softmax (V stored transposed).
pub const RD_ATTENTION_SEPARATE: rd_attention = 2;

// SAFETY: repr(C), starts with `struct_size: usize`; integer fields only.
unsafe impl Versioned for rd_session_params {
    const NAME: &'static str = "rd_session_params";
    // 0.1 ended before `exit_place`; 0.2 after it (48 bytes with its tail
    // padding, which `_reserved` now names).
    const RELEASED_SIZES: &'static [usize] = &[
        std::mem::offset_of!(rd_session_params, exit_place),
        std::mem::offset_of!(rd_session_params, thread_poll),
    ];
    fn defaults() -> Self {
        let d = SessionParams::default();
        rd_session_params {
            struct_size: size_of::<Self>(),
            n_ctx: RD_N_CTX_FROM_MODEL,
            n_batch: 0,
            kv_budget: d.kv_budget as u32,
            kv_type: RD_KV_F32,
            state_init: RD_STATE_INIT_ZEROS,
            seed: d.seed,
            exit_place: RD_EXIT_PLACE_AUTO,
            _reserved: 0,
            thread_poll: d.thread_poll,
            attention: RD_ATTENTION_AUTO,
        }
    }
}

impl rd_session_params {
    /// The library's session parameters (`n_ctx` 0 there means the model's).
    pub(crate) fn to_session_params(self) -> Result<SessionParams, Fail> {
        let n_ctx = match self.n_ctx {
            0 => {
                return Err(Fail::invalid(
                    "n_ctx is 0 (use RD_N_CTX_FROM_MODEL for the model's context length)",
                ));
            }
            RD_N_CTX_FROM_MODEL => 0,
            n => n as usize,
        };
        let kv_type = match self.kv_type {
            RD_KV_F32 => KvType::F32,
            RD_KV_F16 => KvType::F16,
            t => return Err(Fail::invalid(format!("unknown kv_type {t}"))),
        };
        let state_init = match self.state_init {
            RD_STATE_INIT_ZEROS => StateInit::Zeros,
            RD_STATE_INIT_RANDOM => StateInit::Random,
            s => return Err(Fail::invalid(format!("unknown state_init {s}"))),
        };
        Ok(SessionParams {
            n_ctx,
            n_batch: self.n_batch as usize,
            kv_budget: self.kv_budget as usize,
            kv_type,
            seed: self.seed,
            state_init,
            exit_on_device: match self.exit_place {
                RD_EXIT_PLACE_AUTO => None,
                RD_EXIT_PLACE_HOST => Some(false),
                RD_EXIT_PLACE_DEVICE => Some(true),
                p => return Err(Fail::invalid(format!("unknown exit_place {p}"))),
            },
            thread_poll: self.thread_poll,
            flash_attention: match self.attention {
                RD_ATTENTION_AUTO => None,
                RD_ATTENTION_FUSED => Some(true),
                RD_ATTENTION_SEPARATE => Some(false),
                a => return Err(Fail::invalid(format!("unknown attention {a}"))),
            },
        })
    }
}

/// Default session parameters (see each field). Thread-safe.
#[unsafe(no_mangle)]
pub extern "C" fn rd_session_default_params() -> rd_session_params {
    guard_value(rd_session_params::defaults(), rd_session_params::defaults)
}

/// How much each token may think. Get defaults from
/// `rd_compute_limits_default()`. Used by `rd_generate_params.limits` and
/// `rd_set_compute_limits()`; the library copies it and keeps no pointer.
///
/// Per token the core runs at least `min_iterations` and at most
/// `max_iterations` steps; from `min_iterations` on, every `check_every`
/// steps, the exit criterion is evaluated and the token stops when it is met
/// (with `lead_in`, the default, not at its first check if the criterion
/// compares two checks).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct rd_compute_limits {
    /// `sizeof(rd_compute_limits)`; set by `rd_compute_limits_default()`.
    pub struct_size: usize,
    /// Fewest core iterations per token, 1..=max_iterations (default 1).
    pub min_iterations: u32,
    /// Most core iterations per token, 1..=4096 (default 32).
    pub max_iterations: u32,
    /// Evaluate the criterion every this many steps (default 1); 0 =
    /// automatic: from the model's cost of a check relative to a step
    /// (about `sqrt(2 * cost * default iterations)`, at most 8, 1 for the
    /// latent criteria; docs/semantics.md). Added in 0.3 (0 was an error
    /// before).
    pub check_every: u32,
    /// An `rd_exit_criterion` (default `RD_EXIT_NONE`).
    pub exit_criterion: rd_exit_criterion,
    /// Threshold of the criterion: not NaN, >= 0 (+infinity allowed); an
    /// integer >= 1 for `RD_EXIT_ARGMAX_STABILITY` (default 0). See
    /// `rd_exit_default_threshold()` for the usual values.
    pub exit_threshold: f64,
    /// Start each new token's state from the previous token's final state
    /// ("continuous chain of thought"; default false).
    pub warm_start: bool,
    /// Allow the exit criterion during prompt prefill, decided on the last
    /// prompt position (default false: the prompt runs the full budget).
    pub exit_in_prefill: bool,
    /// Threshold of `exit_screen_criterion` (as `exit_threshold`; see
    /// `rd_exit_default_threshold()`; default 0). Added in 0.4.
    pub exit_screen_threshold: f64,
    /// A screen before a criterion on the next-token distribution
    /// (`RD_EXIT_KL`, `RD_EXIT_MINP_KL`, `RD_EXIT_ENTROPY_DIFF`,
    /// `RD_EXIT_ARGMAX_STABILITY`, `RD_EXIT_CONFIDENCE`): `RD_EXIT_COSINE` or
    /// `RD_EXIT_LATENT_DIFF`, which compare states and run no coda. Until it
    /// passes its threshold a token's checks only compare states; from
    /// there on the exit criterion is checked as without a screen. Default
    /// `RD_EXIT_NONE`: no screen. Any other value, or a screen before a
    /// criterion that is not on the distribution, is an invalid argument
    /// (docs/semantics.md, "Screened exits"). Added in 0.4.
    pub exit_screen_criterion: rd_exit_criterion,
    /// Threshold of `prefill_exit_criterion` (as `exit_threshold`; default
    /// 0). Added in 0.5.
    pub prefill_exit_threshold: f64,
    /// The prompt's own exit: `RD_EXIT_COSINE` or `RD_EXIT_LATENT_DIFF`,
    /// decided over every prompt position at once (the largest value must
    /// pass its threshold), at every step from `min_iterations` up to the
    /// prompt's budget; each check reads the prompt's states back, no coda.
    /// It stops the prompt once all of its states have settled, whatever
    /// `exit_criterion` the generated tokens use. Default `RD_EXIT_NONE`:
    /// the prompt runs its budget (with `rd_generate_params.prefill_iterations`
    /// 0 and an exit criterion, the runtime then uses `RD_EXIT_COSINE` at
    /// 1e-2). Any other criterion, or this together
    /// with `exit_in_prefill`, is an invalid argument (docs/semantics.md,
    /// "The prompt's exit"). Added in 0.5.
    pub prefill_exit_criterion: rd_exit_criterion,
    /// Padding of the 0.5 layout, made explicit; ignored (0 by default).
    pub _reserved0: u32,
    /// A token's first check of a criterion that compares two checks
    /// (`RD_EXIT_KL`, `RD_EXIT_MINP_KL`, `RD_EXIT_ENTROPY_DIFF`,
    /// `RD_EXIT_ARGMAX_STABILITY`, `RD_EXIT_LATENT_DIFF`, `RD_EXIT_COSINE`) is a
    /// lead-in: it only sets the reference of the next check, cannot end the
    /// token, and runs in the same graph as that check. Default true; false
    /// is the authors' behaviour, in which the first check (against the
    /// uniform distribution for KL) may end a token (docs/semantics.md,
    /// "The lead-in check"). Added in 0.7.
    pub lead_in: bool,
}

// SAFETY: repr(C), starts with `struct_size: usize`; numbers and C bools.
unsafe impl Versioned for rd_compute_limits {
    const NAME: &'static str = "rd_compute_limits";
    // 0.1 to 0.3 ended after `exit_in_prefill` (with padding to 40 bytes);
    // 0.4's screen starts at 40; 0.4 ended after it (padding to 56 bytes).
    // 0.5 and 0.6 ended after `prefill_exit_criterion` (padding to 72 bytes).
    const RELEASED_SIZES: &'static [usize] = &[
        std::mem::offset_of!(rd_compute_limits, exit_screen_threshold),
        std::mem::offset_of!(rd_compute_limits, prefill_exit_threshold),
        std::mem::offset_of!(rd_compute_limits, lead_in),
    ];
    fn defaults() -> Self {
        let d = ComputeLimits::default();
        rd_compute_limits {
            struct_size: size_of::<Self>(),
            min_iterations: d.min_iterations as u32,
            max_iterations: d.max_iterations as u32,
            check_every: d.check_every as u32,
            exit_criterion: RD_EXIT_NONE,
            exit_threshold: 0.0,
            warm_start: d.warm_start,
            exit_in_prefill: d.exit_in_prefill,
            exit_screen_threshold: 0.0,
            exit_screen_criterion: RD_EXIT_NONE,
            prefill_exit_threshold: 0.0,
            prefill_exit_criterion: RD_EXIT_NONE,
            _reserved0: 0,
            lead_in: d.lead_in,
        }
    }
}

/// The library's criterion for an `rd_exit_criterion`.
fn criterion_of(c: rd_exit_criterion) -> Option<ExitCriterion> {
    Some(match c {
        RD_EXIT_NONE => ExitCriterion::None,
        RD_EXIT_KL => ExitCriterion::Kl,
        RD_EXIT_MINP_KL => ExitCriterion::MinpKl,
        RD_EXIT_ENTROPY_DIFF => ExitCriterion::EntropyDiff,
        RD_EXIT_LATENT_DIFF => ExitCriterion::LatentDiff,
        RD_EXIT_COSINE => ExitCriterion::Cosine,
        RD_EXIT_ARGMAX_STABILITY => ExitCriterion::ArgmaxStability,
        RD_EXIT_GATE => ExitCriterion::Gate,
        RD_EXIT_CONFIDENCE => ExitCriterion::Confidence,
        _ => return None,
    })
}

impl rd_compute_limits {
    /// The library's limits, validated.
    pub(crate) fn to_limits(self) -> Result<ComputeLimits, Fail> {
        let criterion = criterion_of(self.exit_criterion).ok_or_else(|| {
            Fail::invalid(format!("unknown exit_criterion {}", self.exit_criterion))
        })?;
        let screen = criterion_of(self.exit_screen_criterion).ok_or_else(|| {
            Fail::invalid(format!(
                "unknown exit_screen_criterion {}",
                self.exit_screen_criterion
            ))
        })?;
        let prefill = criterion_of(self.prefill_exit_criterion).ok_or_else(|| {
            Fail::invalid(format!(
                "unknown prefill_exit_criterion {}",
                self.prefill_exit_criterion
            ))
        })?;
        let limits = ComputeLimits {
            min_iterations: self.min_iterations as usize,
            max_iterations: self.max_iterations as usize,
            exit: ExitSpec {
                criterion,
                threshold: self.exit_threshold,
            },
            exit_screen: ExitSpec {
                criterion: screen,
                threshold: self.exit_screen_threshold,
            },
            check_every: self.check_every as usize,
            exit_in_prefill: self.exit_in_prefill,
            prefill_exit: ExitSpec {
                criterion: prefill,
                threshold: self.prefill_exit_threshold,
            },
            warm_start: self.warm_start,
            lead_in: self.lead_in,
        };
        limits.validate()?;
        Ok(limits)
    }
}

/// Default compute limits: 1..=32 iterations, no early exit, check every
/// step, no warm start. Thread-safe.
#[unsafe(no_mangle)]
pub extern "C" fn rd_compute_limits_default() -> rd_compute_limits {
    guard_value(rd_compute_limits::defaults(), rd_compute_limits::defaults)
}

/// The usual threshold of a criterion (docs/semantics.md: kl 5e-4, minp-kl 1e-5,
/// entropy-diff 1e-3, latent-diff 0.03, cosine 1e-3, argmax-stability 5;
/// none 0), or NaN for a value that is not an `rd_exit_criterion`.
/// Thread-safe.
#[unsafe(no_mangle)]
pub extern "C" fn rd_exit_default_threshold(criterion: rd_exit_criterion) -> f64 {
    guard_value(f64::NAN, || {
        criterion_of(criterion).map_or(f64::NAN, ExitCriterion::default_threshold)
    })
}

/// Sampling of the next token. Get defaults from
/// `rd_sampling_default_params()`. Order: repetition penalty, then greedy
/// (when `greedy` or `temperature == 0`), else top-k, temperature, top-p,
/// min-p and a seeded draw. A feature is off at its neutral value.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct rd_sampling_params {
    /// `sizeof(rd_sampling_params)`; set by `rd_sampling_default_params()`.
    pub struct_size: usize,
    /// Softmax temperature, >= 0; 0 = greedy (default 0.8).
    pub temperature: f32,
    /// Keep the `top_k` most likely tokens; 0 = off (default 40).
    pub top_k: u32,
    /// Nucleus: smallest set with cumulative probability >= top_p, in (0, 1];
    /// 1 = off (default 0.95).
    pub top_p: f32,
    /// Drop tokens with p < min_p * p_max, in [0, 1]; 0 = off (default 0.05).
    pub min_p: f32,
    /// Repetition penalty, > 0; 1 = off (default 1).
    pub repeat_penalty: f32,
    /// How many recent tokens the penalty looks at; 0 = off (default 64).
    pub repeat_last_n: u32,
    /// Seed of the draw: the same seed, model and inputs give the same tokens
    /// (default 0).
    pub seed: u64,
    /// Always take the most likely token (default false).
    pub greedy: bool,
}

// SAFETY: repr(C), starts with `struct_size: usize`; numbers and a C bool.
unsafe impl Versioned for rd_sampling_params {
    const NAME: &'static str = "rd_sampling_params";
    const RELEASED_SIZES: &'static [usize] = &[];
    fn defaults() -> Self {
        let d = SamplingParams::default();
        rd_sampling_params {
            struct_size: size_of::<Self>(),
            temperature: d.temperature,
            top_k: d.top_k as u32,
            top_p: d.top_p,
            min_p: d.min_p,
            repeat_penalty: d.repeat_penalty,
            repeat_last_n: d.repeat_last_n as u32,
            seed: d.seed,
            greedy: d.greedy,
        }
    }
}

impl rd_sampling_params {
    /// The library's sampling parameters, validated.
    pub(crate) fn to_sampling(self) -> Result<SamplingParams, Fail> {
        let s = SamplingParams {
            temperature: self.temperature,
            top_k: self.top_k as usize,
            top_p: self.top_p,
            min_p: self.min_p,
            repeat_penalty: self.repeat_penalty,
            repeat_last_n: self.repeat_last_n as usize,
            seed: self.seed,
            greedy: self.greedy,
        };
        s.validate()?;
        Ok(s)
    }
}

/// Default sampling: temperature 0.8, top-k 40, top-p 0.95, min-p 0.05, no
/// repetition penalty, seed 0. (An `rd_generate_params` whose `sampling` is
/// NULL decodes greedily instead.) Thread-safe.
#[unsafe(no_mangle)]
pub extern "C" fn rd_sampling_default_params() -> rd_sampling_params {
    guard_value(rd_sampling_params::defaults(), rd_sampling_params::defaults)
}

/// Parameters of one `rd_generate()` or `rd_generate_text()` call. Get defaults from
/// `rd_generate_default_params()`. The caller owns the struct and everything
/// it points to; the library reads them only during the call.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct rd_generate_params {
    /// `sizeof(rd_generate_params)`; set by `rd_generate_default_params()`.
    pub struct_size: usize,
    /// Most tokens to generate (default 64). Generation also ends, with
    /// `RD_STOP_CONTEXT_FULL`, when the context has no room for another token;
    /// 0 evaluates the prompt only.
    pub max_tokens: u32,
    /// Core iterations for the prompt (default 0). 0 = chosen by the
    /// runtime: without an exit criterion `limits.max_iterations`; with one,
    /// up to the model's default iteration count (kept within
    /// `[limits.min_iterations, limits.max_iterations]`), and, unless
    /// `limits` sets `exit_in_prefill` or a `prefill_exit_criterion` of its
    /// own or the criterion is `RD_EXIT_GATE`, stopping once no prompt
    /// position's state moves by a cosine distance of more than 1e-2 in a
    /// step (the prompt's exit `RD_EXIT_COSINE` at 1e-2; since 0.6). A
    /// number runs the prompt at exactly that count; set it to
    /// `limits.max_iterations` for the authors' behaviour.
    pub prefill_iterations: u32,
    /// Limits for generated tokens; NULL = `rd_compute_limits_default()`
    /// (default NULL).
    pub limits: *const rd_compute_limits,
    /// Sampling; NULL = greedy decoding (default NULL).
    pub sampling: *const rd_sampling_params,
    /// Tokens that end generation after being reported to the callback; may
    /// be NULL when `n_stop_tokens` is 0 (default NULL).
    pub stop_tokens: *const rd_token,
    /// Number of entries in `stop_tokens` (default 0).
    pub n_stop_tokens: usize,
    /// When `n_stop_tokens` is 0, stop after the tokenizer's end-of-text
    /// (EOS) and end-of-turn tokens (`rd_model_info.eos_token`,
    /// `.eot_token`), as if they were given as `stop_tokens` (default true).
    /// No effect when the model has no usable tokenizer or `stop_tokens` are
    /// given; set false to generate past them.
    pub default_stop_tokens: bool,
    /// How `rd_generate_text()` tokenizes its prompt, `rd_tokenize_flags`
    /// (default `RD_TOKENIZE_ADD_SPECIAL | RD_TOKENIZE_PARSE_SPECIAL`).
    /// `RD_TOKENIZE_ADD_SPECIAL` adds the BOS only when the session's cache is
    /// empty (the start of a conversation). Ignored by `rd_generate()`.
    pub tokenize_flags: rd_tokenize_flags,
    /// How `rd_token_event.text` renders tokens, `rd_detokenize_flags`
    /// (default 0: control tokens produce their text, as with
    /// `rd_detokenize(..., 0, ...)`).
    pub detokenize_flags: rd_detokenize_flags,
    /// Reserved (the tail padding of the 0.3 layout); ignored.
    pub _reserved: u32,
    /// Self-speculative decoding: tokens drafted per verification pass, at
    /// most 64 and below the session's `n_batch` (default 0: off). Each
    /// draft runs `draft_iterations` core iterations; one batch at the
    /// limits' `max_iterations` then checks every draft, keeping those the
    /// full-depth model agrees with. Needs limits without an exit criterion
    /// and without warm start (`RD_ERR_INVALID_ARGUMENT` otherwise); greedy
    /// output is then the same as without speculation when `kv_budget >=
    /// max_iterations` (docs/semantics.md, "Speculative decoding"). Added
    /// in 0.4; callers built against an older header get 0.
    pub draft_tokens: u32,
    /// Core iterations of each draft token, 1..=4096 (default 4). Added in 0.4.
    pub draft_iterations: u32,
    /// Adapt the number of drafted tokens to how many were accepted, within
    /// `1..=draft_tokens` (default false). Added in 0.4.
    pub draft_adaptive: bool,
}

// SAFETY: repr(C), starts with `struct_size: usize`; numbers, pointers and a
// C bool.
unsafe impl Versioned for rd_generate_params {
    const NAME: &'static str = "rd_generate_params";
    // 0.3 ended after `detokenize_flags` (64 bytes with its tail padding,
    // which `_reserved` now names).
    const RELEASED_SIZES: &'static [usize] =
        &[std::mem::offset_of!(rd_generate_params, draft_tokens)];
    fn defaults() -> Self {
        rd_generate_params {
            struct_size: size_of::<Self>(),
            max_tokens: 64,
            prefill_iterations: 0,
            limits: std::ptr::null(),
            sampling: std::ptr::null(),
            stop_tokens: std::ptr::null(),
            n_stop_tokens: 0,
            default_stop_tokens: true,
            tokenize_flags: RD_TOKENIZE_ADD_SPECIAL | RD_TOKENIZE_PARSE_SPECIAL,
            detokenize_flags: 0,
            _reserved: 0,
            draft_tokens: 0,
            draft_iterations: 4,
            draft_adaptive: false,
        }
    }
}

/// Default generation parameters (see each field). Thread-safe.
#[unsafe(no_mangle)]
pub extern "C" fn rd_generate_default_params() -> rd_generate_params {
    guard_value(rd_generate_params::defaults(), rd_generate_params::defaults)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ffi::boundary::read_struct;
    use crate::ffi::status::rd_status;

    #[test]
    fn defaults_convert_and_validate() {
        let m = rd_model_default_params();
        assert_eq!(m.struct_size, size_of::<rd_model_params>());
        assert_eq!(m.to_load_params().unwrap().backend, BackendKind::Auto);
        let s = rd_session_default_params().to_session_params().unwrap();
        assert_eq!(s.n_ctx, 0);
        assert_eq!(s.kv_budget, 1);
        let l = rd_compute_limits_default().to_limits().unwrap();
        assert_eq!(l, ComputeLimits::default());
        let p = rd_sampling_default_params().to_sampling().unwrap();
        assert_eq!(p, SamplingParams::default());
    }

    #[test]
    fn bad_values_are_invalid_arguments() {
        let mut l = rd_compute_limits_default();
        for (min, max) in [(1, 0), (5, 4), (0, 4)] {
            l.min_iterations = min;
            l.max_iterations = max;
            assert_eq!(
                l.to_limits().unwrap_err().status,
                rd_status::RD_ERR_INVALID_ARGUMENT
            );
        }
        let mut l = rd_compute_limits_default();
        l.exit_criterion = RD_EXIT_KL;
        for t in [f64::NAN, -1.0] {
            l.exit_threshold = t;
            assert!(l.to_limits().is_err());
        }
        l.exit_criterion = 99;
        l.exit_threshold = 1.0;
        assert!(
            l.to_limits()
                .unwrap_err()
                .message
                .contains("exit_criterion")
        );
        let mut s = rd_session_default_params();
        s.n_ctx = 0;
        assert!(s.to_session_params().is_err());
        assert!(rd_exit_default_threshold(99).is_nan());
        assert_eq!(rd_exit_default_threshold(RD_EXIT_KL), 5e-4);
    }

    #[test]
    fn struct_size_is_checked() {
        let mut p = rd_sampling_default_params();
        // SAFETY: `p` is a valid, initialised struct.
        assert!(unsafe { read_struct(&raw const p, "p") }.is_ok());
        p.struct_size = 8;
        // SAFETY: as above.
        let e = unsafe { read_struct(&raw const p, "p") }.unwrap_err();
        assert!(e.message.contains("struct_size"), "{}", e.message);
        p.struct_size = size_of::<rd_sampling_params>() + 8;
        // SAFETY: as above (the size is rejected before reading further).
        assert!(unsafe { read_struct(&raw const p, "p") }.is_err());
    }

    #[test]
    fn a_0_3_model_params_struct_gets_prefetch() {
        // A caller built against the 0.3 header: 56 bytes, nothing after
        // `repack` set by it (here: garbage where 0.4 has `prefetch`).
        assert_eq!(std::mem::offset_of!(rd_model_params, prefetch), 56);
        let mut p = rd_model_default_params();
        p.struct_size = 56;
        p.repack = RD_REPACK_OFF;
        p.prefetch = false;
        // SAFETY: `p` is a valid struct of at least `struct_size` bytes.
        let read = unsafe { read_struct(&raw const p, "p") }.unwrap();
        let load = read.to_load_params().unwrap();
        assert_eq!(load.repack, Repack::Off);
        assert!(load.prefetch, "a 0.3 caller must get the default");
        p.struct_size = size_of::<rd_model_params>();
        // SAFETY: as above.
        let read = unsafe { read_struct(&raw const p, "p") }.unwrap();
        assert!(!read.to_load_params().unwrap().prefetch);
    }

    #[test]
    fn a_0_3_compute_limits_struct_gets_no_screen() {
        // 0.1-0.3 callers pass 40 bytes; what lies after is not theirs.
        assert_eq!(
            std::mem::offset_of!(rd_compute_limits, exit_screen_threshold),
            40
        );
        let mut l = rd_compute_limits_default();
        l.struct_size = 40;
        l.exit_criterion = RD_EXIT_KL;
        l.exit_threshold = 5e-4;
        l.exit_screen_criterion = 1234; // garbage beyond the caller's struct
        l.exit_screen_threshold = f64::NAN;
        // SAFETY: `l` is a valid struct of at least `struct_size` bytes.
        let read = unsafe { read_struct(&raw const l, "l") }.unwrap();
        let limits = read.to_limits().unwrap();
        assert_eq!(limits.exit_screen, ExitSpec::default());
        assert!(!limits.is_screened());
        l.struct_size = 44;
        // SAFETY: as above (an unreleased size is refused before reading).
        assert!(unsafe { read_struct(&raw const l, "l") }.is_err());
    }

    #[test]
    fn screens_are_checked() {
        let mut l = rd_compute_limits_default();
        l.exit_criterion = RD_EXIT_KL;
        l.exit_threshold = 5e-4;
        l.exit_screen_criterion = RD_EXIT_COSINE;
        l.exit_screen_threshold = 1e-2;
        let limits = l.to_limits().unwrap();
        assert!(limits.is_screened());
        assert_eq!(limits.exit_screen.threshold, 1e-2);
        let bad = [
            (RD_EXIT_KL, RD_EXIT_KL, 1e-2),         // not a latent screen
            (RD_EXIT_KL, RD_EXIT_GATE, 0.5),        // the learned gate is no screen
            (RD_EXIT_COSINE, RD_EXIT_COSINE, 1e-2), // nothing to screen
            (RD_EXIT_NONE, RD_EXIT_LATENT_DIFF, 1e-2),
            (RD_EXIT_KL, RD_EXIT_COSINE, -1.0), // bad threshold
            (RD_EXIT_KL, 77, 1.0),              // unknown criterion
        ];
        for (exit, screen, t) in bad {
            l.exit_criterion = exit;
            l.exit_screen_criterion = screen;
            l.exit_screen_threshold = t;
            let e = l.to_limits().unwrap_err();
            assert_eq!(e.status, rd_status::RD_ERR_INVALID_ARGUMENT);
            assert!(e.message.contains("screen"), "{}", e.message);
        }
    }
}
