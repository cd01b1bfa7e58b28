//! Command-line syntax.

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

/// Run recurrent-depth (Huginn) language models from GGUF files.
#[derive(Parser, Debug)]
#[command(name = "rd", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Print a GGUF file's metadata and tensor table.
    Info {
        /// The GGUF file.
        file: PathBuf,
    },
    /// Evaluate tokens and write the logits of every position as .npy.
    Logits(LogitsArgs),
    /// Generate tokens greedily from a prompt of token ids.
    Run(RunArgs),
    /// Write a small random Huginn model (for tests and benchmarks).
    MakeTestModel(MakeArgs),
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
    /// Device: auto, cpu or gpu.
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// Context length (0 = the model's).
    #[arg(long, default_value_t = 0)]
    pub ctx: usize,
    /// Initial state: zeros, or seed:N for a seeded truncated normal.
    #[arg(long, default_value = "zeros")]
    pub init: String,
    /// KV recurrence budget B (slots per core block; default: the iteration count, i.e. the full cache).
    #[arg(long)]
    pub kv_budget: Option<usize>,
}

#[derive(Args, Debug)]
pub struct LogitsArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Comma-separated token ids.
    #[arg(long)]
    pub tokens: String,
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
    #[arg(long)]
    pub prompt_tokens: String,
    /// Fixed iterations per token (sets both --min- and --max-iterations).
    #[arg(long)]
    pub iterations: Option<usize>,
    /// Fewest core iterations per generated token.
    #[arg(long)]
    pub min_iterations: Option<usize>,
    /// Most core iterations per generated token (default: the model's).
    #[arg(long)]
    pub max_iterations: Option<usize>,
    /// Exit criterion[:threshold]: none, kl, minp-kl, entropy-diff, latent-diff, cosine, argmax-stability.
    #[arg(long, default_value = "none")]
    pub exit: String,
    /// Evaluate the exit criterion every N steps once min is reached.
    #[arg(long, default_value_t = 1)]
    pub check_every: usize,
    /// Allow early exit during the prompt.
    #[arg(long)]
    pub exit_in_prefill: bool,
    /// Start each token's state from the previous token's final state.
    #[arg(long)]
    pub warm_start: bool,
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
    /// Comma-separated stop token ids.
    #[arg(long, default_value = "")]
    pub stop: String,
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
    #[arg(long = "type", default_value = "f32")]
    pub weight_type: String,
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
    pub blocks: String,
    /// Write a separate output head.
    #[arg(long)]
    pub untied: bool,
    /// Leave out the q/k biases.
    #[arg(long)]
    pub no_qk_bias: bool,
    /// Default recurrence stored in the file.
    #[arg(long, default_value_t = 8)]
    pub default_iterations: usize,
}
