//! Implementations of the `rd` subcommands.

use crate::args::{Cli, Command, LogitsArgs, MakeArgs, ModelArgs, RunArgs};
use recurrent_depth::gguf::{GgmlType, GgufFile};
use recurrent_depth::model::{BackendKind, LoadParams, Model};
use recurrent_depth::session::{Session, SessionParams, StateInit};
use recurrent_depth::testmodel::TestModelSpec;
use recurrent_depth::{Error, Result};
use std::io::Write;
use std::sync::Arc;
use std::time::Instant;

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

fn argmax(v: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best as u32
}

fn run(a: RunArgs) -> Result<()> {
    let prompt = parse_ids(&a.prompt_tokens)?;
    let (mut s, iters) = open(&a.model, a.iterations)?;
    let t0 = Instant::now();
    s.eval(&prompt, iters)?;
    let prefill = t0.elapsed();
    let t1 = Instant::now();
    let mut out = Vec::with_capacity(a.max_tokens);
    for i in 0..a.max_tokens {
        let next = argmax(s.logits());
        out.push(next);
        print!("{next}{}", if i + 1 < a.max_tokens { "," } else { "\n" });
        std::io::stdout().flush()?;
        if i + 1 < a.max_tokens {
            s.eval(&[next], iters)?;
        }
    }
    let decode = t1.elapsed();
    eprintln!(
        "prompt {} tokens in {:.1} ms, generated {} tokens in {:.1} ms ({} iterations per token)",
        prompt.len(),
        prefill.as_secs_f64() * 1e3,
        out.len(),
        decode.as_secs_f64() * 1e3,
        iters
    );
    Ok(())
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
