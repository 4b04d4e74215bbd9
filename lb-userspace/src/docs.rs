//! Shell completions and man pages from a binary's clap definition (`--write-docs DIR`,
//! run by `cargo xtask build`).

use std::{io, path::Path};

use clap_complete::Shell;

/// Write `NAME.1` and the bash, zsh and fish completions of `command` into `dir`.
pub fn write(command: clap::Command, dir: &Path) -> io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let name = command.get_name().to_owned();
    let mut page = Vec::new();
    clap_mangen::Man::new(command.clone()).render(&mut page)?;
    std::fs::write(dir.join(format!("{name}.1")), page)?;
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        clap_complete::generate_to(shell, &mut command.clone(), &name, dir)?;
    }
    Ok(())
}
