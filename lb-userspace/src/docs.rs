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

#[cfg(test)]
mod tests {
    #[test]
    fn man_page_and_completions_are_written() {
        let dir = std::env::temp_dir().join(format!("lb-docs-{}", std::process::id()));
        let command = clap::Command::new("demo")
            .about("A demo")
            .arg(clap::Arg::new("name").long("name"));
        super::write(command, &dir).unwrap();
        let page = std::fs::read_to_string(dir.join("demo.1")).unwrap();
        assert!(
            page.contains(".TH demo 1") && page.contains("name"),
            "{page}"
        );
        let bash = std::fs::read_to_string(dir.join("demo.bash")).unwrap();
        assert!(bash.contains("--name"));
        assert!(dir.join("_demo").exists() && dir.join("demo.fish").exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
