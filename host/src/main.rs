//! The `burncache` command: parse arguments, run the command, report the error chain
//! once, and exit with a code that tells the error's class.

mod commands;
mod telemetry;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = commands::Cli::parse();
    // Dropped after the runtime, outside it: that flushes the traces.
    let _telemetry = match telemetry::init(
        cli.log_format,
        cli.default_log_filter(),
        cli.otlp_endpoint.as_deref(),
    ) {
        Ok(telemetry) => telemetry,
        Err(e) => {
            eprintln!("error: invalid configuration: {e}");
            return ExitCode::from(commands::EXIT_CONFIG);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(commands::EXIT_OTHER);
        }
    };
    match runtime.block_on(cli.run()) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            if let Some(hint) = commands::hint(&err) {
                eprintln!("hint: {hint}");
            }
            ExitCode::from(commands::exit_code(&err))
        }
    }
}
