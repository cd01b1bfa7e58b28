//! The committed C header `include/recurrent_depth.h` must be exactly what
//! build.rs generates from `src/ffi` with cbindgen, so that C users and CI
//! never see a stale header.

use std::path::Path;

/// The header build.rs generated into OUT_DIR for this build.
const GENERATED: &str = include_str!(concat!(env!("OUT_DIR"), "/recurrent_depth.h"));

#[test]
fn committed_header_matches_the_generated_one() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("include/recurrent_depth.h");
    let committed = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| {
            panic!(
                "{}: {e}; generate it with `RD_WRITE_HEADER=1 cargo build`",
                path.display()
            )
        })
        .replace("\r\n", "\n");
    let generated = GENERATED.replace("\r\n", "\n");
    if committed == generated {
        return;
    }
    // Show where they first differ, with a little context.
    let (c, g): (Vec<&str>, Vec<&str>) = (committed.lines().collect(), generated.lines().collect());
    let first = c
        .iter()
        .zip(&g)
        .position(|(a, b)| a != b)
        .unwrap_or(c.len().min(g.len()));
    let mut diff = String::new();
    for i in first.saturating_sub(2)..(first + 4).min(c.len().max(g.len())) {
        let a = c.get(i).copied().unwrap_or("<end of file>");
        let b = g.get(i).copied().unwrap_or("<end of file>");
        if a == b {
            diff.push_str(&format!("   {:5} {a}\n", i + 1));
        } else {
            diff.push_str(&format!("-  {:5} {a}\n+  {:5} {b}\n", i + 1, i + 1));
        }
    }
    panic!(
        "{} is out of date with src/ffi (first difference at line {}; - committed, + generated):\n\
         {diff}\nRegenerate it with `RD_WRITE_HEADER=1 cargo build` and commit the result.",
        path.display(),
        first + 1
    );
}
