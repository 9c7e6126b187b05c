//! burncache's JavaScript runtime: QuickJS in a component that runs scripts given as
//! source text.
//!
//! The host compiles this component once per node and runs every script on it. Each
//! call gets a fresh instance, so a script's globals never leak into the next call;
//! the host's ceilings (fuel, memory, deadline, output) bound the whole instance, the
//! engine included.
//!
//! A script exports one function, either CommonJS style (`module.exports = (x) =>
//! ...`) or as an ES module (`export default function (x) { ... }`). JSON input
//! becomes a value and bytes a `Uint8Array`; the function's return value (awaited,
//! if it is a promise) goes back as bytes when it is a `Uint8Array` or `ArrayBuffer`,
//! and as JSON otherwise.
//!
//! A script may also export `batch`, a function over a whole batch: it gets the array
//! of inputs at once and returns an array of as many outputs. A script may instead be
//! run as a program (`run-program`): its top level is what runs, with `process.argv`,
//! `process.env` and `process.exit`, and `console.log` writing to stdout.

use rquickjs::context::EvalOptions;
use rquickjs::function::Opt;
use rquickjs::promise::PromiseState;
use rquickjs::{
    Array, ArrayBuffer, CatchResultExt, CaughtError, Context, Ctx, Exception, Function, Module,
    Object, Persistent, Promise, Runtime, TypedArray, Value,
};

wit_bindgen::generate!({
    path: "../../wit",
    world: "burncache:host/js-runtime",
    generate_all,
});

use std::cell::{Cell, RefCell};
use std::io::Write as _;

use burncache::host::burn_cache;
use burncache::host::types::{Error, Limits, Payload, Signature};
use exports::burncache::host::script_runtime::{ColumnData, Guest as ScriptGuest, ScriptExports};

mod columnar;

/// The file name scripts are given in positions and stack traces.
const SCRIPT_NAME: &str = "script.js";

struct ScriptRuntime;

impl Guest for ScriptRuntime {
    fn wizer_initialize() {
        ENGINE.with_borrow_mut(|engine| *engine = Some(Engine::start()));
    }
}

impl ScriptGuest for ScriptRuntime {
    fn check(source: String) -> Result<ScriptExports, Error> {
        with_context(|ctx| {
            load(ctx, &source).and_then(|exports| {
                if let Some(columns) = &exports.columns {
                    columnar::signature(columns)?;
                }
                Ok(ScriptExports {
                    function: exports.function.is_some(),
                    batch: exports.batch.is_some(),
                    columns: exports.columns.is_some(),
                })
            })
        })
    }

    fn call(source: String, input: Payload) -> Result<Payload, Error> {
        with_context(|ctx| match load(ctx, &source)? {
            Exports {
                function: Some(function),
                ..
            } => invoke(ctx, &function, input),
            // A script with only `batch`: a call is a batch of one.
            Exports {
                batch: Some(batch), ..
            } => invoke_batch(ctx, &batch, vec![input])
                .pop()
                .unwrap_or_else(|| Err(Error::Guest("the batch returned no row".to_string()))),
            Exports {
                columns: Some(_), ..
            } => Err(only_columns()),
            Exports { .. } => Err(no_function()),
        })
    }

    fn call_batch(source: String, inputs: Vec<Payload>) -> Vec<Result<Payload, Error>> {
        with_context(|ctx| match load(ctx, &source) {
            Ok(Exports {
                batch: Some(batch), ..
            }) => invoke_batch(ctx, &batch, inputs),
            Ok(Exports {
                function: Some(function),
                ..
            }) => inputs
                .into_iter()
                .map(|input| invoke(ctx, &function, input))
                .collect(),
            Ok(Exports {
                columns: Some(_), ..
            }) => inputs.iter().map(|_| Err(only_columns())).collect(),
            Ok(Exports { .. }) => inputs.iter().map(|_| Err(no_function())).collect(),
            Err(e) => inputs.iter().map(|_| Err(e.clone())).collect(),
        })
    }

    fn describe_columns(source: String) -> Result<Signature, Error> {
        with_context(|ctx| columnar::signature(&columns_of(ctx, &source)?))
    }

    fn call_columns(
        source: String,
        rows: u32,
        columns: Vec<ColumnData>,
    ) -> Result<Vec<ColumnData>, Error> {
        with_context(|ctx| {
            let declared = columns_of(ctx, &source)?;
            columnar::call(ctx, &declared, rows as usize, columns)
        })
    }

    fn run_program(source: String) -> i32 {
        PROGRAM.set(true);
        let engine = ENGINE.take().unwrap_or_else(Engine::start);
        // `process.exit` sets the status; the engine then stops the program with an
        // exception no `catch` can take.
        engine
            .runtime
            .set_interrupt_handler(Some(Box::new(|| EXIT.get().is_some())));
        engine
            .runtime
            .set_host_promise_rejection_tracker(Some(Box::new(track_rejection)));
        let status = engine.context.with(|ctx| program(&ctx, &source));
        let _ = std::io::stdout().flush();
        let _ = std::io::stderr().flush();
        ENGINE.set(Some(engine));
        status
    }
}

export!(ScriptRuntime);

/// A QuickJS runtime and its one context, with the host globals installed.
struct Engine {
    // Field order matters: the context is dropped before its runtime.
    context: Context,
    runtime: Runtime,
}

impl Engine {
    fn start() -> Engine {
        // No QuickJS stack limit: its check cannot see the WebAssembly stack, so
        // recursion too deep for the instance ends as the host's stack-overflow trap.
        let runtime = Runtime::new().expect("QuickJS allocates its runtime");
        let context = Context::full(&runtime).expect("QuickJS allocates its context");
        context
            .with(|ctx| install_globals(&ctx))
            .expect("QuickJS defines the host globals");
        Engine { context, runtime }
    }
}

thread_local! {
    /// The engine: started by `wizer-initialize` before the host's snapshot, so an
    /// instance normally begins with it in memory; started on first use otherwise.
    static ENGINE: RefCell<Option<Engine>> = const { RefCell::new(None) };

    /// `Math.random`'s state, seeded from the host on first use in each instance
    /// (a seed in the snapshot would repeat in every call).
    static RANDOM: Cell<u64> = const { Cell::new(0) };

    /// Whether this instance runs a program (`run-program`) rather than a function.
    static PROGRAM: Cell<bool> = const { Cell::new(false) };

    /// The status `process.exit` asked for.
    static EXIT: Cell<Option<i32>> = const { Cell::new(None) };

    /// Rejected promises nothing has handled (yet), with their reasons.
    static UNHANDLED: RefCell<Vec<(Persistent<Value<'static>>, Persistent<Value<'static>>)>> =
        const { RefCell::new(Vec::new()) };
}

/// Runs `work` in the instance's QuickJS context.
fn with_context<R>(work: impl for<'js> FnOnce(&Ctx<'js>) -> R) -> R {
    let engine = ENGINE.take().unwrap_or_else(Engine::start);
    let result = engine.context.with(|ctx| work(&ctx));
    ENGINE.set(Some(engine));
    result
}

/// `Math.random`: xorshift64* over a seed drawn from the host's random source.
fn random() -> f64 {
    let mut state = RANDOM.get();
    if state == 0 {
        state = wasi::random::random::get_random_u64() | 1;
    }
    state ^= state >> 12;
    state ^= state << 25;
    state ^= state >> 27;
    RANDOM.set(state);
    // The top 53 bits of the scrambled state, as a fraction in [0, 1).
    (state.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
}

fn install_globals<'js>(ctx: &Ctx<'js>) -> rquickjs::Result<()> {
    let globals = ctx.globals();
    let burncache = Object::new(ctx.clone())?;
    burncache.set("execute", Function::new(ctx.clone(), execute)?)?;
    globals.set("burncache", burncache)?;
    let console = Object::new(ctx.clone())?;
    let out = Function::new(ctx.clone(), console_out)?;
    for name in ["log", "info", "debug"] {
        console.set(name, out.clone())?;
    }
    let err = Function::new(ctx.clone(), console_err)?;
    for name in ["warn", "error"] {
        console.set(name, err.clone())?;
    }
    globals.set("console", console)?;
    let math: Object = globals.get("Math")?;
    math.set("random", Function::new(ctx.clone(), random)?)?;
    Ok(())
}

/// `console.log`, `info` and `debug`: one line to stdout in a program; in a function,
/// to stderr, which the host keeps the start of to explain a failed call.
fn console_out<'js>(
    ctx: Ctx<'js>,
    args: rquickjs::function::Rest<Value<'js>>,
) -> rquickjs::Result<()> {
    exiting(&ctx)?;
    let line = joined(&ctx, &args.0);
    if PROGRAM.get() {
        // Line-buffered: the newline flushes it.
        println!("{line}");
    } else {
        eprintln!("{line}");
    }
    Ok(())
}

/// `console.warn` and `error`: one line to stderr.
fn console_err<'js>(
    ctx: Ctx<'js>,
    args: rquickjs::function::Rest<Value<'js>>,
) -> rquickjs::Result<()> {
    exiting(&ctx)?;
    eprintln!("{}", joined(&ctx, &args.0));
    Ok(())
}

fn joined<'js>(ctx: &Ctx<'js>, values: &[Value<'js>]) -> String {
    let words: Vec<String> = values.iter().map(|v| display(ctx, v)).collect();
    words.join(" ")
}

/// Keeps track of rejected promises nothing handles: a rejection is noted, and
/// forgotten when a handler is attached later. No script code runs here (the reasons
/// are formatted once the program is over).
fn track_rejection<'js>(ctx: Ctx<'js>, promise: Value<'js>, reason: Value<'js>, handled: bool) {
    UNHANDLED.with(|cell| {
        let Ok(mut unhandled) = cell.try_borrow_mut() else {
            return;
        };
        if handled {
            unhandled.retain(|(noted, _)| {
                noted
                    .clone()
                    .restore(&ctx)
                    .map_or(true, |noted| noted != promise)
            });
        } else {
            unhandled.push((
                Persistent::save(&ctx, promise),
                Persistent::save(&ctx, reason),
            ));
        }
    });
}

/// A program: its top level (a classic script, or an ES module; both may use
/// top-level `await`), then the jobs its promises queued, to the end or to
/// `process.exit`. Returns its exit status.
fn program<'js>(ctx: &Ctx<'js>, source: &str) -> i32 {
    if let Err(e) = install_process(ctx) {
        eprintln!("burncache: cannot set up `process`: {e}");
        return 70;
    }
    let is_module = looks_like_module(source);
    let started: Result<(Promise<'js>, Option<Object<'js>>), CaughtError<'js>> = if is_module {
        Module::declare(ctx.clone(), SCRIPT_NAME, source)
            .and_then(|declared| declared.eval())
            .map(|(module, promise)| (promise, Some(module.namespace().ok()).flatten()))
            .catch(ctx)
    } else {
        let mut options = EvalOptions::default();
        options.global = true;
        options.promise = true;
        options.filename = Some(SCRIPT_NAME.to_string());
        ctx.eval_with_options::<Promise, _>(source, options)
            .map(|promise| (promise, None))
            .catch(ctx)
    };
    if let Some(status) = EXIT.get() {
        return status;
    }
    let (top_level, module) = match started {
        Ok(started) => started,
        Err(e) => {
            eprintln!("Uncaught {}", thrown(ctx, e));
            return 1;
        }
    };
    // The jobs, one at a time, stopping as soon as the program asked to exit.
    while ctx.execute_pending_job() {
        if EXIT.get().is_some() {
            break;
        }
    }
    if let Some(status) = EXIT.get() {
        return status;
    }
    match top_level.state() {
        PromiseState::Rejected => {
            let reason = match top_level.result::<Value>() {
                Some(Err(e)) => thrown(ctx, CaughtError::from_error(ctx, e)),
                _ => String::new(),
            };
            // The top level's own rejection is reported as uncaught, not twice.
            forget_rejection(ctx, top_level.as_value());
            eprintln!("Uncaught {reason}");
            return 1;
        }
        PromiseState::Pending => {
            eprintln!("burncache: the program's top-level await never settled");
            return 1;
        }
        PromiseState::Resolved => {}
    }
    let unhandled = UNHANDLED.take();
    if let Some((_, reason)) = unhandled.into_iter().next() {
        let reason = reason
            .restore(ctx)
            .map(|reason| display(ctx, &reason))
            .unwrap_or_default();
        eprintln!("Uncaught (in promise) {reason}");
        return 1;
    }
    if exports_a_function(ctx, module.as_ref()) {
        eprintln!(
            "burncache: this script exports a function, which a program run does not \
             call; its top level ran. To call the function: burncache call SCRIPT --input ..."
        );
    }
    exit_code(ctx).unwrap_or(0)
}

/// Drops `promise` from the unhandled rejections.
fn forget_rejection<'js>(ctx: &Ctx<'js>, promise: &Value<'js>) {
    UNHANDLED.with_borrow_mut(|unhandled| {
        unhandled.retain(|(noted, _)| {
            noted
                .clone()
                .restore(ctx)
                .map_or(true, |noted| noted != *promise)
        });
    });
}

/// Whether the script exports a function (`module.exports` or a default export), as
/// one written to be called rather than run would.
fn exports_a_function<'js>(ctx: &Ctx<'js>, module: Option<&Object<'js>>) -> bool {
    let exported: Option<Value> = match module {
        Some(namespace) => namespace.get("default").ok(),
        None => ctx
            .globals()
            .get::<_, Object>("module")
            .and_then(|m| m.get("exports"))
            .ok(),
    };
    exported.is_some_and(|v| v.is_function())
}

/// Throws the program's exit again when it has asked to exit: a `catch` or promise
/// executor that swallowed `process.exit` gets no further output out of it.
fn exiting(ctx: &Ctx<'_>) -> rquickjs::Result<()> {
    if EXIT.get().is_some() {
        return Err(uncatchable(ctx, "process.exit"));
    }
    Ok(())
}

/// Throws an error QuickJS lets no `catch` take.
fn uncatchable(ctx: &Ctx<'_>, message: &str) -> rquickjs::Error {
    match Exception::from_message(ctx.clone(), message) {
        Ok(exception) => {
            // SAFETY: both pointers come from live rquickjs handles of this context;
            // the call only sets a flag on the error object, whose reference stays
            // with `exception` and moves into the throw.
            unsafe {
                rquickjs::qjs::JS_SetUncatchableError(ctx.as_raw().as_ptr(), exception.as_raw());
            }
            ctx.throw(exception.into_value())
        }
        Err(e) => e,
    }
}

/// `process.exitCode`, when the program set it to a number.
fn exit_code(ctx: &Ctx<'_>) -> Option<i32> {
    let process: Object = ctx.globals().get("process").ok()?;
    process.get::<_, Option<i32>>("exitCode").ok().flatten()
}

/// The `process` a program sees: `argv` (`burncache`, then the host's arguments:
/// the script's name and what follows `--`), `env` (only what the host granted),
/// `exit`, `exitCode`, and `stdout`/`stderr` with `write`.
fn install_process<'js>(ctx: &Ctx<'js>) -> rquickjs::Result<()> {
    let process = Object::new(ctx.clone())?;
    let argv = Array::new(ctx.clone())?;
    argv.set(0, "burncache")?;
    for (i, arg) in std::env::args().enumerate() {
        argv.set(i + 1, arg)?;
    }
    process.set("argv", argv)?;
    let env = Object::new(ctx.clone())?;
    for (name, value) in std::env::vars() {
        env.set(name, value)?;
    }
    process.set("env", env)?;
    process.set("exit", Function::new(ctx.clone(), exit)?)?;
    let stdout = Object::new(ctx.clone())?;
    stdout.set("write", Function::new(ctx.clone(), write_stdout)?)?;
    process.set("stdout", stdout)?;
    let stderr = Object::new(ctx.clone())?;
    stderr.set("write", Function::new(ctx.clone(), write_stderr)?)?;
    process.set("stderr", stderr)?;
    ctx.globals().set("process", process)?;
    // A CommonJS script's `module.exports = ...` works in a program too.
    let module = Object::new(ctx.clone())?;
    let exports = Object::new(ctx.clone())?;
    module.set("exports", exports.clone())?;
    ctx.globals().set("module", module)?;
    ctx.globals().set("exports", exports)
}

/// `process.exit(code)`: ends the program with `code` (a number, or a string of
/// one; `undefined` or `null`: `process.exitCode`, else 0), whatever `catch` blocks
/// lie between.
fn exit<'js>(ctx: Ctx<'js>, code: Opt<Value<'js>>) -> rquickjs::Result<()> {
    let given = code.0.filter(|v| !v.is_undefined() && !v.is_null());
    let status = match given {
        None => exit_code(&ctx).unwrap_or(0),
        Some(value) => match status_of(&value) {
            Some(status) => status,
            None => {
                return Err(Exception::throw_type(
                    &ctx,
                    "process.exit: the code must be an integer",
                ));
            }
        },
    };
    EXIT.set(Some(status));
    Err(uncatchable(&ctx, "process.exit"))
}

/// An exit status given as a number or a string of one.
fn status_of(value: &Value<'_>) -> Option<i32> {
    if let Some(n) = value.as_int() {
        return Some(n);
    }
    if let Some(n) = value.as_float() {
        return (n.fract() == 0.0 && n.abs() <= f64::from(i32::MAX)).then_some(n as i32);
    }
    value
        .as_string()
        .and_then(|s| s.to_string().ok())
        .and_then(|s| s.trim().parse().ok())
}

/// `process.stdout.write`: the text as it is, flushed at once (so that it is neither
/// lost to a trap nor overtaken by stderr).
fn write_stdout<'js>(ctx: Ctx<'js>, value: Value<'js>) -> rquickjs::Result<bool> {
    exiting(&ctx)?;
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(display(&ctx, &value).as_bytes());
    let _ = out.flush();
    Ok(true)
}

fn write_stderr<'js>(ctx: Ctx<'js>, value: Value<'js>) -> rquickjs::Result<bool> {
    exiting(&ctx)?;
    let mut err = std::io::stderr().lock();
    let _ = err.write_all(display(&ctx, &value).as_bytes());
    Ok(true)
}

/// An uncaught exception as a program's stderr shows it.
fn thrown<'js>(ctx: &Ctx<'js>, e: CaughtError<'js>) -> String {
    match e {
        CaughtError::Exception(exception) => {
            let name: String = exception
                .get("name")
                .unwrap_or_else(|_| "Error".to_string());
            let message = exception.message().unwrap_or_default();
            let stack = exception.stack().unwrap_or_default();
            format!("{name}: {message}\n{}", stack.trim_end())
        }
        CaughtError::Value(value) => display(ctx, &value),
        CaughtError::Error(e) => e.to_string(),
    }
}

/// `burncache.execute(digest, value, limits?)`: calls the function component or
/// script `digest` through the host, with the host's budget accounting. Throws an
/// `Error` whose `kind` names the failure.
fn execute<'js>(
    ctx: Ctx<'js>,
    digest: String,
    value: Value<'js>,
    limits: Opt<Object<'js>>,
) -> rquickjs::Result<Value<'js>> {
    exiting(&ctx)?;
    let input = to_payload(&ctx, &value).map_err(|e| throw(&ctx, &e, "burncache.execute"))?;
    let limits = match limits.0 {
        Some(object) => Some(Limits {
            fuel: object.get("fuel")?,
            memory_bytes: object.get("memoryBytes")?,
            timeout_ms: object.get("timeoutMs")?,
            output_bytes: object.get("outputBytes")?,
        }),
        None => None,
    };
    match burn_cache::execute(&digest, &input, limits) {
        Ok(output) => from_payload(&ctx, output),
        Err(e) => Err(throw(&ctx, &e, &format!("burncache.execute({digest})"))),
    }
}

/// Throws a JS `Error` for a host error, with the error's kind as `kind`.
fn throw(ctx: &Ctx<'_>, e: &Error, what: &str) -> rquickjs::Error {
    let (kind, detail) = describe(e);
    let message = match detail {
        Some(detail) => format!("{what}: {kind}: {detail}"),
        None => format!("{what}: {kind}"),
    };
    match Exception::from_message(ctx.clone(), &message) {
        Ok(exception) => {
            let _ = exception.set("kind", kind);
            ctx.throw(exception.into_value())
        }
        Err(e) => e,
    }
}

fn describe(e: &Error) -> (&'static str, Option<String>) {
    match e {
        Error::NotFound(d) => ("not-found", Some(d.clone())),
        Error::InvalidDigest(d) => ("invalid-digest", Some(d.clone())),
        Error::CompileFailed(m) => ("compile-failed", Some(m.clone())),
        Error::FuelExhausted => ("fuel-exhausted", None),
        Error::MemoryLimit => ("memory-limit", None),
        Error::Timeout => ("timeout", None),
        Error::OutputTooLarge(n) => ("output-too-large", Some(format!("{n} bytes"))),
        Error::Trap(m) => ("trap", Some(m.clone())),
        Error::Guest(m) => ("guest", Some(m.clone())),
        Error::InvalidInput(m) => ("invalid-input", Some(m.clone())),
        Error::PermissionDenied(m) => ("permission-denied", Some(m.clone())),
        Error::DepthExceeded(n) => ("depth-exceeded", Some(n.to_string())),
        Error::Backend(m) => ("backend", Some(m.clone())),
        Error::Integrity(m) => ("integrity", Some(m.clone())),
    }
}

/// What a script exports: its function, its whole-batch function, its columnar
/// function, or some of them.
struct Exports<'js> {
    function: Option<Function<'js>>,
    batch: Option<Function<'js>>,
    /// The `columns` object: `inputs`, `outputs` and `call`.
    columns: Option<Object<'js>>,
}

/// The script's `columns` export, or why it has none.
fn columns_of<'js>(ctx: &Ctx<'js>, source: &str) -> Result<Object<'js>, Error> {
    load(ctx, source)?.columns.ok_or_else(|| {
        Error::InvalidInput(
            "the script exports no `columns` (`export const columns = { inputs, outputs, \
             call }`), so it cannot be called with columns"
                .to_string(),
        )
    })
}

fn only_columns() -> Error {
    Error::InvalidInput(
        "the script exports only `columns`: call it with columns (`execute-columns`, \
         `burncache map`)"
            .to_string(),
    )
}

fn no_function() -> Error {
    Error::CompileFailed(
        "the script must export one function (`module.exports = (input) => ...` or \
         `export default function (input) { ... }`), or `batch`"
            .to_string(),
    )
}

/// Evaluates the script and finds its function.
///
/// A script is tried as a classic script (where `module.exports` lives) and as an ES
/// module (where `export default` lives); the text says which to try first. When
/// neither parses, the syntax error reported is the one that got further into the
/// text, which is the one from the form the author meant.
fn load<'js>(ctx: &Ctx<'js>, source: &str) -> Result<Exports<'js>, Error> {
    let module_first = looks_like_module(source);
    let first = if module_first {
        load_module(ctx, source)
    } else {
        load_script(ctx, source)
    };
    let first_error = match first {
        Ok(function) => return Ok(function),
        Err(Load::Failed(e)) => return Err(e),
        Err(Load::Syntax(e)) => e,
    };
    let second = if module_first {
        load_script(ctx, source)
    } else {
        load_module(ctx, source)
    };
    match second {
        Ok(function) => Ok(function),
        Err(Load::Failed(e)) => Err(e),
        Err(Load::Syntax(second_error)) => {
            let furthest = if second_error.position > first_error.position {
                second_error
            } else {
                first_error
            };
            Err(Error::CompileFailed(furthest.message))
        }
    }
}

/// Whether an `import` or `export` statement seems to start a line.
fn looks_like_module(source: &str) -> bool {
    source.lines().any(|line| {
        let line = line.trim_start();
        line.starts_with("export ") || line.starts_with("export{") || line.starts_with("import ")
    })
}

enum Load {
    /// The text does not parse in this form.
    Syntax(SyntaxError),
    /// It parsed, but running it failed or it exports no function.
    Failed(Error),
}

struct SyntaxError {
    message: String,
    /// (line, column), for choosing between the two forms' errors.
    position: (u32, u32),
}

fn load_script<'js>(ctx: &Ctx<'js>, source: &str) -> Result<Exports<'js>, Load> {
    let globals = ctx.globals();
    let setup = (|| -> rquickjs::Result<Object<'js>> {
        let module = Object::new(ctx.clone())?;
        let exports = Object::new(ctx.clone())?;
        module.set("exports", exports.clone())?;
        globals.set("module", module.clone())?;
        globals.set("exports", exports)?;
        Ok(module)
    })();
    let module = setup.map_err(|e| Load::Failed(internal(e)))?;
    let mut options = EvalOptions::default();
    options.global = true;
    options.filename = Some(SCRIPT_NAME.to_string());
    ctx.eval_with_options::<(), _>(source, options)
        .catch(ctx)
        .map_err(|e| evaluation_error(ctx, e))?;
    let exported: Value = module
        .get("exports")
        .map_err(|e| Load::Failed(internal(e)))?;
    // `module.exports.batch` / `exports.batch`, beside the function or on its own.
    let batch = exported
        .as_object()
        .and_then(|o| o.get::<_, Function>("batch").ok());
    let columns = exported
        .as_object()
        .and_then(|o| o.get::<_, Object>("columns").ok());
    let function = exported_function(exported, "module.exports");
    exports(function, batch, columns).map_err(Load::Failed)
}

/// The exports found, or the reason there are none.
fn exports<'js>(
    function: Result<Function<'js>, Error>,
    batch: Option<Function<'js>>,
    columns: Option<Object<'js>>,
) -> Result<Exports<'js>, Error> {
    match (function, batch, columns) {
        (Ok(function), batch, columns) => Ok(Exports {
            function: Some(function),
            batch,
            columns,
        }),
        (Err(e), None, None) => Err(e),
        (Err(_), batch, columns) => Ok(Exports {
            function: None,
            batch,
            columns,
        }),
    }
}

fn load_module<'js>(ctx: &Ctx<'js>, source: &str) -> Result<Exports<'js>, Load> {
    let declared = Module::declare(ctx.clone(), SCRIPT_NAME, source)
        .catch(ctx)
        .map_err(|e| evaluation_error(ctx, e))?;
    let (module, promise) = declared
        .eval()
        .catch(ctx)
        .map_err(|e| evaluation_error(ctx, e))?;
    promise
        .finish::<()>()
        .catch(ctx)
        .map_err(|e| Load::Failed(exception(ctx, e, "evaluating the script")))?;
    let exported: Value = module
        .get("default")
        .map_err(|e| Load::Failed(internal(e)))?;
    let batch = module.get::<_, Function>("batch").ok();
    let columns = module.get::<_, Object>("columns").ok();
    exports(
        exported_function(exported, "export default"),
        batch,
        columns,
    )
    .map_err(Load::Failed)
}

fn exported_function<'js>(exported: Value<'js>, form: &str) -> Result<Function<'js>, Error> {
    if let Some(function) = exported.as_function() {
        return Ok(function.clone());
    }
    // `module.exports = { default: fn }`, as bundlers emit for a default export.
    if let Some(object) = exported.as_object()
        && let Ok(function) = object.get::<_, Function>("default")
    {
        return Ok(function);
    }
    Err(Error::CompileFailed(format!(
        "the script must export one function (`module.exports = (input) => ...` or \
         `export default function (input) {{ ... }}`), or `batch`, but {form} is {}",
        exported.type_name()
    )))
}

/// A failure while parsing or running a script's top level: a syntax error is a
/// `Load::Syntax` (with its position); anything else failed the script for good.
fn evaluation_error<'js>(ctx: &Ctx<'js>, e: CaughtError<'js>) -> Load {
    if let CaughtError::Exception(exception) = &e
        && exception.get::<_, String>("name").ok().as_deref() == Some("SyntaxError")
    {
        let message = exception.message().unwrap_or_default();
        let stack = exception.stack().unwrap_or_default();
        let position = position_in(&stack).unwrap_or((0, 0));
        let message = if position == (0, 0) {
            format!("SyntaxError: {message}")
        } else {
            format!(
                "SyntaxError: {message} at line {}, column {}",
                position.0, position.1
            )
        };
        return Load::Syntax(SyntaxError { message, position });
    }
    Load::Failed(exception(ctx, e, "evaluating the script"))
}

/// The first `script.js:LINE:COLUMN` in a stack trace.
fn position_in(stack: &str) -> Option<(u32, u32)> {
    let at = stack.find(SCRIPT_NAME)? + SCRIPT_NAME.len();
    let mut parts = stack[at..].strip_prefix(':')?.splitn(2, ':');
    let line = parts.next()?.parse().ok()?;
    let column: String = parts
        .next()?
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    Some((line, column.parse().ok()?))
}

/// Calls the script's function on one input.
fn invoke<'js>(ctx: &Ctx<'js>, function: &Function<'js>, input: Payload) -> Result<Payload, Error> {
    let input = from_payload(ctx, input).map_err(internal)?;
    let returned = call_awaited(ctx, function, input)?;
    to_payload(ctx, &returned)
}

/// Calls a script's function on one argument and, when it returns a promise,
/// waits for it; a throw or a rejection is the script's error.
fn call_awaited<'js>(
    ctx: &Ctx<'js>,
    function: &Function<'js>,
    argument: Value<'js>,
) -> Result<Value<'js>, Error> {
    let returned: Value = function
        .call((argument,))
        .catch(ctx)
        .map_err(|e| exception(ctx, e, "the script threw"))?;
    match returned.as_promise() {
        Some(promise) => promise
            .finish::<Value>()
            .catch(ctx)
            .map_err(|e| exception(ctx, e, "the script's promise was rejected")),
        None => Ok(returned),
    }
}

/// Calls a whole-batch function once with every input, and checks what comes back:
/// an array (or a promise of one) of as many rows, each a value. A failure of the
/// whole (a throw, not an array, a wrong length) fails every row; a row that is an
/// `Error`, or no value, fails that row, named.
fn invoke_batch<'js>(
    ctx: &Ctx<'js>,
    batch: &Function<'js>,
    inputs: Vec<Payload>,
) -> Vec<Result<Payload, Error>> {
    let n = inputs.len();
    // A failure of the whole: its full text on the first row, a pointer to it on the
    // others (so that n copies of a long message cost nothing).
    let all = |e: Error| {
        (0..n)
            .map(|i| match (&e, i) {
                (_, 0) => Err(e.clone()),
                (Error::Guest(_), _) => Err(Error::Guest(
                    "the batch failed as a whole; see the first row".to_string(),
                )),
                _ => Err(e.clone()),
            })
            .collect::<Vec<_>>()
    };
    let rows = (|| -> rquickjs::Result<Array<'js>> {
        let rows = Array::new(ctx.clone())?;
        for (i, input) in inputs.into_iter().enumerate() {
            rows.set(i, from_payload(ctx, input)?)?;
        }
        Ok(rows)
    })();
    let rows = match rows {
        Ok(rows) => rows,
        Err(e) => return all(internal(e)),
    };
    let returned: Value = match batch.call((rows,)).catch(ctx) {
        Ok(returned) => returned,
        Err(e) => return all(exception(ctx, e, "the batch function threw")),
    };
    let returned = match returned.as_promise() {
        Some(promise) => match promise.finish::<Value>().catch(ctx) {
            Ok(value) => value,
            Err(e) => {
                return all(exception(
                    ctx,
                    e,
                    "the batch function's promise was rejected",
                ));
            }
        },
        None => returned,
    };
    let Some(outputs) = returned.as_array() else {
        return all(Error::Guest(format!(
            "the batch function must return an array of {n} rows; it returned {}",
            returned.type_name()
        )));
    };
    // `length` read as it is (a number however large), not as a checked index.
    let length: f64 = match outputs.as_object().get("length") {
        Ok(length) => length,
        Err(e) => return all(internal(e)),
    };
    if length != n as f64 {
        return all(Error::Guest(format!(
            "the batch function returned {length} rows for {n} inputs"
        )));
    }
    (0..n)
        .map(|i| {
            let row: Value = outputs
                .get(i)
                .catch(ctx)
                .map_err(|e| exception(ctx, e, &format!("row {i} of the batch's result")))?;
            if let Some(error) = row.as_exception() {
                return Err(Error::Guest(format!(
                    "row {i}: {}",
                    error.message().unwrap_or_default()
                )));
            }
            if row.is_undefined() || row.is_function() || row.is_symbol() {
                return Err(Error::Guest(format!(
                    "row {i} of the batch's result is {}, not a value",
                    row.type_name()
                )));
            }
            to_payload(ctx, &row).map_err(|e| match e {
                Error::Guest(m) => Error::Guest(format!("row {i}: {m}")),
                other => other,
            })
        })
        .collect()
}

fn from_payload<'js>(ctx: &Ctx<'js>, payload: Payload) -> rquickjs::Result<Value<'js>> {
    match payload {
        Payload::Json(text) => ctx.json_parse(text),
        Payload::Bytes(bytes) => Ok(TypedArray::<u8>::new(ctx.clone(), bytes)?.into_value()),
    }
}

fn to_payload<'js>(ctx: &Ctx<'js>, value: &Value<'js>) -> Result<Payload, Error> {
    // SAFETY (both): the bytes are copied out before any JavaScript runs again, so
    // nothing can detach or resize the buffer while the slice is alive.
    if let Some(bytes) = value.as_object().and_then(|o| o.as_typed_array::<u8>())
        && let Some(raw) = unsafe { bytes.as_bytes() }
    {
        return Ok(Payload::Bytes(raw.to_vec()));
    }
    if let Some(buffer) = value
        .as_object()
        .and_then(|o| ArrayBuffer::from_object(o.clone()))
        && let Some(raw) = unsafe { buffer.as_bytes() }
    {
        return Ok(Payload::Bytes(raw.to_vec()));
    }
    let text = ctx
        .json_stringify(value.clone())
        .catch(ctx)
        .map_err(|e| exception(ctx, e, "the result is not JSON"))?;
    Ok(Payload::Json(match text {
        Some(text) => text.to_string().map_err(internal)?,
        None => "null".to_string(),
    }))
}

/// A thrown value as a `guest` error: an `Error`'s name, message and stack, or the
/// thrown value itself.
fn exception<'js>(ctx: &Ctx<'js>, e: CaughtError<'js>, what: &str) -> Error {
    match e {
        CaughtError::Exception(exception) => {
            if let Ok(kind) = exception.get::<_, String>("kind")
                && kind == "memory-limit"
            {
                return Error::MemoryLimit;
            }
            let name: String = exception
                .get("name")
                .unwrap_or_else(|_| "Error".to_string());
            let message = exception.message().unwrap_or_default();
            let stack = exception.stack().unwrap_or_default();
            let stack = stack.trim_end();
            if stack.is_empty() {
                Error::Guest(format!("{what}: {name}: {message}"))
            } else {
                Error::Guest(format!("{what}: {name}: {message}\n{stack}"))
            }
        }
        CaughtError::Value(value) => Error::Guest(format!("{what}: {}", display(ctx, &value))),
        CaughtError::Error(rquickjs::Error::WouldBlock) => {
            Error::Guest(format!("{what}: a promise that never settles"))
        }
        CaughtError::Error(e) => internal(e),
    }
}

/// How a value reads in a log line or an error: strings as they are, other values as
/// JSON where they have one.
fn display<'js>(ctx: &Ctx<'js>, value: &Value<'js>) -> String {
    if let Some(text) = value.as_string() {
        return text.to_string().unwrap_or_default();
    }
    if let Some(exception) = value.as_exception() {
        return format!(
            "{}\n{}",
            exception.message().unwrap_or_default(),
            exception.stack().unwrap_or_default()
        );
    }
    match ctx.json_stringify(value.clone()) {
        Ok(Some(text)) => text.to_string().unwrap_or_default(),
        _ => value.type_name().to_string(),
    }
}

/// A failure of the engine itself (out of memory, most likely). The host reports a
/// call whose memory growth it refused as `memory-limit`, whatever this says.
fn internal(e: rquickjs::Error) -> Error {
    Error::Trap(format!("the JavaScript engine failed: {e}"))
}
