//! JavaScript: a script on burncache's shared runtime against the same function
//! built as a component of its own with componentize-js (what a user without
//! scripts would do), in the same run:
//!
//! - registering a script this node has never seen: a check on the already compiled
//!   runtime, against componentizing it and compiling the 12 MB component;
//! - one call of `module.exports = (d) => ({ n: d.n + 1 })`.
//!
//! Run: `cargo bench -p burncache --bench scripts` (needs `scripts/setup.sh`, which
//! installs examples/js-udf's packages).

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use burncache::{BurnCache, Limits, Payload};
use criterion::{Criterion, criterion_group, criterion_main};

const INCREMENT: &str = "module.exports = (d) => ({ n: d.n + 1 });\n";

/// The same function as a `udf` component's source: the glue a component author
/// writes around it (payloads in, payloads out).
fn as_component_source(tag: u64) -> String {
    format!(
        "// build {tag}\n\
         const f = (d) => ({{ n: d.n + 1 }});\n\
         const impl = {{\n\
           call(input) {{ return {{ tag: 'json', val: JSON.stringify(f(JSON.parse(input.val))) }}; }},\n\
           callBatch(inputs) {{ return inputs.map((i) => ({{ tag: 'ok', val: impl.call(i) }})); }},\n\
         }};\n\
         export {{ impl as function }};\n"
    )
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("host/ is in the workspace")
        .to_path_buf()
}

/// Componentizes `source` with examples/js-udf's componentize-js.
fn componentize(source: &str, dir: &Path, name: &str) -> Vec<u8> {
    let js = dir.join(format!("{name}.js"));
    let wasm = dir.join(format!("{name}.wasm"));
    std::fs::write(&js, source).expect("write the source");
    let status = Command::new("node")
        .arg(workspace().join("examples/js-udf/build.mjs"))
        .arg(&wasm)
        .arg(&js)
        .stderr(std::process::Stdio::null())
        .status()
        .expect("run node");
    assert!(
        status.success(),
        "componentize-js failed (run scripts/setup.sh)"
    );
    std::fs::read(&wasm).expect("read the component")
}

fn scripts(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let dir = std::env::temp_dir().join(format!("burncache-bench-scripts-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");

    let cache = BurnCache::new().expect("cache");
    let script = runtime
        .block_on(cache.register(INCREMENT.as_bytes()))
        .expect("register the script");
    let component = componentize(&as_component_source(0), &dir, "increment");
    let own = runtime
        .block_on(cache.register(&component))
        .expect("register the component");
    let limits = Limits::default();
    let input = r#"{"n":41}"#;

    let mut group = c.benchmark_group("script_call");
    for (label, digest) in [("shared_runtime", script), ("own_component", own)] {
        group.bench_function(label, |b| {
            b.to_async(&runtime).iter(|| async {
                let out = cache
                    .execute(&digest, Payload::Json(input.to_string()), &limits)
                    .await
                    .expect("call");
                black_box(out)
            })
        });
    }
    group.finish();

    // Every iteration registers a script this node has never seen.
    let fresh = AtomicU64::new(1);
    let mut group = c.benchmark_group("script_register");
    group.bench_function("shared_runtime", |b| {
        b.to_async(&runtime).iter(|| async {
            let n = fresh.fetch_add(1, Ordering::Relaxed);
            let source = format!("// script {n}\n{INCREMENT}");
            black_box(cache.register(source.as_bytes()).await.expect("register"))
        })
    });
    // Componentize and compile: seconds an iteration, so the fewest samples
    // criterion takes.
    group.sample_size(10);
    group.warm_up_time(Duration::from_millis(1));
    group.measurement_time(Duration::from_secs(200));
    group.bench_function("own_component", |b| {
        b.iter_custom(|iterations| {
            let mut total = Duration::ZERO;
            for _ in 0..iterations {
                let n = fresh.fetch_add(1, Ordering::Relaxed);
                let started = Instant::now();
                let bytes = componentize(&as_component_source(n), &dir, "fresh");
                let digest = runtime.block_on(cache.register(&bytes)).expect("register");
                total += started.elapsed();
                cache.forget(&digest);
            }
            total
        })
    });
    group.finish();
    let _ = std::fs::remove_dir_all(&dir);
}

criterion_group!(benches, scripts);
criterion_main!(benches);
