//! `burncache completion SHELL` and `burncache man`: shell completions and a man
//! page, generated from the same definitions as the command line itself.

use std::process::ExitCode;

use clap::{Args, CommandFactory};

/// Print shell completions for burncache.
///
/// Example:
///   burncache completion bash > /etc/bash_completion.d/burncache
///   burncache completion zsh > "${fpath[1]}/_burncache"
///   burncache completion fish > ~/.config/fish/completions/burncache.fish
#[derive(Args, Debug)]
pub struct CompletionCommand {
    /// The shell to complete for.
    #[arg(value_enum)]
    shell: clap_complete::Shell,
}

impl CompletionCommand {
    pub fn run(self) -> anyhow::Result<ExitCode> {
        let mut command = super::Cli::command();
        clap_complete::generate(
            self.shell,
            &mut command,
            "burncache",
            &mut std::io::stdout(),
        );
        Ok(ExitCode::SUCCESS)
    }
}

/// Print burncache's man page (roff).
///
/// Example:
///   burncache man > /usr/local/share/man/man1/burncache.1
#[derive(Args, Debug)]
pub struct ManCommand {}

impl ManCommand {
    pub fn run(self) -> anyhow::Result<ExitCode> {
        clap_mangen::Man::new(super::Cli::command()).render(&mut std::io::stdout())?;
        Ok(ExitCode::SUCCESS)
    }
}
