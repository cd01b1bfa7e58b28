//! Loading models: weights used in place from the mapping, validation of the
//! huginn schema, a real file of another architecture, and session argument
//! checks that leave the session usable.

mod common;

use recurrent_depth::Error;
use recurrent_depth::gguf::{GgmlType, GgufFile, GgufWriter};
use recurrent_depth::model::{BackendKind, LoadParams, Model, Repack};
use recurrent_depth::session::{Session, SessionParams};
use recurrent_depth::testmodel::{self, TestModelSpec};
use std::path::PathBuf;
use std::sync::Arc;

fn cpu() -> LoadParams {
    LoadParams {
        backend: BackendKind::Cpu,
        n_threads: 2,
        use_mmap: true,
        ..LoadParams::default()
    }
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("rd-load-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d.join(name)
}

fn small_model(name: &str, ty: GgmlType) -> PathBuf {
    let p = tmp(name);
    let spec = TestModelSpec {
        weight_type: ty,
        n_embd: 64,
        n_ff: 64,
        n_head: 2,
        n_head_kv: 2,
        ..TestModelSpec::default()
    };
    testmodel::write(&spec, &p).unwrap();
    p
}

#[test]
fn cpu_weights_are_used_where_they_are_mapped() {
    let p = small_model("mapped.gguf", GgmlType::Q8_0);
    let m = Model::load(&p, &cpu()).unwrap();
    assert!(m.weights_are_mapped());
    // The weight buffer is the file's mapping itself: same base, same length.
    assert_eq!(m.weights_buffer_range(), m.file_range());
    // Without mmap the file is read into memory first; it still loads.
    let m2 = Model::load(
        &p,
        &LoadParams {
            use_mmap: false,
            ..cpu()
        },
    )
    .unwrap();
    assert_eq!(m2.config(), m.config());
}

#[test]
fn prefetch_reads_the_mapping_with_progress_and_changes_no_logit() {
    let p = small_model("prefetch.gguf", GgmlType::Q8_0);
    let run = |prefetch: bool| {
        let mut reports = Vec::new();
        let m = Model::load_with_progress(&p, &LoadParams { prefetch, ..cpu() }, &mut |f| {
            reports.push(f);
            true
        })
        .unwrap();
        assert!(m.weights_are_mapped());
        let mut s = Session::new(Arc::new(m), &SessionParams::default()).unwrap();
        (s.eval_all_logits(&[1, 7, 42, 99], 3).unwrap(), reports)
    };
    let (lazy, lazy_reports) = run(false);
    let (read, read_reports) = run(true);
    assert_eq!(lazy, read);
    // Prefetching reports per tensor, in order, before the final 1.
    assert!(
        read_reports.len() > lazy_reports.len() + 5,
        "{read_reports:?}"
    );
    assert!(
        read_reports.windows(2).all(|w| w[0] <= w[1]),
        "{read_reports:?}"
    );
    assert_eq!(read_reports.last(), Some(&1.0));
    // A progress callback refusing mid-prefetch cancels the load.
    let mut calls = 0;
    let r = Model::load_with_progress(&p, &cpu(), &mut |_| {
        calls += 1;
        calls < 3
    });
    assert!(matches!(r, Err(Error::Cancelled)), "{:?}", r.err());
}

/// Whether ggml has interleaved Q4_0 kernels on this CPU.
fn cpu_repacks_q4_0() -> bool {
    #[cfg(target_arch = "x86_64")]
    return std::arch::is_x86_feature_detected!("avx2");
    #[cfg(target_arch = "aarch64")]
    return std::arch::is_aarch64_feature_detected!("dotprod");
    #[allow(unreachable_code)]
    false
}

#[test]
fn repacked_weights_give_the_same_logits() {
    // Shapes whose matrices all have a multiple of 8 rows (Q4_0 qualifies on
    // AVX2 and on ARM with dot product); the embedding is never repacked.
    let p = tmp("repack.gguf");
    let spec = TestModelSpec {
        weight_type: GgmlType::Q4_0,
        n_embd: 128,
        n_ff: 256,
        n_head: 4,
        n_head_kv: 2,
        seed: 5,
        tied: false,
        ..TestModelSpec::default()
    };
    testmodel::write(&spec, &p).unwrap();
    let logits = |repack: Repack| {
        let m = Arc::new(Model::load(&p, &LoadParams { repack, ..cpu() }).unwrap());
        let bytes = m.repacked_bytes();
        let mut s = Session::new(m, &SessionParams::default()).unwrap();
        let l = s
            .eval_all_logits(&[1, 7, 42, 99, 3, 250, 17, 64], 4)
            .unwrap();
        (l, bytes)
    };
    let (off, off_bytes) = logits(Repack::Off);
    let (auto, auto_bytes) = logits(Repack::Auto);
    assert_eq!(off_bytes, 0);
    if cpu_repacks_q4_0() {
        assert!(auto_bytes > 0, "nothing was repacked");
        eprintln!("repacked {auto_bytes} bytes");
    }
    let range =
        off.iter().fold(f32::MIN, |a, &b| a.max(b)) - off.iter().fold(f32::MAX, |a, &b| a.min(b));
    let worst = off
        .iter()
        .zip(&auto)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    // Same quantized products, another summation order.
    assert!(
        worst <= 1e-4 * range,
        "repacked logits differ by {worst} (range {range})"
    );
    // Another thread count changes nothing either.
    let m = Arc::new(
        Model::load(
            &p,
            &LoadParams {
                n_threads: 1,
                ..cpu()
            },
        )
        .unwrap(),
    );
    let mut s = Session::new(m, &SessionParams::default()).unwrap();
    let one = s
        .eval_all_logits(&[1, 7, 42, 99, 3, 250, 17, 64], 4)
        .unwrap();
    let worst1 = one
        .iter()
        .zip(&auto)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(worst1 <= 1e-4 * range, "1 thread: {worst1}");
}

#[test]
fn thread_polling_changes_no_result() {
    let p = small_model("poll.gguf", GgmlType::Q8_0);
    let m = Arc::new(Model::load(&p, &cpu()).unwrap());
    let logits = |thread_poll: u32| {
        let sp = SessionParams {
            thread_poll,
            ..SessionParams::default()
        };
        let mut s = Session::new(Arc::clone(&m), &sp).unwrap();
        s.eval_all_logits(&[3, 1, 4, 1, 5, 9, 2, 6], 3).unwrap()
    };
    let spin = logits(100);
    assert_eq!(logits(0), spin);
    assert_eq!(logits(50), spin);
    let sp = SessionParams {
        thread_poll: 101,
        ..SessionParams::default()
    };
    assert!(matches!(
        Session::new(Arc::clone(&m), &sp),
        Err(Error::InvalidArgument(_))
    ));
}

/// Rewrites a valid model with one change to its metadata or tensors.
fn mutated(name: &str, f: impl FnOnce(&GgufFile, &mut GgufWriter)) -> Result<Model, Error> {
    let src = small_model(&format!("{name}-src.gguf"), GgmlType::F32);
    let file = GgufFile::open(&src).unwrap();
    let mut w = GgufWriter::new();
    f(&file, &mut w);
    let p = tmp(&format!("{name}.gguf"));
    w.write_to_file(&p).unwrap();
    Model::load(&p, &cpu())
}

fn copy_except(file: &GgufFile, w: &mut GgufWriter, skip_key: &str, skip_tensor: &str) {
    for (k, v) in file.metadata() {
        if k != skip_key {
            w.add_kv(k.clone(), v.clone()).unwrap();
        }
    }
    for t in file.tensors() {
        if t.name != skip_tensor {
            w.add_tensor(t.name.clone(), t.ty, &t.shape, file.tensor_data(t).to_vec())
                .unwrap();
        }
    }
}

fn invalid(r: Result<Model, Error>, needle: &str) {
    match r {
        Err(Error::InvalidModel(m)) => assert!(m.contains(needle), "{m:?} lacks {needle:?}"),
        Err(e) => panic!("expected InvalidModel({needle}), got {e}"),
        Ok(_) => panic!("expected InvalidModel({needle}), got a model"),
    }
}

#[test]
fn schema_violations_are_named() {
    invalid(
        mutated("no-norm", |f, w| {
            copy_except(f, w, "", "blk.1.ffn_norm.weight")
        }),
        "blk.1.ffn_norm.weight",
    );
    invalid(
        mutated("no-key", |f, w| {
            copy_except(f, w, "huginn.core_block_count", "")
        }),
        "core_block_count",
    );
    invalid(
        mutated("extra", |f, w| {
            copy_except(f, w, "", "");
            w.add_tensor("blk.99.mystery", GgmlType::F32, &[4], vec![0; 16])
                .unwrap();
        }),
        "unexpected tensor blk.99.mystery",
    );
    invalid(
        mutated("bad-count", |f, w| {
            copy_except(f, w, "huginn.block_count", "");
            w.add_kv("huginn.block_count", 7u32).unwrap();
        }),
        "block_count",
    );
    invalid(
        mutated("bad-shape", |f, w| {
            copy_except(f, w, "", "output_norm.weight");
            w.add_tensor("output_norm.weight", GgmlType::F32, &[63], vec![0; 63 * 4])
                .unwrap();
        }),
        "output_norm.weight",
    );
    invalid(
        mutated("f16-norm", |f, w| {
            copy_except(f, w, "", "output_norm.weight");
            w.add_tensor("output_norm.weight", GgmlType::F16, &[64], vec![0; 128])
                .unwrap();
        }),
        "unsupported type F16",
    );
    invalid(
        mutated("odd-heads", |f, w| {
            copy_except(f, w, "huginn.attention.head_count_kv", "");
            w.add_kv("huginn.attention.head_count_kv", 3u32).unwrap();
        }),
        "head_count_kv",
    );
    match mutated("other-arch", |f, w| {
        copy_except(f, w, "general.architecture", "");
        w.add_kv("general.architecture", "mamba").unwrap();
    }) {
        Err(Error::UnsupportedArchitecture(a)) => assert_eq!(a, "mamba"),
        _ => panic!("expected unsupported architecture"),
    }
}

#[test]
fn session_rejects_bad_arguments_and_stays_usable() {
    let p = small_model("session.gguf", GgmlType::F32);
    let m = Arc::new(Model::load(&p, &cpu()).unwrap());
    let bad = |params: SessionParams| {
        matches!(
            Session::new(Arc::clone(&m), &params),
            Err(Error::InvalidArgument(_))
        )
    };
    assert!(bad(SessionParams {
        kv_budget: 0,
        ..SessionParams::default()
    }));
    assert!(bad(SessionParams {
        n_ctx: 1 << 20,
        ..SessionParams::default()
    }));
    let mut s = Session::new(
        Arc::clone(&m),
        &SessionParams {
            n_ctx: 16,
            kv_budget: 2,
            ..SessionParams::default()
        },
    )
    .unwrap();
    assert!(matches!(s.eval(&[1, 2], 0), Err(Error::InvalidArgument(_))));
    assert!(matches!(
        s.eval(&[1, 256], 2),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(s.eval(&[], 2), Err(Error::InvalidArgument(_))));
    assert!(matches!(
        s.eval(&[1; 17], 2),
        Err(Error::ContextFull {
            needed: 17,
            n_ctx: 16
        })
    ));
    assert_eq!(s.n_past(), 0, "failed calls must not consume context");
    s.eval(&[1, 2, 3], 2).unwrap();
    let first = s.logits().to_vec();
    s.eval(&[4; 13], 2).unwrap();
    assert!(matches!(s.eval(&[5], 2), Err(Error::ContextFull { .. })));
    s.reset();
    s.eval(&[1, 2, 3], 2).unwrap();
    assert_eq!(
        s.logits(),
        &first[..],
        "a reset session reproduces its first result"
    );
}

/// Devices and pipes are refused before anything is read, with and without
/// the memory map: `/dev/zero` would be read forever, and opening a FIFO
/// blocks until a writer comes (the test would hang).
#[cfg(unix)]
#[test]
fn devices_and_pipes_are_refused() {
    use recurrent_depth::model::{BackendKind, LoadParams, Model};
    let dir = std::env::temp_dir().join(format!("rd-fifo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let fifo = dir.join("model.gguf");
    let status = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(status.success());
    for use_mmap in [true, false] {
        let params = LoadParams {
            backend: BackendKind::Cpu,
            n_threads: 1,
            use_mmap,
            ..LoadParams::default()
        };
        for path in [
            std::path::Path::new("/dev/zero"),
            std::path::Path::new("/dev/null"),
            fifo.as_path(),
        ] {
            let err = Model::load(path, &params).err().expect("refused");
            assert!(
                err.to_string().contains("not a regular file"),
                "{}: {err}",
                path.display()
            );
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn fused_and_separate_attention_agree() {
    use recurrent_depth::session::KvType;
    let p = small_model("fa.gguf", GgmlType::Q8_0);
    let m = Arc::new(Model::load(&p, &cpu()).unwrap());
    let logits = |flash: bool, kv_type: KvType| {
        let sp = SessionParams {
            flash_attention: Some(flash),
            kv_type,
            kv_budget: 2,
            n_batch: 5,
            ..SessionParams::default()
        };
        let mut s = Session::new(Arc::clone(&m), &sp).unwrap();
        assert_eq!(s.flash_attention(), flash);
        // 13 positions in batches of 5: attention over cached rows too.
        s.eval_all_logits(&[3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8, 9], 3)
            .unwrap()
    };
    let exact = logits(false, KvType::F32);
    let range = exact.iter().fold(f32::MIN, |a, &b| a.max(b))
        - exact.iter().fold(f32::MAX, |a, &b| a.min(b));
    let err = |other: &[f32]| {
        other
            .iter()
            .zip(&exact)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max)
            / range
    };
    let fused_f32 = err(&logits(true, KvType::F32));
    let separate_f16 = err(&logits(false, KvType::F16));
    let fused_f16 = err(&logits(true, KvType::F16));
    eprintln!(
        "max error / logit range against separate F32: fused F32 {fused_f32:.2e}, \
         separate F16 {separate_f16:.2e}, fused F16 {fused_f16:.2e}"
    );
    // F32: only the summation order differs.
    assert!(fused_f32 <= 1e-5, "fused F32 {fused_f32}");
    // F16: values rounded to half precision either way (measured 1.8e-2 on
    // this sharp random model); the fused kernel also rounds the queries and
    // accumulates the values in half precision, which may add a little
    // (measured 2.0e-2) but not change the order of magnitude.
    assert!(separate_f16 <= 3e-2, "separate F16 {separate_f16}");
    assert!(
        fused_f16 <= 1.5 * separate_f16 + 1e-3,
        "fused F16 {fused_f16} vs separate F16 {separate_f16}"
    );
}
