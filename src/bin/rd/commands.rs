//! Implementations of the `rd` subcommands.

use crate::args::{
    AttentionArg, ChatArgs, Cli, Command, ConvertArgs, InitArg, KvTypeArg, LogitsArgs, MakeArgs,
    ModelArgs, QuantizeArgs, RunArgs, TokenizeArgs,
};
use recurrent_depth::chat::{ChatMessage, ChatTemplate, TemplateTokens};
use recurrent_depth::convert::{ConvertOptions, ConvertReport, Progress};
use recurrent_depth::generate::{ComputeLimits, DraftParams, GenerateParams, StopReason};
use recurrent_depth::gguf::{GgmlType, GgufFile};
use recurrent_depth::model::{BackendKind, LoadParams, Model};
use recurrent_depth::sampling::SamplingParams;
use recurrent_depth::session::{KvType, Session, SessionParams, StateInit};
use recurrent_depth::testmodel::TestModelSpec;
use recurrent_depth::tokenizer::{StreamDecoder, Tokenizer};
use recurrent_depth::{Error, Result};
use std::io::Write;
use std::sync::Arc;

pub fn dispatch(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Info { file, device } => {
            let f = GgufFile::open(&file)?;
            print!("{}", recurrent_depth::gguf::describe(&f));
            match device {
                Some(d) => placement(&file, d),
                None => Ok(()),
            }
        }
        Command::Devices => devices(),
        Command::Logits(a) => logits(a),
        Command::Run(a) => run(a),
        Command::MakeTestModel(a) => make(a),
        Command::Convert(a) => convert(a),
        Command::Quantize(a) => quantize(a),
        Command::Chat(a) => chat(a),
        Command::Tokenize(a) => tokenize(a),
    }
}

/// Loads the model and opens a session for `iterations`.
fn open(a: &ModelArgs, iterations: Option<usize>) -> Result<(Session, usize)> {
    let backend = a.device;
    let model = Model::load(
        &a.model,
        &LoadParams {
            backend,
            n_threads: a.threads,
            use_mmap: true,
            repack: a.repack,
            prefetch: !a.no_prefetch,
        },
    )?;
    let iterations = iterations.unwrap_or(model.config().default_iterations);
    let (state_init, seed) = match a.init {
        InitArg::Zeros => (StateInit::Zeros, 0),
        InitArg::Seed(seed) => (StateInit::Random, seed),
    };
    let params = SessionParams {
        n_ctx: a.ctx,
        kv_budget: a.kv_budget.unwrap_or(iterations),
        seed,
        state_init,
        thread_poll: a.poll,
        kv_type: match a.kv_type {
            KvTypeArg::F32 => KvType::F32,
            KvTypeArg::F16 => KvType::F16,
        },
        flash_attention: match a.attention {
            AttentionArg::Auto => None,
            AttentionArg::Fused => Some(true),
            AttentionArg::Separate => Some(false),
        },
        ..SessionParams::default()
    };
    Ok((Session::new(Arc::new(model), &params)?, iterations))
}

/// `rd devices`: one line per device.
fn devices() -> Result<()> {
    let list = recurrent_depth::list_devices();
    println!(
        "{:<10} {:<8} {:<14} {:>10} {:>10}  description",
        "choice", "api", "type", "free MiB", "total MiB"
    );
    for d in &list {
        let mib = |b: usize| {
            if b == 0 {
                "-".to_string()
            } else {
                (b >> 20).to_string()
            }
        };
        println!(
            "{:<10} {:<8} {:<14} {:>10} {:>10}  {}{}",
            d.backend.to_string(),
            d.api,
            format!("{:?}", d.device_type),
            mib(d.memory_free),
            mib(d.memory_total),
            d.description,
            if d.maps_host_memory && !d.is_cpu() {
                " (uses mapped weights in place)"
            } else {
                ""
            }
        );
    }
    if !list.iter().any(|d| !d.is_cpu()) {
        println!(
            "(no GPU: build with --features vulkan or metal; Vulkan CPU devices such as \
             lavapipe need GGML_VK_VISIBLE_DEVICES)"
        );
    }
    Ok(())
}

/// `rd info --device`: loads the model there and reports where graphs run.
fn placement(file: &std::path::Path, backend: BackendKind) -> Result<()> {
    let model = Arc::new(Model::load(
        file,
        &LoadParams {
            backend,
            ..LoadParams::default()
        },
    )?);
    let s = Session::new(
        Arc::clone(&model),
        &SessionParams {
            n_ctx: model.config().context_length.min(512),
            ..SessionParams::default()
        },
    )?;
    println!();
    println!(
        "device: {} ({}), chosen as {}",
        model.backend_name(),
        model.device_description(),
        model.load_params().backend
    );
    println!(
        "weights: {}",
        if model.weights_are_mapped() {
            "used in place from the memory map"
        } else {
            "copied to the device once at load"
        }
    );
    let auto = ComputeLimits {
        min_iterations: 1,
        max_iterations: 32,
        exit: "kl".parse()?,
        check_every: 0,
        ..ComputeLimits::default()
    }
    .resolve_check_every(&model);
    println!(
        "an exit check on the next-token distribution costs {:.2} recurrence steps (weight bytes); automatic check_every for kl: {}",
        model.check_cost_in_steps(),
        auto.check_every
    );
    if model.repacked_bytes() > 0 {
        println!(
            "repacked for the CPU's kernels: {:.1} MiB (anonymous memory; ggml buffer types {})",
            model.repacked_bytes() as f64 / 1048576.0,
            model.repacked_types().join(", ")
        );
    }
    println!(
        "session (n_ctx {}, B 1): KV {:.1} MiB, compute buffers {:.1} MiB",
        s.n_ctx(),
        s.kv_bytes() as f64 / 1048576.0,
        s.compute_bytes() as f64 / 1048576.0
    );
    println!(
        "graph splits (largest graph: prelude, 16 recurrences, coda): {}{}",
        s.graph_splits(),
        if s.graph_splits() > 1 {
            " (some ops fall back to the CPU)"
        } else {
            " (everything runs on the device)"
        }
    );
    Ok(())
}

fn logits(a: LogitsArgs) -> Result<()> {
    let tokens = a.tokens;
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
    let max_it = a.iterations.or(a.max_iterations);
    let (mut s, default_iters) = open(&a.model, max_it)?;
    // A text prompt needs the model's tokenizer; token ids do not.
    let tokenizer = match a.prompt {
        Some(_) => Some(Tokenizer::from_gguf(s.model().gguf())?),
        None => None,
    };
    let prompt = match (&a.prompt, &tokenizer) {
        (Some(text), Some(tok)) => tok.encode(text, true, true)?,
        _ => a.prompt_tokens.clone(),
    };
    let stop_tokens = match &tokenizer {
        Some(tok) if a.stop.is_empty() => tok.stop_tokens(),
        _ => a.stop.clone(),
    };
    let mut decoder = StreamDecoder::new(false);
    let mut generated_text = String::new();
    let max_iterations = max_it.unwrap_or(default_iters);
    let min_iterations = a
        .iterations
        .or(a.min_iterations)
        .unwrap_or(1)
        .min(max_iterations);
    let limits = ComputeLimits {
        min_iterations,
        max_iterations,
        exit: a.exit,
        exit_screen: a.exit_screen,
        check_every: a.check_every,
        exit_in_prefill: a.exit_in_prefill,
        prefill_exit: a.prefill_exit,
        warm_start: a.warm_start,
        lead_in: !a.no_lead_in,
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
        prefill_iterations: a.prefill_iterations,
        sampling,
        stop_tokens,
        draft: DraftParams {
            tokens: a.draft_tokens,
            iterations: a.draft_iterations,
            adaptive: a.draft_adaptive,
        },
    };
    let json = a.json;
    let mut out = std::io::stdout().lock();
    let stats = s.generate(&prompt, &params, |ev, _| {
        // The text this token completes (whole UTF-8 characters only).
        let piece = tokenizer.as_ref().map(|tok| decoder.push(tok, ev.token));
        if let Some(p) = &piece {
            generated_text.push_str(p);
        }
        let _ = if json {
            let line = serde_json::json!({
                "id": ev.token,
                "text": piece,
                "iterations": ev.iterations,
                "exit_value": ev.exit_value,
                "logprob": ev.logprob,
            });
            writeln!(out, "{line}")
        } else {
            let bar = iteration_bar(ev.iterations, max_iterations);
            match &piece {
                Some(p) => writeln!(
                    out,
                    "{:>6}  {:>4} it  {bar:<20}  {p:?}",
                    ev.token, ev.iterations
                ),
                None => writeln!(out, "{:>6}  {:>4} it  {bar}", ev.token, ev.iterations),
            }
        };
        true
    })?;
    if tokenizer.is_some() {
        decoder.finish_into(&mut generated_text);
        if !json {
            writeln!(out, "\n{generated_text}")?;
        }
    }
    let tps = |n: usize, secs: f64| if secs > 0.0 { n as f64 / secs } else { 0.0 };
    if json {
        let line = serde_json::json!({
            "stats": {
                "tokens": stats.tokens,
                "prompt_tokens": stats.prompt_tokens,
                "prefill_tokens_per_s": tps(stats.prompt_tokens, stats.prefill_seconds),
                "decode_tokens_per_s": tps(stats.tokens.saturating_sub(1), stats.decode_seconds),
                "prefill_seconds": stats.prefill_seconds,
                "decode_seconds": stats.decode_seconds,
                "mean_iterations": stats.mean_iterations,
                "prefill_iterations": stats.prefill_iterations,
                "kv_bytes": stats.kv_bytes,
                "stop": stop_name(stats.stop),
                "draft_tokens": stats.draft_tokens,
                "draft_accepted": stats.draft_accepted,
                "verify_passes": stats.verify_passes,
            }
        });
        writeln!(out, "{line}")?;
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
        if stats.verify_passes > 0 {
            eprintln!(
                "speculation: {} of {} drafts accepted ({:.0}%), {:.2} tokens per verification pass",
                stats.draft_accepted,
                stats.draft_tokens,
                100.0 * stats.draft_accepted as f64 / stats.draft_tokens.max(1) as f64,
                (stats.draft_accepted + stats.verify_passes) as f64 / stats.verify_passes as f64
            );
        }
    }
    Ok(())
}

/// The `stop` field of `rd run --json`'s stats.
fn stop_name(stop: StopReason) -> &'static str {
    match stop {
        StopReason::MaxTokens => "max_tokens",
        StopReason::StopToken => "stop_token",
        StopReason::Callback => "callback",
        StopReason::ContextFull => "context_full",
    }
}

/// A bar of `#` proportional to iterations used, 20 wide at `max`.
fn iteration_bar(iterations: usize, max: usize) -> String {
    let n = (iterations * 20).div_ceil(max.max(1)).min(20);
    "#".repeat(n)
}

fn make(a: MakeArgs) -> Result<()> {
    let spec = TestModelSpec {
        seed: a.seed,
        n_embd: a.n_embd,
        n_ff: a.n_ff,
        n_head: a.n_head,
        n_head_kv: a.n_head_kv.unwrap_or(a.n_head),
        n_vocab: a.n_vocab,
        n_ctx: a.n_ctx,
        n_prelude: a.blocks.prelude,
        n_core: a.blocks.core,
        n_coda: a.blocks.coda,
        tied: !a.untied,
        qk_bias: !a.no_qk_bias,
        weight_type: a.weight_type,
        default_iterations: a.default_iterations,
        retrofitted: a.retrofitted,
        ouro: a.ouro,
        ..TestModelSpec::default()
    };
    match &a.tokenizer {
        None => recurrent_depth::testmodel::write(&spec, &a.out)?,
        Some(path) => {
            let read = |p: &std::path::Path| {
                std::fs::read_to_string(p)
                    .map_err(|e| Error::InvalidArgument(format!("{}: {e}", p.display())))
            };
            let json = read(path)?;
            let template = a.chat_template.as_deref().map(read).transpose()?;
            let mut w = recurrent_depth::testmodel::build(&spec)?;
            recurrent_depth::testmodel::add_text_metadata(&mut w, &json, template.as_deref())?;
            w.write_to_file(&a.out)?;
        }
    }
    eprintln!("wrote {}", a.out.display());
    Ok(())
}

/// A progress bar over input bytes for convert and quantize (none when quiet).
fn byte_progress(quiet: bool) -> (indicatif::ProgressBar, impl FnMut(&Progress)) {
    let bar = if quiet {
        indicatif::ProgressBar::hidden()
    } else {
        let bar = indicatif::ProgressBar::new(0);
        let style = indicatif::ProgressStyle::with_template(
            "{bar:30} {bytes}/{total_bytes} ({binary_bytes_per_sec}, {eta}) {msg}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
        bar.set_style(style);
        bar
    };
    let b = bar.clone();
    let update = move |p: &Progress| {
        b.set_length(p.bytes_total);
        b.set_position(p.bytes_done);
        b.set_message(format!(
            "tensor {}/{} {}",
            p.index + 1,
            p.n_tensors,
            p.tensor
        ));
    };
    (bar, update)
}

/// Prints what a conversion wrote: types, fallbacks grouped by reason, drops.
fn print_report(r: &ConvertReport, out: &std::path::Path) {
    let mut counts: Vec<(GgmlType, usize)> = Vec::new();
    for t in &r.tensors {
        match counts.iter_mut().find(|(ty, _)| *ty == t.ty) {
            Some((_, n)) => *n += 1,
            None => counts.push((t.ty, 1)),
        }
    }
    let types: Vec<String> = counts.iter().map(|(ty, n)| format!("{n} {ty}")).collect();
    eprintln!(
        "wrote {} ({:.1} MiB): {} tensors ({})",
        out.display(),
        r.bytes_written as f64 / (1024.0 * 1024.0),
        r.tensors.len(),
        types.join(", ")
    );
    let mut groups: Vec<(&str, Vec<&str>)> = Vec::new();
    for t in r.fallbacks() {
        let note = t.note.as_deref().unwrap_or("");
        match groups.iter_mut().find(|(n, _)| *n == note) {
            Some((_, names)) => names.push(&t.name),
            None => groups.push((note, vec![&t.name])),
        }
    }
    for (note, names) in groups {
        let shown: Vec<&str> = names.iter().take(3).copied().collect();
        let more = if names.len() > 3 { ", ..." } else { "" };
        eprintln!(
            "  {note}: {} tensor(s) ({}{more})",
            names.len(),
            shown.join(", ")
        );
    }
    for (name, why) in &r.dropped {
        eprintln!("  dropped {name}: {why}");
    }
    if let Some(head) = &r.head {
        eprintln!("  output head: {head:?}");
    }
    match &r.tokenizer {
        Some(t) => {
            let pre = t
                .pre
                .as_deref()
                .unwrap_or("(not a llama.cpp pre-tokenizer; use tokenizer.huggingface.json)");
            eprintln!(
                "  tokenizer: {} tokens, tokenizer.ggml.* keys: {}, pre: {pre}, chat template: {}",
                t.n_tokens,
                match &t.ggml_skipped {
                    None => "yes".to_string(),
                    Some(why) => format!("no ({why})"),
                },
                if t.chat_template { "yes" } else { "no" }
            );
        }
        None if r.config.is_some() => eprintln!("  no tokenizer.json: the file has no tokenizer"),
        None => {}
    }
    for note in &r.notes {
        eprintln!("  note: {note}");
    }
}

fn convert(a: ConvertArgs) -> Result<()> {
    let opts = ConvertOptions {
        out_type: a.weight_type,
        name: a.name.clone(),
        threads: a.threads,
    };
    let (bar, mut update) = byte_progress(a.quiet);
    let report = recurrent_depth::convert::convert(&a.hf_dir, &a.out, &opts, &mut update);
    bar.finish_and_clear();
    print_report(&report?, &a.out);
    Ok(())
}

fn quantize(a: QuantizeArgs) -> Result<()> {
    let (bar, mut update) = byte_progress(a.quiet);
    let report = recurrent_depth::convert::requantize(
        &a.input,
        &a.out,
        a.weight_type,
        a.threads,
        &mut update,
    );
    bar.finish_and_clear();
    print_report(&report?, &a.out);
    Ok(())
}

fn tokenize(a: TokenizeArgs) -> Result<()> {
    let file = GgufFile::open(&a.model)?;
    let tok = Tokenizer::from_gguf(&file)?;
    let ids = tok.encode(&a.text, a.add_special, !a.no_parse_special)?;
    let mut out = std::io::stdout().lock();
    for id in &ids {
        let bytes = tok.token_bytes(*id).unwrap_or_default();
        writeln!(out, "{id:>7}  {:?}", String::from_utf8_lossy(bytes))?;
    }
    let list: Vec<String> = ids.iter().map(u32::to_string).collect();
    writeln!(out, "{}", list.join(","))?;
    Ok(())
}

/// One character per token, higher for more iterations.
fn sparkline(iterations: &[usize], max: usize) -> String {
    const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    iterations
        .iter()
        .map(|&it| BARS[(it * 8).div_ceil(max.max(1)).clamp(1, 8) - 1])
        .collect()
}

/// Forgets the conversation but its system message, and the session's cache.
fn reset_chat(
    messages: &mut Vec<ChatMessage>,
    cached: &mut Vec<u32>,
    transcript: &mut Option<(String, u32)>,
    s: &mut Session,
) {
    messages.retain(|m| m.role == "system");
    cached.clear();
    *transcript = None;
    s.reset();
}

fn chat(a: ChatArgs) -> Result<()> {
    let (mut s, default_iters) = open(&a.model, a.max_iterations)?;
    let max_iterations = a.max_iterations.unwrap_or(default_iters);
    let tok = Tokenizer::from_gguf(s.model().gguf())?;
    let template = ChatTemplate::from_gguf(s.model().gguf())?.ok_or_else(|| {
        Error::InvalidArgument("the model file has no tokenizer.chat_template".into())
    })?;
    let text_of = |id: Option<u32>| {
        id.and_then(|i| tok.token_bytes(i))
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .unwrap_or_default()
    };
    let special = tok.special_tokens().clone();
    let template_tokens = TemplateTokens {
        bos: text_of(special.bos),
        eos: text_of(special.eos),
    };
    let limits = ComputeLimits {
        min_iterations: a.min_iterations.clamp(1, max_iterations),
        max_iterations,
        exit: a.exit,
        exit_screen: a.exit_screen,
        check_every: a.check_every,
        exit_in_prefill: false,
        prefill_exit: a.prefill_exit,
        warm_start: a.warm_start,
        lead_in: !a.no_lead_in,
    };
    let sampling = SamplingParams {
        temperature: a.temp,
        top_p: a.top_p,
        seed: a.seed,
        greedy: a.temp <= 0.0,
        ..SamplingParams::default()
    };
    let params = GenerateParams {
        max_tokens: a.max_tokens,
        limits,
        prefill_iterations: a.prefill_iterations,
        sampling,
        stop_tokens: tok.stop_tokens(),
        draft: DraftParams::default(),
    };
    let mut messages: Vec<ChatMessage> = Vec::new();
    if let Some(sys) = &a.system {
        messages.push(ChatMessage::new("system", sys.clone()));
    }
    // Token ids whose K/V rows are in the session, in order.
    let mut cached: Vec<u32> = Vec::new();
    // The conversation text the cache holds, and the last sampled token.
    let mut transcript: Option<(String, u32)> = None;
    eprintln!(
        "chat with {} (/reset clears the conversation, Ctrl-D quits)",
        a.model.model.display()
    );
    let stdin = std::io::stdin();
    loop {
        eprint!("> ");
        std::io::stderr().flush()?;
        let mut line = String::new();
        if stdin.read_line(&mut line)? == 0 {
            eprintln!();
            return Ok(());
        }
        let line = line.trim_end_matches(['\n', '\r']);
        if line.trim().is_empty() {
            continue;
        }
        if line.trim() == "/reset" {
            reset_chat(&mut messages, &mut cached, &mut transcript, &mut s);
            continue;
        }
        messages.push(ChatMessage::new("user", line));
        let rendered = template.render(&messages, true, &template_tokens)?;
        // When the cache holds exactly the conversation rendered so far (plus
        // the last sampled token, not yet evaluated), only the new text is
        // tokenized and evaluated. Otherwise the cache is reused up to the
        // first token that differs from the re-tokenized conversation.
        let (keep, prompt) = match transcript.take() {
            Some((prev, last)) if rendered.starts_with(&prev) => {
                let mut ids = vec![last];
                ids.extend(tok.encode(&rendered[prev.len()..], false, true)?);
                (cached.len(), ids)
            }
            _ => {
                let ids = tok.encode(&rendered, false, true)?;
                // At least one token must be evaluated to get fresh logits.
                let keep = cached
                    .iter()
                    .zip(&ids)
                    .take_while(|(a, b)| a == b)
                    .count()
                    .min(ids.len().saturating_sub(1));
                s.truncate(keep);
                cached.truncate(keep);
                (keep, ids[keep..].to_vec())
            }
        };
        let prompt = &prompt[..];
        let mut decoder = StreamDecoder::new(true);
        let mut reply = String::new();
        let mut generated: Vec<u32> = Vec::new();
        let mut iterations: Vec<usize> = Vec::new();
        let mut out = std::io::stdout().lock();
        let result = s.generate(prompt, &params, |ev, _| {
            generated.push(ev.token);
            iterations.push(ev.iterations);
            let piece = decoder.push(&tok, ev.token);
            reply.push_str(&piece);
            let _ = if a.show_iterations && !piece.is_empty() {
                write!(out, "{piece}[{}]", ev.iterations)
            } else {
                write!(out, "{piece}")
            };
            let _ = out.flush();
            true
        });
        decoder.finish_into(&mut reply);
        writeln!(out)?;
        drop(out);
        match result {
            Ok(stats) => {
                cached.extend_from_slice(prompt);
                // The last sampled token has not been evaluated yet.
                cached.extend_from_slice(&generated[..generated.len().saturating_sub(1)]);
                cached.truncate(s.n_past());
                eprintln!(
                    "[prompt {} new + {keep} cached tokens; {} tokens, {:.1} iterations/token (max {max_iterations}), {:.1} tok/s] {}",
                    prompt.len(),
                    stats.tokens,
                    stats.mean_iterations,
                    if stats.decode_seconds > 0.0 {
                        stats.tokens.saturating_sub(1) as f64 / stats.decode_seconds
                    } else {
                        0.0
                    },
                    sparkline(&iterations, max_iterations)
                );
                if stats.stop == StopReason::ContextFull {
                    eprintln!("context full ({} positions): conversation reset", s.n_ctx());
                    reset_chat(&mut messages, &mut cached, &mut transcript, &mut s);
                    continue;
                }
                messages.push(ChatMessage::new("assistant", reply.trim()));
                // Valid if the next rendering starts with it (checked then).
                if let Some(&last) = generated.last() {
                    let text = format!("{rendered}{}", tok.decode(&generated, false));
                    transcript = Some((text, last));
                }
            }
            Err(Error::ContextFull { needed, n_ctx }) => {
                eprintln!("context full ({needed} > {n_ctx} positions): conversation reset");
                reset_chat(&mut messages, &mut cached, &mut transcript, &mut s);
            }
            Err(e) => return Err(e),
        }
    }
}
