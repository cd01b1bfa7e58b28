//! The runtime against the authors' own code for the looped families beyond
//! Huginn: logits written by tools/authors_families.py with the public
//! modeling files of retrofitted recurrence (`RavenForCausalLM`, Llama
//! blocks) and of Ouro (`OuroForCausalLM`), on random models our maker
//! rebuilds from the manifest (the FNV-1a hash proves it is the same file).
//! Ouro's exit gate: the authors' per-loop lambda at the last prompt
//! position against the `gate` criterion's value after `r` loops.

mod common;

use recurrent_depth::exit::{ExitCriterion, ExitSpec};
use recurrent_depth::generate::{ComputeLimits, GenerateParams};
use recurrent_depth::model::Model;
use recurrent_depth::npy;
use recurrent_depth::session::{Session, SessionParams, StateInit};
use recurrent_depth::testmodel::{self, TestModelSpec};
use std::path::{Path, PathBuf};
use std::sync::Arc;

const PROMPT: [u32; 9] = [1, 2, 3, 4, 77, 140, 9, 200, 31];

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden_families")
}

struct Row {
    name: String,
    family: String,
    spec: TestModelSpec,
    iterations: usize,
    init: String,
    fnv: u64,
    file: String,
}

fn rows() -> Vec<Row> {
    let text = std::fs::read_to_string(dir().join("manifest.tsv")).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split('\t').collect();
    lines
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let cols: Vec<&str> = l.split('\t').collect();
            let col = |name: &str| cols[header.iter().position(|h| *h == name).unwrap()];
            let num = |name: &str| col(name).parse::<usize>().unwrap();
            let blocks: Vec<usize> = col("blocks")
                .split(',')
                .map(|b| b.parse().unwrap())
                .collect();
            let family = col("family").to_string();
            Row {
                name: col("name").to_string(),
                spec: TestModelSpec {
                    seed: num("seed") as u64,
                    n_embd: num("n_embd"),
                    n_head: num("n_head"),
                    n_head_kv: num("n_head_kv"),
                    n_prelude: blocks[0],
                    n_core: blocks[1],
                    n_coda: blocks[2],
                    tied: num("tied") == 1,
                    qk_bias: false,
                    retrofitted: family == "retrofitted",
                    ouro: family == "ouro",
                    ..TestModelSpec::default()
                },
                family,
                iterations: num("iterations"),
                init: col("init").to_string(),
                fnv: u64::from_str_radix(col("fnv1a64"), 16).unwrap(),
                file: col("file").to_string(),
            }
        })
        .collect()
}

fn model_for(row: &Row) -> Arc<Model> {
    let path =
        std::env::temp_dir().join(format!("rd-fam-{}-{}.gguf", std::process::id(), row.name));
    testmodel::write(&row.spec, &path).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(
        common::fnv1a64(&bytes),
        row.fnv,
        "{}: the maker no longer reproduces the file; rerun tools/authors_families.py",
        row.name
    );
    let m = Arc::new(Model::load(&path, &common::load_params(2)).unwrap());
    let _ = std::fs::remove_file(&path);
    m
}

#[test]
fn logits_match_the_authors_code() {
    let rows = rows();
    let mut families = std::collections::BTreeSet::new();
    for row in rows.iter().filter(|r| r.init != "gate") {
        let m = model_for(row);
        let want: npy::NpyArray<f32> =
            npy::read(&std::fs::read(dir().join(&row.file)).unwrap()).unwrap();
        let (state_init, seed) = match row.init.as_str() {
            "zeros" => (StateInit::Zeros, 0),
            s => (StateInit::Random, s.parse().unwrap()),
        };
        let sp = SessionParams {
            n_ctx: 64,
            kv_budget: row.iterations,
            state_init,
            seed,
            ..SessionParams::default()
        };
        let got = Session::new(m, &sp)
            .unwrap()
            .eval_all_logits(&PROMPT, row.iterations)
            .unwrap();
        assert_eq!(got.len(), want.data.len());
        let err = common::rel_err(&got, &want.data);
        let v = row.spec.n_vocab;
        let agree = (0..PROMPT.len())
            .filter(|&r| {
                common::argmax(&got[r * v..(r + 1) * v])
                    == common::argmax(&want.data[r * v..(r + 1) * v])
            })
            .count();
        eprintln!(
            "{} ({}) r={} init={}: {err:.2e} of the logit range, top-1 {agree}/{}",
            row.name,
            row.family,
            row.iterations,
            row.init,
            PROMPT.len()
        );
        assert!(err < 1e-4, "{} r={}: {err:.3e}", row.name, row.iterations);
        assert_eq!(agree, PROMPT.len());
        families.insert(row.family.clone());
    }
    assert_eq!(families.len(), 2, "both families have goldens");
}

#[test]
fn ouro_gate_matches_the_authors_code() {
    let rows = rows();
    let gates: Vec<&Row> = rows.iter().filter(|r| r.init == "gate").collect();
    assert!(!gates.is_empty());
    for row in gates {
        let m = model_for(row);
        let lam: npy::NpyArray<f32> =
            npy::read(&std::fs::read(dir().join(&row.file)).unwrap()).unwrap();
        let (loops, n) = (lam.shape[0], lam.shape[1]);
        assert_eq!(n, PROMPT.len());
        for r in [1, 2, 3, 4] {
            // The authors' probability of having exited by loop r at the last position.
            let survive: f64 = (0..r)
                .map(|t| 1.0 - f64::from(lam.data[t * n + n - 1]))
                .product();
            let want = 1.0 - survive;
            assert!(r <= loops);
            // The gate's value after the prompt ran exactly r loops.
            let sp = SessionParams {
                n_ctx: 64,
                kv_budget: r,
                ..SessionParams::default()
            };
            let mut s = Session::new(Arc::clone(&m), &sp).unwrap();
            let params = GenerateParams {
                max_tokens: 1,
                limits: ComputeLimits {
                    min_iterations: r,
                    max_iterations: r,
                    exit: ExitSpec::new(ExitCriterion::Gate),
                    exit_in_prefill: true,
                    ..ComputeLimits::default()
                },
                prefill_iterations: Some(r),
                ..GenerateParams::default()
            };
            let mut got = f64::NAN;
            s.generate(&PROMPT, &params, |ev, _| {
                got = ev.exit_value;
                true
            })
            .unwrap();
            eprintln!(
                "{} gate after {r} loops: {got:.6} (authors {want:.6})",
                row.name
            );
            assert!((got - want).abs() < 1e-5, "{}: {got} vs {want}", row.name);
        }
    }
}
