//! P1, per-call overhead: a fresh Store, an instance and a trivial JSON call of
//! `add-one`, through burncache and through two baselines in the same process on the
//! same component:
//!
//! - the embedding a competent wasmtime user writes, as `wasmtime serve` does: the
//!   `Linker` and `InstancePre` built once, the export looked up once, a new Store
//!   per call; with the default (on-demand) allocator and with the pooling allocator;
//! - a naive embedding that builds a `Linker` and instantiates from the `Component`
//!   on every call, with the default allocator.
//!
//! Run: `cargo bench -p burncache --bench per_call`

use std::hint::black_box;

use burncache::{BurnCache, Limits, Payload};
use criterion::{Criterion, criterion_group, criterion_main};
use wasmtime::component::{
    Component, ComponentExportIndex, ComponentType, InstancePre, Lift, Linker, Lower, ResourceTable,
};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

/// The WIT `payload` variant, declared here as a naive embedder would.
#[derive(ComponentType, Lift, Lower, Debug)]
#[component(variant)]
enum NaivePayload {
    #[component(name = "json")]
    Json(String),
    #[component(name = "bytes")]
    Bytes(Vec<u8>),
}

struct NaiveState {
    wasi: WasiCtx,
    table: ResourceTable,
}

impl WasiView for NaiveState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// The naive path: everything but compiling, redone per call.
async fn naive_call(engine: &Engine, component: &Component, input: &str) -> String {
    let mut linker: Linker<NaiveState> = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker).expect("wasi");
    linker
        .instance("burncache:host/types@0.1.1")
        .expect("types");
    let mut store = Store::new(
        engine,
        NaiveState {
            wasi: WasiCtx::builder().build(),
            table: ResourceTable::new(),
        },
    );
    let instance = linker
        .instantiate_async(&mut store, component)
        .await
        .expect("instantiate");
    let interface = instance
        .get_export_index(&mut store, None, "burncache:host/function@0.1.1")
        .expect("interface");
    let call = instance
        .get_export_index(&mut store, Some(&interface), "call")
        .expect("call");
    let call = instance
        .get_typed_func::<(NaivePayload,), (Result<NaivePayload, String>,)>(&mut store, &call)
        .expect("typed");
    let (out,) = call
        .call_async(&mut store, (NaivePayload::Json(input.to_string()),))
        .await
        .expect("call");
    match out {
        Ok(NaivePayload::Json(text)) => text,
        other => panic!("unexpected {other:?}"),
    }
}

/// The competent path: everything that does not depend on the call made once.
struct Prepared {
    engine: Engine,
    pre: InstancePre<NaiveState>,
    call: ComponentExportIndex,
}

impl Prepared {
    fn new(config: &Config, bytes: &[u8]) -> Prepared {
        let engine = Engine::new(config).expect("engine");
        let component = Component::new(&engine, bytes).expect("compile");
        let mut linker: Linker<NaiveState> = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).expect("wasi");
        linker
            .instance("burncache:host/types@0.1.1")
            .expect("types");
        let pre = linker.instantiate_pre(&component).expect("pre");
        let (_, interface) = component
            .get_export(None, "burncache:host/function@0.1.1")
            .expect("interface");
        let (_, call) = component
            .get_export(Some(&interface), "call")
            .expect("call");
        Prepared { engine, pre, call }
    }

    async fn call(&self, input: &str) -> String {
        let mut store = Store::new(
            &self.engine,
            NaiveState {
                wasi: WasiCtx::builder().build(),
                table: ResourceTable::new(),
            },
        );
        let instance = self
            .pre
            .instantiate_async(&mut store)
            .await
            .expect("instantiate");
        let call = instance
            .get_typed_func::<(NaivePayload,), (Result<NaivePayload, String>,)>(
                &mut store, self.call,
            )
            .expect("typed");
        let (out,) = call
            .call_async(&mut store, (NaivePayload::Json(input.to_string()),))
            .await
            .expect("call");
        match out {
            Ok(NaivePayload::Json(text)) => text,
            other => panic!("unexpected {other:?}"),
        }
    }
}

fn per_call(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let bytes = std::fs::read(burncache_test_guests::ADD_ONE).expect("add-one is built");
    let input = r#"{"n":41}"#;

    let cache = BurnCache::new().expect("cache");
    let digest = runtime.block_on(cache.register(&bytes)).expect("register");
    let limits = Limits::default();

    let engine = Engine::new(&Config::new()).expect("engine");
    let component = Component::new(&engine, &bytes).expect("compile");

    let prepared = Prepared::new(&Config::new(), &bytes);
    let mut pooling = Config::new();
    pooling.allocation_strategy(InstanceAllocationStrategy::Pooling(
        PoolingAllocationConfig::default(),
    ));
    let prepared_pooling = Prepared::new(&pooling, &bytes);

    let mut group = c.benchmark_group("per_call");
    group.bench_function("burncache", |b| {
        b.to_async(&runtime).iter(|| async {
            let out = cache
                .execute(&digest, Payload::Json(input.to_string()), &limits)
                .await
                .expect("call");
            black_box(out)
        })
    });
    group.bench_function("instance_pre_wasmtime", |b| {
        b.to_async(&runtime)
            .iter(|| async { black_box(prepared.call(input).await) })
    });
    group.bench_function("instance_pre_pooling_wasmtime", |b| {
        b.to_async(&runtime)
            .iter(|| async { black_box(prepared_pooling.call(input).await) })
    });
    group.bench_function("naive_wasmtime", |b| {
        b.to_async(&runtime)
            .iter(|| async { black_box(naive_call(&engine, &component, input).await) })
    });
    group.finish();
}

criterion_group!(benches, per_call);
criterion_main!(benches);
