//! Implementations of the `rd` subcommands.

use crate::args::{Cli, Command, LogitsArgs, MakeArgs, ModelArgs, RunArgs};
use recurrent_depth::exit::ExitSpec;
use recurrent_depth::generate::{ComputeLimits, GenerateParams};
use recurrent_depth::gguf::{GgmlType, GgufFile};
use recurrent_depth::model::{BackendKind, LoadParams, Model};
use recurrent_depth::sampling::SamplingParams;
use recurrent_depth::session::{Session, SessionParams, StateInit};
use recurrent_depth::testmodel::TestModelSpec;
use recurrent_depth::{Error, Result};
use std::io::Write;
use std::sync::Arc;

pub fn dispatch(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Info { file } => {
            let f = GgufFile::open(&file)?;
            print!("{}", recurrent_depth::gguf::describe(&f));
            Ok(())
        }
        Command::Logits(a) => logits(a),
        Command::Run(a) => run(a),
        Command::MakeTestModel(a) => make(a),
    }
}

fn parse_ids(s: &str) -> Result<Vec<u32>> {
    s.split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(|t| {
            t.parse::<u32>()
                .map_err(|_| Error::InvalidArgument(format!("bad token id {t:?}")))
        })
        .collect()
}

/// Loads the model and opens a session for `iterations`.
fn open(a: &ModelArgs, iterations: Option<usize>) -> Result<(Session, usize)> {
    let backend = match a.device.as_str() {
        "auto" => BackendKind::Auto,
        "cpu" => BackendKind::Cpu,
        "gpu" => BackendKind::Gpu,
        o => {
            return Err(Error::InvalidArgument(format!(
                "unknown device {o:?} (auto, cpu, gpu)"
            )));
        }
    };
    let model = Model::load(
        &a.model,
        &LoadParams {
            backend,
            n_threads: a.threads,
            use_mmap: true,
        },
    )?;
    let iterations = iterations.unwrap_or(model.config().default_iterations);
    let (state_init, seed) = match a.init.as_str() {
        "zeros" => (StateInit::Zeros, 0),
        s => match s.strip_prefix("seed:").and_then(|n| n.parse::<u64>().ok()) {
            Some(seed) => (StateInit::Random, seed),
            None => {
                return Err(Error::InvalidArgument(format!(
                    "bad --init {s:?} (zeros or seed:N)"
                )));
            }
        },
    };
    let params = SessionParams {
        n_ctx: a.ctx,
        kv_budget: a.kv_budget.unwrap_or(iterations),
        seed,
        state_init,
        ..SessionParams::default()
    };
    Ok((Session::new(Arc::new(model), &params)?, iterations))
}

fn logits(a: LogitsArgs) -> Result<()> {
    let tokens = parse_ids(&a.tokens)?;
    let (mut s, iters) = open(&a.model, a.iterations)?;
    let out = s.eval_all_logits(&tokens, iters)?;
    let n_vocab = s.model().config().n_vocab;
    let mut f = std::io::BufWriter::new(std::fs::File::create(&a.out)?);
    recurrent_depth::npy::write(&mut f, &[tokens.len(), n_vocab], &out)?;
    f.flush()?;
    eprintln!(
        "wrote {} x {} logits to {}",
        tokens.len(),
        n_vocab,
        a.out.display()
    );
    Ok(())
}

fn run(a: RunArgs) -> Result<()> {
    let prompt = parse_ids(&a.prompt_tokens)?;
    let max_it = a.iterations.or(a.max_iterations);
    let (mut s, default_iters) = open(&a.model, max_it)?;
    let max_iterations = max_it.unwrap_or(default_iters);
    let min_iterations = a
        .iterations
        .or(a.min_iterations)
        .unwrap_or(1)
        .min(max_iterations);
    let limits = ComputeLimits {
        min_iterations,
        max_iterations,
        exit: a.exit.parse::<ExitSpec>()?,
        check_every: a.check_every,
        exit_in_prefill: a.exit_in_prefill,
        warm_start: a.warm_start,
    };
    let sampled = a.temp.is_some() || a.top_k.is_some() || a.top_p.is_some() || a.min_p.is_some();
    let d = SamplingParams::default();
    let sampling = SamplingParams {
        temperature: a.temp.unwrap_or(d.temperature),
        top_k: a.top_k.unwrap_or(d.top_k),
        top_p: a.top_p.unwrap_or(d.top_p),
        min_p: a.min_p.unwrap_or(d.min_p),
        repeat_penalty: a.repeat_penalty.unwrap_or(d.repeat_penalty),
        seed: a.seed,
        greedy: a.greedy || !sampled,
        ..d
    };
    let params = GenerateParams {
        max_tokens: a.max_tokens,
        limits,
        prefill_iterations: None,
        sampling,
        stop_tokens: parse_ids(&a.stop)?,
    };
    let json = a.json;
    let mut out = std::io::stdout().lock();
    let stats = s.generate(&prompt, &params, |ev, _| {
        let _ = if json {
            writeln!(
                out,
                "{{\"id\":{},\"text\":null,\"iterations\":{},\"exit_value\":{}}}",
                ev.token,
                ev.iterations,
                json_f64(ev.exit_value)
            )
        } else {
            let bar = iteration_bar(ev.iterations, max_iterations);
            writeln!(out, "{:>6}  {:>4} it  {bar}", ev.token, ev.iterations)
        };
        true
    })?;
    let tps = |n: usize, secs: f64| if secs > 0.0 { n as f64 / secs } else { 0.0 };
    if json {
        writeln!(
            out,
            "{{\"stats\":{{\"tokens\":{},\"prompt_tokens\":{},\"prefill_tokens_per_s\":{:.3},\"decode_tokens_per_s\":{:.3},\"mean_iterations\":{:.3},\"kv_bytes\":{}}}}}",
            stats.tokens,
            stats.prompt_tokens,
            tps(stats.prompt_tokens, stats.prefill_seconds),
            tps(stats.tokens.saturating_sub(1), stats.decode_seconds),
            stats.mean_iterations,
            stats.kv_bytes
        )?;
    } else {
        eprintln!(
            "{} tokens, mean {:.2} iterations (max {}), prefill {:.1} tok/s, decode {:.1} tok/s, KV cache {:.1} KiB",
            stats.tokens,
            stats.mean_iterations,
            max_iterations,
            tps(stats.prompt_tokens, stats.prefill_seconds),
            tps(stats.tokens.saturating_sub(1), stats.decode_seconds),
            stats.kv_bytes as f64 / 1024.0
        );
    }
    Ok(())
}

fn json_f64(v: f64) -> String {
    if v.is_finite() {
        format!("{v:e}")
    } else {
        "null".into()
    }
}

/// A bar of `#` proportional to iterations used, 20 wide at `max`.
fn iteration_bar(iterations: usize, max: usize) -> String {
    let n = (iterations * 20).div_ceil(max.max(1)).min(20);
    "#".repeat(n)
}

fn make(a: MakeArgs) -> Result<()> {
    let ty = GgmlType::from_name(&a.weight_type)
        .ok_or_else(|| Error::InvalidArgument(format!("unknown type {:?}", a.weight_type)))?;
    let blocks = parse_ids(&a.blocks)?;
    let [p, c, k] = blocks[..] else {
        return Err(Error::InvalidArgument(
            "--blocks takes prelude,core,coda".into(),
        ));
    };
    let spec = TestModelSpec {
        seed: a.seed,
        n_embd: a.n_embd,
        n_ff: a.n_ff,
        n_head: a.n_head,
        n_head_kv: a.n_head_kv.unwrap_or(a.n_head),
        n_vocab: a.n_vocab,
        n_ctx: a.n_ctx,
        n_prelude: p as usize,
        n_core: c as usize,
        n_coda: k as usize,
        tied: !a.untied,
        qk_bias: !a.no_qk_bias,
        weight_type: ty,
        default_iterations: a.default_iterations,
        ..TestModelSpec::default()
    };
    recurrent_depth::testmodel::write(&spec, &a.out)?;
    eprintln!("wrote {}", a.out.display());
    Ok(())
}
