//! `burncache sql`: runs `burncache-sql`, the SQL front end the `burncache-datafusion`
//! crate builds, so that the query engine is installed only by those who want it.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Args;

/// Run a SQL query over data files with columnar components as functions.
///
/// Runs `burncache-sql` (install it with `cargo install burncache-datafusion`), found
/// beside this binary, then on the PATH; BURNCACHE_SQL names another. Every argument
/// goes to it; `burncache sql --help` shows its options.
///
/// Examples:
///   burncache sql "SELECT double(x) FROM 'data.parquet'" --udf double=double_columns.wasm
///   burncache sql "SELECT count(*) FROM 'events.csv' WHERE keep(tag)" --udf keep=3f1c...e9
#[derive(Args, Debug)]
#[command(disable_help_flag = true)]
pub struct SqlCommand {
    /// The query and options, as `burncache-sql` takes them.
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "ARGS"
    )]
    args: Vec<OsString>,
}

impl SqlCommand {
    pub fn run(self) -> anyhow::Result<ExitCode> {
        let program = sql_program();
        let status = std::process::Command::new(&program)
            .args(&self.args)
            .status()
            .with_context(|| {
                format!(
                    "cannot run {}: `burncache sql` needs burncache-sql (`cargo install \
                     burncache-datafusion`), beside burncache or on the PATH",
                    program.display()
                )
            })?;
        Ok(match status.code() {
            Some(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
            None => ExitCode::FAILURE,
        })
    }
}

/// `$BURNCACHE_SQL`; else `burncache-sql` beside this binary; else on the PATH.
fn sql_program() -> PathBuf {
    if let Some(program) = std::env::var_os("BURNCACHE_SQL") {
        return program.into();
    }
    let name = format!("burncache-sql{}", std::env::consts::EXE_SUFFIX);
    std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.join(&name)))
        .filter(|beside| beside.is_file())
        .unwrap_or_else(|| name.into())
}
