//! Command-line syntax.

use clap::{Args, Parser, Subcommand, ValueEnum};
use recurrent_depth::exit::ExitSpec;
use recurrent_depth::gguf::GgmlType;
use recurrent_depth::model::{BackendKind, Repack};
use std::path::PathBuf;
use std::str::FromStr;

/// Run recurrent-depth (Huginn) language models from GGUF files.
#[derive(Parser, Debug)]
#[command(name = "rd", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Messages of the compute library (ggml) shown on stderr: error, warn,
    /// info or debug.
    #[arg(long, global = true, value_enum, default_value_t = LogLevelArg::Warn)]
    pub log_level: LogLevelArg,
}

/// `--log-level`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogLevelArg {
    Error,
    Warn,
    Info,
    Debug,
}

impl From<LogLevelArg> for recurrent_depth::LogLevel {
    fn from(l: LogLevelArg) -> Self {
        match l {
            LogLevelArg::Error => Self::Error,
            LogLevelArg::Warn => Self::Warn,
            LogLevelArg::Info => Self::Info,
            LogLevelArg::Debug => Self::Debug,
        }
    }
}

/// `--kv-type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum KvTypeArg {
    F32,
    F16,
}

/// `--attention`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum AttentionArg {
    Auto,
    Fused,
    Separate,
}

/// `--init`: the initial recurrent state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InitArg {
    /// All zeros.
    Zeros,
    /// A truncated normal from this seed.
    Seed(u64),
}

impl FromStr for InitArg {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "zeros" => Ok(InitArg::Zeros),
            _ => s
                .strip_prefix("seed:")
                .and_then(|n| n.parse().ok())
                .map(InitArg::Seed)
                .ok_or_else(|| format!("{s:?} is neither zeros nor seed:N")),
        }
    }
}

/// `--blocks`: prelude, core and coda layer counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Blocks {
    pub prelude: usize,
    pub core: usize,
    pub coda: usize,
}

impl FromStr for Blocks {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let n: Vec<usize> = s
            .split(',')
            .map(|t| t.trim().parse::<usize>())
            .collect::<Result<_, _>>()
            .map_err(|e| format!("{s:?}: {e}"))?;
        match n[..] {
            [prelude, core, coda] => Ok(Blocks {
                prelude,
                core,
                coda,
            }),
            _ => Err(format!("{s:?}: three counts expected (prelude,core,coda)")),
        }
    }
}

/// A token id (surrounding spaces allowed, as in `--stop "1, 2"`).
fn token_id(s: &str) -> Result<u32, String> {
    s.trim().parse().map_err(|_| format!("bad token id {s:?}"))
}

/// A weight type name (f32, q8_0, ...), any case.
fn weight_type(s: &str) -> Result<GgmlType, String> {
    GgmlType::from_name(s).ok_or_else(|| format!("unknown weight type {s:?}"))
}

/// A weight type the converter and the quantizer can write.
fn output_type(s: &str) -> Result<GgmlType, String> {
    recurrent_depth::convert::parse_type(s).map_err(|e| e.to_string())
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Print a GGUF file's metadata and tensor table; with --device, also load
    /// the model there and report where its graphs run.
    Info {
        /// The GGUF file.
        file: PathBuf,
        /// Also load the model on this device (auto, cpu, gpu, vulkan,
        /// vulkan:N, metal) and print the backend, weight placement, memory and
        /// the number of device splits of the largest graph.
        #[arg(long)]
        device: Option<BackendKind>,
    },
    /// List the devices this build can run on, with their memory.
    Devices,
    /// Evaluate tokens and write the logits of every position as .npy.
    Logits(LogitsArgs),
    /// Generate tokens greedily from a prompt of token ids.
    Run(RunArgs),
    /// Write a small random Huginn model (for tests and benchmarks).
    MakeTestModel(MakeArgs),
    /// Convert a Hugging Face Huginn checkpoint directory to GGUF.
    Convert(ConvertArgs),
    /// Re-quantize a Huginn GGUF file to another weight type.
    Quantize(QuantizeArgs),
    /// Interactive multi-turn chat (keeps the KV cache between turns).
    Chat(ChatArgs),
    /// Print the token ids of a text (and the pieces they decode to).
    Tokenize(TokenizeArgs),
}

/// Options shared by commands that load a model.
#[derive(Args, Debug)]
pub struct ModelArgs {
    /// The GGUF model file.
    #[arg(long, short = 'm')]
    pub model: PathBuf,
    /// CPU threads (0 = physical cores).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Device: auto (first GPU, else CPU), cpu, gpu, vulkan, vulkan:N or
    /// metal (`rd devices` lists them).
    #[arg(long, default_value = "auto")]
    pub device: BackendKind,
    /// Context length (0 = the model's).
    #[arg(long, default_value_t = 0)]
    pub ctx: usize,
    /// Initial state: zeros, or seed:N for a seeded truncated normal.
    #[arg(long, default_value = "zeros")]
    pub init: InitArg,
    /// How hard idle CPU threads poll for work before sleeping, 0..=100
    /// (ggml's default 50; 0 saves power, 100 spins longest).
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(0..=100))]
    pub poll: u32,
    /// KV cache element type: f32 (exact) or f16 (half the memory).
    #[arg(long, value_enum, default_value_t = KvTypeArg::F32)]
    pub kv_type: KvTypeArg,
    /// Attention: auto (today separate: on the CPU fused is faster at prefill,
    /// level at decode with AVX-512 kernels, slower with AVX2), fused
    /// (ggml_flash_attn_ext) or separate (two products around a softmax).
    #[arg(long, value_enum, default_value_t = AttentionArg::Auto)]
    pub attention: AttentionArg,
    /// Repack weight matrices for the CPU's interleaved kernels: auto (where
    /// this CPU has them) or off (every weight used in place from the file).
    #[arg(long, default_value = "auto")]
    pub repack: Repack,
    /// Map the weights lazily instead of reading them once while loading
    /// (a faster load, slower first tokens).
    #[arg(long)]
    pub no_prefetch: bool,
    /// KV recurrence budget B (slots per core block; default: the iteration count, i.e. the full cache).
    #[arg(long)]
    pub kv_budget: Option<usize>,
}

#[derive(Args, Debug)]
pub struct LogitsArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Comma-separated token ids.
    #[arg(long, required = true, value_delimiter = ',', value_parser = token_id)]
    pub tokens: Vec<u32>,
    /// Recurrence iterations per token (default: the model's).
    #[arg(long)]
    pub iterations: Option<usize>,
    /// Output .npy file (float32 [n_tokens, n_vocab]).
    #[arg(long)]
    pub out: PathBuf,
}

#[derive(Args, Debug)]
pub struct RunArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Comma-separated prompt token ids.
    #[arg(
        long,
        required_unless_present = "prompt",
        conflicts_with = "prompt",
        value_delimiter = ',',
        value_parser = token_id
    )]
    pub prompt_tokens: Vec<u32>,
    /// Prompt text, tokenized with the model's tokenizer (a BOS is added when
    /// the tokenizer asks for one; special tokens such as <|end_turn|> are parsed).
    #[arg(long)]
    pub prompt: Option<String>,
    /// Fixed iterations per token (sets both --min- and --max-iterations).
    #[arg(long)]
    pub iterations: Option<usize>,
    /// Fewest core iterations per generated token.
    #[arg(long)]
    pub min_iterations: Option<usize>,
    /// Most core iterations per generated token (default: the model's).
    #[arg(long)]
    pub max_iterations: Option<usize>,
    /// Exit criterion[:threshold]: none, kl, minp-kl, entropy-diff, latent-diff, cosine, argmax-stability, gate (a model's learned exit gate: Ouro), confidence (the top probability of one check: 0.9 by default).
    #[arg(long, default_value = "none")]
    pub exit: ExitSpec,
    /// Screen[:threshold] before an exit criterion on the next-token
    /// distribution: cosine or latent-diff, which compare states only; the
    /// criterion (and its coda) runs from the check where the screen passes.
    #[arg(long, default_value = "none")]
    pub exit_screen: ExitSpec,
    /// Evaluate the exit criterion every N steps once min is reached (0 =
    /// automatic, from the model's cost of a check relative to a step).
    #[arg(long, default_value_t = 1)]
    pub check_every: usize,
    /// Allow early exit during the prompt.
    #[arg(long)]
    pub exit_in_prefill: bool,
    /// The prompt's own exit[:threshold]: cosine or latent-diff over every
    /// prompt position (all must have settled), at each step up to the
    /// prompt's budget; e.g. cosine:1e-2. Not with --exit-in-prefill. With
    /// none, an --exit criterion and no --prefill-iterations, cosine:1e-2
    /// is used.
    #[arg(long, default_value = "none")]
    pub prefill_exit: ExitSpec,
    /// Iterations of the prompt (default: chosen by the runtime: the
    /// tokens' maximum without an exit criterion; with one, up to the
    /// model's default, stopping once the prompt's states settle, as with
    /// --prefill-exit cosine:1e-2). A number runs the prompt at that fixed
    /// count, as the authors' code does with the maximum.
    #[arg(long)]
    pub prefill_iterations: Option<usize>,
    /// Start each token's state from the previous token's final state.
    #[arg(long)]
    pub warm_start: bool,
    /// Let a token's first check end it (the authors' behaviour). By default
    /// the first check of a criterion that compares two checks (kl, minp-kl,
    /// entropy-diff, argmax-stability, latent-diff, cosine) is a lead-in that
    /// only sets the next check's reference, computed in the same graph.
    #[arg(long)]
    pub no_lead_in: bool,
    /// Tokens to generate.
    #[arg(long, default_value_t = 16)]
    pub max_tokens: usize,
    /// Sampling temperature (0 = greedy).
    #[arg(long)]
    pub temp: Option<f32>,
    /// Top-k (0 = off).
    #[arg(long)]
    pub top_k: Option<usize>,
    /// Top-p (1 = off).
    #[arg(long)]
    pub top_p: Option<f32>,
    /// Min-p (0 = off).
    #[arg(long)]
    pub min_p: Option<f32>,
    /// Repetition penalty over the last 64 tokens (1 = off).
    #[arg(long)]
    pub repeat_penalty: Option<f32>,
    /// Sampling seed.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Greedy decoding (the default unless a sampling option is given).
    #[arg(long)]
    pub greedy: bool,
    /// Comma-separated stop token ids (default: the tokenizer's end-of-text
    /// and end-of-turn tokens, when the model has a tokenizer).
    #[arg(long, value_delimiter = ',', value_parser = token_id)]
    pub stop: Vec<u32>,
    /// Self-speculative decoding: tokens drafted per verification pass (0 =
    /// off). Needs a fixed budget (--exit none) and no --warm-start.
    #[arg(long, default_value_t = 0)]
    pub draft_tokens: usize,
    /// Core iterations of each drafted token.
    #[arg(long, default_value_t = 4)]
    pub draft_iterations: usize,
    /// Adapt the number of drafted tokens to how many were accepted.
    #[arg(long)]
    pub draft_adaptive: bool,
    /// One JSON object per token, then a stats object.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct MakeArgs {
    /// Output GGUF path.
    #[arg(long)]
    pub out: PathBuf,
    /// Weight seed.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Weight type (f32, f16, bf16, q8_0, q4_0, q4_k, q6_k, ...).
    #[arg(long = "type", default_value = "f32", value_parser = weight_type)]
    pub weight_type: GgmlType,
    /// Residual width.
    #[arg(long, default_value_t = 96)]
    pub n_embd: usize,
    /// MLP half width.
    #[arg(long, default_value_t = 128)]
    pub n_ff: usize,
    /// Attention heads.
    #[arg(long, default_value_t = 2)]
    pub n_head: usize,
    /// Key/value heads (default: n_head).
    #[arg(long)]
    pub n_head_kv: Option<usize>,
    /// Vocabulary size.
    #[arg(long, default_value_t = 256)]
    pub n_vocab: usize,
    /// Context length.
    #[arg(long, default_value_t = 128)]
    pub n_ctx: usize,
    /// Blocks as prelude,core,coda.
    #[arg(long, default_value = "1,2,1")]
    pub blocks: Blocks,
    /// Write a separate output head.
    #[arg(long)]
    pub untied: bool,
    /// Leave out the q/k biases.
    #[arg(long)]
    pub no_qk_bias: bool,
    /// The layout of Llama models retrofitted with recurrence: pre-norm
    /// blocks, RoPE over head halves, no embedding scale, no norm before
    /// the coda (`huginn.block_type = prenorm`).
    #[arg(long)]
    pub retrofitted: bool,
    /// An `ouro` file: every block looped (use --blocks 0,N,0), norms around
    /// each sublayer, an exit gate.
    #[arg(long)]
    pub ouro: bool,
    /// Default recurrence stored in the file.
    #[arg(long, default_value_t = 8)]
    pub default_iterations: usize,
    /// A Hugging Face tokenizer.json to store in the file (as
    /// tokenizer.huggingface.json); without it the file has no tokenizer.
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    /// A Jinja chat template file to store as tokenizer.chat_template
    /// (needs --tokenizer).
    #[arg(long, requires = "tokenizer")]
    pub chat_template: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct ConvertArgs {
    /// Checkpoint directory (config.json, model.safetensors or model.safetensors.index.json,
    /// tokenizer.json, tokenizer_config.json).
    pub hf_dir: PathBuf,
    /// Output GGUF path.
    pub out: PathBuf,
    /// Weight matrix type: f32, f16, bf16, q8_0, q6_k, q5_k, q4_k, q5_1, q5_0, q4_1, q4_0.
    #[arg(long = "type", default_value = "f16", value_parser = output_type)]
    pub weight_type: GgmlType,
    /// general.name (default: from config.json or the directory name).
    #[arg(long)]
    pub name: Option<String>,
    /// Quantization threads (0 = all cores).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

#[derive(Args, Debug)]
pub struct QuantizeArgs {
    /// Input Huginn GGUF.
    pub input: PathBuf,
    /// Output GGUF path.
    pub out: PathBuf,
    /// Weight matrix type (as for convert).
    #[arg(long = "type", value_parser = output_type)]
    pub weight_type: GgmlType,
    /// Quantization threads (0 = all cores).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

#[derive(Args, Debug)]
pub struct ChatArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// System message put first in the conversation.
    #[arg(long)]
    pub system: Option<String>,
    /// Most core iterations per token (default: the model's).
    #[arg(long)]
    pub max_iterations: Option<usize>,
    /// Fewest core iterations per token.
    #[arg(long, default_value_t = 4)]
    pub min_iterations: usize,
    /// Exit criterion[:threshold] (none, kl, minp-kl, entropy-diff, latent-diff, cosine, argmax-stability, gate, confidence).
    #[arg(long, default_value = "kl:5e-4")]
    pub exit: ExitSpec,
    /// Screen[:threshold] before the exit criterion (cosine or latent-diff;
    /// see `rd run --help`).
    #[arg(long, default_value = "none")]
    pub exit_screen: ExitSpec,
    /// The prompt's own exit[:threshold] (cosine or latent-diff over every
    /// position of each turn; see `rd run --help`).
    #[arg(long, default_value = "none")]
    pub prefill_exit: ExitSpec,
    /// Iterations of the prompt (default: chosen by the runtime: the
    /// tokens' maximum without an exit criterion; with one, up to the
    /// model's default, stopping once the prompt's states settle, as with
    /// --prefill-exit cosine:1e-2). A number runs the prompt at that fixed
    /// count, as the authors' code does with the maximum.
    #[arg(long)]
    pub prefill_iterations: Option<usize>,
    /// Evaluate the exit criterion every N steps once min is reached (0 =
    /// automatic, from the model's cost of a check relative to a step).
    #[arg(long, default_value_t = 1)]
    pub check_every: usize,
    /// Start each token's state from the previous token's final state.
    #[arg(long)]
    pub warm_start: bool,
    /// Let a token's first check end it (the authors' behaviour). By default
    /// the first check of a criterion that compares two checks (kl, minp-kl,
    /// entropy-diff, argmax-stability, latent-diff, cosine) is a lead-in that
    /// only sets the next check's reference, computed in the same graph.
    #[arg(long)]
    pub no_lead_in: bool,
    /// Most tokens per reply.
    #[arg(long, default_value_t = 512)]
    pub max_tokens: usize,
    /// Sampling temperature (0 = greedy).
    #[arg(long, default_value_t = 0.0)]
    pub temp: f32,
    /// Top-p (1 = off).
    #[arg(long, default_value_t = 1.0)]
    pub top_p: f32,
    /// Sampling seed.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Print each token's iteration count after it, as `text[n]`.
    #[arg(long)]
    pub show_iterations: bool,
}

#[derive(Args, Debug)]
pub struct TokenizeArgs {
    /// The GGUF file whose tokenizer to use.
    #[arg(long, short = 'm')]
    pub model: PathBuf,
    /// Text to tokenize.
    pub text: String,
    /// Prepend a BOS token when the tokenizer asks for one.
    #[arg(long)]
    pub add_special: bool,
    /// Treat special-token text (<|end_turn|>) as plain text.
    #[arg(long)]
    pub no_parse_special: bool,
}
