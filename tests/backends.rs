//! Device selection and behaviour on the device under test
//! (`RD_TEST_BACKEND`, the CPU when unset; .ci/run also runs this file on
//! Vulkan/lavapipe): placement, graph splits, agreement with the CPU backend,
//! cancellation, and sessions on several threads at once.

mod common;

use recurrent_depth::model::{BackendKind, LoadParams, Model};
use recurrent_depth::session::{Session, SessionParams};
use recurrent_depth::testmodel::{self, TestModelSpec};
use recurrent_depth::{Error, list_devices};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;

fn model_file(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("rd-backends-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{name}.gguf"));
    let spec = TestModelSpec {
        seed: 31,
        ..TestModelSpec::default()
    };
    testmodel::write(&spec, &path).unwrap();
    path
}

fn session(model: &Arc<Model>) -> Session {
    Session::new(
        Arc::clone(model),
        &SessionParams {
            n_ctx: 64,
            kv_budget: 4,
            ..SessionParams::default()
        },
    )
    .unwrap()
}

const PROMPT: [u32; 6] = [3, 1, 4, 1, 5, 9];

#[test]
fn device_list_and_choices() {
    let devices = list_devices();
    assert!(
        devices
            .iter()
            .any(|d| d.is_cpu() && d.backend == BackendKind::Cpu)
    );
    for d in &devices {
        // Every listed device can be named back.
        let again: BackendKind = d.backend.to_string().parse().unwrap();
        assert_eq!(again, d.backend);
    }
    for (text, kind) in [
        ("auto", BackendKind::Auto),
        ("CPU", BackendKind::Cpu),
        ("gpu", BackendKind::Gpu),
        ("vulkan", BackendKind::Vulkan(0)),
        ("vulkan:2", BackendKind::Vulkan(2)),
        ("metal", BackendKind::Metal),
    ] {
        assert_eq!(text.parse::<BackendKind>().unwrap(), kind, "{text}");
    }
    for bad in ["", "vulkan:", "vulkan:-1", "cuda", "vulkan:x"] {
        assert!(
            matches!(bad.parse::<BackendKind>(), Err(Error::InvalidArgument(_))),
            "{bad:?}"
        );
    }
    // A device that does not exist is a clean error, not a crash.
    let path = model_file("missing-device");
    let r = Model::load(
        &path,
        &LoadParams {
            backend: BackendKind::Vulkan(1000),
            ..LoadParams::default()
        },
    );
    assert!(matches!(r, Err(Error::Backend(_))), "{:?}", r.err());
}

/// `rd devices` lists the CPU and the device under test.
#[test]
fn rd_devices_lists_the_device_under_test() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_rd"))
        .arg("devices")
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    println!("{text}");
    assert!(text.lines().any(|l| l.starts_with("cpu ")), "{text}");
    let want = common::test_backend();
    if !matches!(
        want,
        BackendKind::Cpu | BackendKind::Auto | BackendKind::Gpu
    ) {
        let name = want.to_string();
        assert!(
            text.lines()
                .any(|l| l.split_whitespace().next() == Some(name.as_str())),
            "{name} missing from:\n{text}"
        );
    }
}

#[test]
fn placement_and_splits_on_the_device_under_test() {
    let path = model_file("placement");
    let model = Arc::new(Model::load(&path, &common::load_params(1)).unwrap());
    let chosen = model.load_params().backend;
    let want = common::test_backend();
    match want {
        BackendKind::Auto | BackendKind::Gpu => {}
        other => assert_eq!(chosen, other),
    }
    // The CPU (and devices that wrap host memory) use the mapping in place;
    // Vulkan copies the weights to the device once.
    match chosen {
        BackendKind::Cpu => assert!(model.weights_are_mapped()),
        BackendKind::Vulkan(_) => assert!(!model.weights_are_mapped()),
        _ => {}
    }
    let s = session(&model);
    // Every op of every graph runs on the device: no fallback to the CPU.
    assert_eq!(s.graph_splits(), 1, "graphs split on {}", s.backend_name());
}

/// Logits on the device under test against the CPU backend, after a prompt and
/// a few decoded tokens at several iteration counts.
#[test]
fn device_agrees_with_the_cpu_backend() {
    let path = model_file("agree");
    let dev = Arc::new(Model::load(&path, &common::load_params(1)).unwrap());
    let cpu = Arc::new(Model::load(&path, &common::cpu_params(1)).unwrap());
    // F32 weights: bounds as in tests/golden.rs (Vulkan with f16 staging is
    // the loosest).
    let bound = if common::on_gpu() { 4e-3 } else { 0.0 };
    for iterations in [1, 5, 20] {
        let mut a = session(&dev);
        let mut b = session(&cpu);
        a.eval(&PROMPT, iterations).unwrap();
        b.eval(&PROMPT, iterations).unwrap();
        for t in [7u32, 11, 13] {
            let (la, lb) = (a.logits().to_vec(), b.logits().to_vec());
            let (lo, hi) = lb
                .iter()
                .fold((f32::MAX, f32::MIN), |(l, h), &x| (l.min(x), h.max(x)));
            let diff = la
                .iter()
                .zip(&lb)
                .map(|(x, y)| (x - y).abs())
                .fold(0.0f32, f32::max);
            let rel = diff / (hi - lo);
            println!("iterations {iterations}: max |device - cpu| / range = {rel:.2e}");
            assert!(
                rel <= bound,
                "iterations {iterations}: {rel:.3e} > {bound:.1e}"
            );
            a.eval(&[t], iterations).unwrap();
            b.eval(&[t], iterations).unwrap();
        }
    }
}

/// A cancel request stops a long evaluation (on a GPU at the end of the
/// running graph, at most 16 recurrence steps) and leaves the session usable.
#[test]
fn cancellation_leaves_the_session_usable() {
    let path = model_file("cancel");
    let model = Arc::new(Model::load(&path, &common::load_params(1)).unwrap());
    let mut s = session(&model);
    let flag = s.cancel_flag();
    let t = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(50));
        flag.store(true, Ordering::Relaxed);
    });
    // Evaluate until the request lands (one evaluation may finish first).
    let mut cancelled = false;
    for _ in 0..1000 {
        match s.eval(&PROMPT, 4096) {
            Err(Error::Cancelled) => {
                cancelled = true;
                break;
            }
            Ok(()) => s.truncate(0),
            Err(e) => panic!("{e}"),
        }
    }
    t.join().unwrap();
    assert!(cancelled);
    s.reset();
    s.eval(&PROMPT, 3).unwrap();
    let mut fresh = session(&model);
    fresh.eval(&PROMPT, 3).unwrap();
    assert_eq!(s.logits(), fresh.logits());
}

/// Two sessions of one model created and run at the same time on two
/// threads (on Vulkan this once raced inside ggml's device set-up).
#[test]
fn two_sessions_on_two_threads() {
    let path = model_file("threads");
    let model = Arc::new(Model::load(&path, &common::load_params(1)).unwrap());
    let run = |m: Arc<Model>| {
        std::thread::spawn(move || {
            let mut s = session(&m);
            s.eval(&PROMPT, 6).unwrap();
            s.eval(&[2], 6).unwrap();
            s.logits().to_vec()
        })
    };
    let (a, b) = (run(Arc::clone(&model)), run(Arc::clone(&model)));
    let (a, b) = (a.join().unwrap(), b.join().unwrap());
    assert_eq!(a, b);
}

/// ggml's messages reach a handler set with `set_log_handler`, filtered by
/// level; by default nothing below a warning is printed.
#[test]
fn log_messages_reach_the_handler() {
    use recurrent_depth::{LogLevel, set_log_handler};
    use std::sync::Mutex;
    static SEEN: Mutex<Vec<(LogLevel, String)>> = Mutex::new(Vec::new());
    set_log_handler(
        LogLevel::Debug,
        Some(Box::new(|l, m| {
            SEEN.lock().unwrap().push((l, m.to_string()))
        })),
    );
    let path = model_file("logs");
    let model = Arc::new(Model::load(&path, &common::load_params(1)).unwrap());
    let mut s = session(&model);
    s.eval(&PROMPT, 2).unwrap();
    // A certain message: ggml's own GGUF parser reports a bad file as an
    // error (the library never uses that parser; this test calls it).
    let bad = model_file("logs").with_extension("bad");
    std::fs::write(&bad, b"not a gguf file at all").unwrap();
    let c_path = std::ffi::CString::new(bad.to_str().unwrap()).unwrap();
    let params = ggml_sys::gguf_init_params {
        no_alloc: true,
        ctx: std::ptr::null_mut(),
    };
    // SAFETY: a NUL-terminated path; NULL is returned for the bad file.
    let ctx = unsafe { ggml_sys::gguf_init_from_file(c_path.as_ptr(), params) };
    assert!(ctx.is_null());
    // Errors only from here on: debug messages are dropped.
    set_log_handler(
        LogLevel::Error,
        Some(Box::new(|l, m| {
            SEEN.lock().unwrap().push((l, m.to_string()))
        })),
    );
    let n_before = SEEN.lock().unwrap().len();
    s.eval(&[1], 3).unwrap();
    let debug_after = SEEN.lock().unwrap()[n_before..]
        .iter()
        .filter(|(l, _)| *l < LogLevel::Error)
        .count();
    assert_eq!(debug_after, 0);
    set_log_handler(LogLevel::Warn, None);
    let seen = SEEN.lock().unwrap();
    for (l, m) in seen.iter().take(5) {
        println!("{l:?}: {m}");
    }
    assert!(
        seen.iter()
            .any(|(l, m)| *l == LogLevel::Error && m.contains("gguf")),
        "the parser's error did not arrive"
    );
    assert!(seen.iter().all(|(_, m)| !m.ends_with('\n')));
}
