//! Shell completions and man pages, generated from the clap command tree so they cannot drift
//! from the CLI. Neither needs configuration or a database.

use super::CliError;
use super::args::Cli;
use clap::CommandFactory;
use std::path::Path;

/// The name completions and man pages are written for: the installed binary.
const BIN: &str = "parallax-mcp";

/// The completion script for `shell`, to be sourced by it.
pub fn completions(shell: clap_complete::Shell) -> String {
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), BIN, &mut out);
    // The generators only write UTF-8 built from our own help text.
    let script = String::from_utf8_lossy(&out).into_owned();
    if shell == clap_complete::Shell::Bash {
        // clap_complete 4.6 spells the state of a hyphenated binary's subcommands one way where
        // bash tracks it and another in the case labels, so nothing completed past the first
        // word (clap issue 6421). Spell the labels as tracked; a no-op once that is fixed.
        return script.replace("parallax__subcmd__mcp", "parallax__mcp");
    }
    script
}

/// Every man page: `parallax-mcp.1` and one `parallax-mcp-<command>[-<subcommand>].1` per
/// command at any depth, as (file name, roff text), parents before their children.
pub fn man_pages() -> Result<Vec<(String, Vec<u8>)>, std::io::Error> {
    fn walk(cmd: clap::Command, pages: &mut Vec<(String, Vec<u8>)>) -> std::io::Result<()> {
        let children: Vec<clap::Command> = cmd
            .get_subcommands()
            .filter(|s| !s.is_hide_set())
            .cloned()
            .collect();
        let man = clap_mangen::Man::new(cmd);
        let mut text = Vec::new();
        man.render(&mut text)?;
        pages.push((man.get_filename(), text));
        for child in children {
            walk(child, pages)?;
        }
        Ok(())
    }
    // `help` is a clap built-in, not a command of ours; building names each page after its path.
    let mut root = Cli::command().disable_help_subcommand(true);
    root.build();
    let mut pages = Vec::new();
    walk(root, &mut pages)?;
    Ok(pages)
}

/// `man`: the top-level page on stdout, or every page written into `out` (created if missing),
/// listing the files written.
pub fn man(out: Option<&Path>) -> Result<String, CliError> {
    let pages = man_pages().map_err(CliError::Output)?;
    let Some(dir) = out else {
        let (_, top) = pages.into_iter().next().expect("the root page comes first");
        return Ok(String::from_utf8_lossy(&top).into_owned());
    };
    let cannot = |what: &Path, e: std::io::Error| {
        CliError::Usage(format!("cannot write man pages to {}: {e}", what.display()))
    };
    std::fs::create_dir_all(dir).map_err(|e| cannot(dir, e))?;
    let mut listing = String::new();
    for (name, text) in pages {
        let path = dir.join(name);
        std::fs::write(&path, text).map_err(|e| cannot(&path, e))?;
        listing.push_str(&format!("{}\n", path.display()));
    }
    Ok(listing)
}
