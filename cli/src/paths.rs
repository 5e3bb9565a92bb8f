//! Paths as the file system sees them, for telling whether one folder is
//! inside another.

use std::path::{Component, Path, PathBuf};

use anyhow::Context;

/// `path` made absolute with its links and `..`s resolved, as far as it
/// exists; the part that does not exist yet is taken as written.
pub fn resolved(path: &Path) -> anyhow::Result<PathBuf> {
    let absolute = std::path::absolute(path).with_context(|| format!("resolving {}", path.display()))?;
    let mut resolved = PathBuf::new();
    for component in absolute.components() {
        match component {
            Component::CurDir => {}
            // `resolved` has no links left in it, so its parent is the one
            // the file system would go to.
            Component::ParentDir => {
                resolved.pop();
            }
            Component::Normal(name) => {
                resolved.push(name);
                if let Ok(real) = resolved.canonicalize() {
                    resolved = real;
                }
            }
            Component::RootDir | Component::Prefix(_) => resolved.push(component),
        }
    }
    Ok(resolved)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_and_parent_folders_are_resolved_as_the_file_system_would() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().canonicalize().unwrap();
        std::fs::create_dir_all(real.join("lake/_warehouse")).unwrap();
        std::os::unix::fs::symlink(real.join("lake/_warehouse"), real.join("link")).unwrap();
        let cases = [
            // Through a link, and out of a folder that does not exist yet.
            ("link/x.csv", "lake/_warehouse/x.csv"),
            ("lake/new/../_warehouse/sub/x.csv", "lake/_warehouse/sub/x.csv"),
            // `..` after a link leaves the link's target, not the link.
            ("link/../x.csv", "lake/x.csv"),
            ("lake/./a/b", "lake/a/b"),
        ];
        for (given, expected) in cases {
            assert_eq!(resolved(&real.join(given)).unwrap(), real.join(expected), "{given}");
        }
    }
}
