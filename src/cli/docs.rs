//! `secured completions` and `secured man`: shell completions and manual
//! pages, generated from the same clap definitions as `--help`.

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::{Args, CommandFactory};

use super::{Cli, CliError};

/// Options of `secured completions`.
#[derive(Debug, Args)]
#[command(after_help = COMPLETIONS_EXAMPLES)]
pub(super) struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum, value_name = "SHELL")]
    shell: clap_complete::Shell,
}

const COMPLETIONS_EXAMPLES: &str = "\
Examples:
  secured completions bash > /etc/bash_completion.d/secured
  secured completions zsh > ~/.zfunc/_secured
  secured completions fish > ~/.config/fish/completions/secured.fish";

/// Options of `secured man`.
#[derive(Debug, Args)]
#[command(after_help = MAN_EXAMPLES)]
pub(super) struct ManArgs {
    /// Write one page per command (secured.1, secured-serve.1, …) into this
    /// folder instead of printing the main page [default: print to standard output].
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
}

const MAN_EXAMPLES: &str = "\
Examples:
  secured man | man -l -                           # read it now
  secured man --dir /usr/local/share/man/man1      # install every page";

/// Prints the completion script for `args.shell`.
pub(super) fn completions(args: &CompletionsArgs) -> Result<(), CliError> {
    let mut out = Vec::new();
    clap_complete::generate(args.shell, &mut Cli::command(), "secured", &mut out);
    write_stdout(&out)
}

/// Prints the main manual page, or writes every page into `args.dir`.
pub(super) fn man(args: &ManArgs) -> Result<(), CliError> {
    let mut command = Cli::command().disable_help_subcommand(true);
    // Gives subcommands their full names (`secured-serve`) for the pages.
    command.build();
    match &args.dir {
        None => write_stdout(&page(&command)?),
        Some(dir) => {
            let mut written = Vec::new();
            write_pages(&command, dir, &mut written)
                .map_err(|e| CliError::Other(format!("cannot write to {}: {e}", dir.display())))?;
            for path in written {
                println!("wrote {}", path.display());
            }
            Ok(())
        }
    }
}

/// The roff source of one command's page. clap_mangen starts with the
/// definition of the apostrophe string it uses in the text; the title line
/// goes first, as a manual page begins (the title has no apostrophe).
fn page(command: &clap::Command) -> Result<Vec<u8>, CliError> {
    let mut roff = Vec::new();
    clap_mangen::Man::new(command.clone())
        .render(&mut roff)
        .map_err(|e| CliError::Other(format!("cannot render the manual page: {e}")))?;
    let text = String::from_utf8_lossy(&roff);
    let mut title = None;
    let mut rest = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        if title.is_none() && line.starts_with(".TH ") {
            title = Some(line.to_owned());
        } else {
            rest.push_str(line);
        }
    }
    Ok(format!("{}{rest}", title.unwrap_or_default()).into_bytes())
}

/// Writes the page of `command` and of each visible subcommand into `dir`.
fn write_pages(
    command: &clap::Command,
    dir: &Path,
    written: &mut Vec<PathBuf>,
) -> std::io::Result<()> {
    for sub in command.get_subcommands().filter(|s| !s.is_hide_set()) {
        write_pages(sub, dir, written)?;
    }
    let name = clap_mangen::Man::new(command.clone()).get_filename();
    let path = dir.join(name);
    let bytes = page(command).map_err(|e| std::io::Error::other(e.to_string()))?;
    std::fs::write(&path, bytes)?;
    written.push(path);
    Ok(())
}

fn write_stdout(bytes: &[u8]) -> Result<(), CliError> {
    let mut out = std::io::stdout().lock();
    out.write_all(bytes)
        .and_then(|()| out.flush())
        .map_err(|e| CliError::Other(format!("cannot write to standard output: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_starts_with_its_title_and_keeps_the_rest() {
        let command = Cli::command();
        let roff = String::from_utf8(page(&command).unwrap()).unwrap();
        assert!(roff.starts_with(".TH secured 1 "), "{roff}");
        assert_eq!(roff.matches(".TH ").count(), 1);
        // The apostrophe definitions are still there, after the title.
        assert!(roff.contains(".ds Aq"), "{roff}");
        assert!(
            roff.contains("send-text") || roff.contains("device"),
            "{roff}"
        );
    }
}
