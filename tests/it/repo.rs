//! The repository stands on its own: a fresh clone has everything its files point to.

use std::path::{Path, PathBuf};

/// Paths outside the repository that files must not point to. Spelled in pieces so this file
/// does not match itself.
const OUTSIDE: &[&str] = &[
    concat!("..", "/shared"),
    concat!("/work", "/shared"),
    concat!("shared/", "DESIGN.md"),
    concat!("shared/", "seeds"),
];

/// The tracked files (`git ls-files`), or every file but build output when git is not at hand.
fn tracked_files(root: &Path) -> Vec<PathBuf> {
    let listed = std::process::Command::new("git")
        .arg("-C")
        .arg(root)
        .args(["ls-files", "-z"])
        .output();
    if let Ok(out) = listed
        && out.status.success()
        && !out.stdout.is_empty()
    {
        return out
            .stdout
            .split(|b| *b == 0)
            .filter(|p| !p.is_empty())
            .map(|p| root.join(String::from_utf8_lossy(p).as_ref()))
            .collect();
    }
    let mut files = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            let name = entry.file_name();
            if [".git", "target", "tools", "node_modules"].contains(&name.to_str().unwrap_or("")) {
                continue;
            }
            if path.is_dir() {
                dirs.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files
}

#[test]
fn no_file_points_outside_the_repository() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let files = tracked_files(root);
    assert!(
        files.iter().any(|f| f.ends_with("src/lib.rs")) && files.len() > 50,
        "found too few files under {root:?}: {}",
        files.len()
    );
    let mut offenders = Vec::new();
    for file in &files {
        // Binary files are not documentation; skip what is not text.
        let Ok(text) = std::fs::read_to_string(file) else {
            continue;
        };
        for (n, line) in text.lines().enumerate() {
            if OUTSIDE.iter().any(|o| line.contains(o)) {
                let rel = file.strip_prefix(root).unwrap_or(file);
                offenders.push(format!("{}:{}: {line}", rel.display(), n + 1));
            }
        }
    }
    assert!(offenders.is_empty(), "{offenders:#?}");
}

/// What the README promises a reader can open is in the repository.
#[test]
fn the_design_license_and_changelog_are_here() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let read =
        |p: &str| std::fs::read_to_string(root.join(p)).unwrap_or_else(|e| panic!("{p}: {e}"));
    let design = read("docs/design.md");
    for section in [
        "## 1. Domain",
        "## 2. Permissions",
        "## 3. Lifecycle",
        "## 4. Events",
        "## 5. Transports",
        "## 7. Security model",
    ] {
        assert!(design.contains(section), "docs/design.md lacks {section:?}");
    }
    let license = read("LICENSE");
    assert!(license.contains("Apache License") && license.contains("Version 2.0, January 2004"));
    assert!(
        license.contains("END OF TERMS AND CONDITIONS"),
        "the full text, not a notice"
    );
    let manifest = read("Cargo.toml");
    assert!(manifest.contains("license = \"Apache-2.0\""));
    let changelog = read("CHANGELOG.md");
    assert!(changelog.contains("## [Unreleased]"));
    let readme = read("README.md");
    for link in [
        "docs/design.md",
        "docs/performance.md",
        "CHANGELOG.md",
        "LICENSE",
    ] {
        assert!(readme.contains(&format!("]({link}")), "README links {link}");
    }
    assert!(read("src/lib.rs").contains("docs/design.md"));
}
