//! Rewriting a file the person keeps (the first-boot script for `pin`, a tc-admin configuration
//! for `deploy --update-file`): atomically, keeping its permissions, and never over a change made
//! since it was read.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result, anyhow, bail};

/// Replaces `path` with `new_text` atomically (a temporary file beside it, then a rename),
/// keeping its permissions; refuses if the file no longer holds `old_text`, saying that it
/// `changed` (`since tc-ami read it, so it was not written`).
pub fn write_in_place(path: &Path, old_text: &str, new_text: &str, changed: &str) -> Result<()> {
    let target = std::fs::canonicalize(path)
        .with_context(|| format!("cannot resolve {}", path.display()))?;
    let now = std::fs::read_to_string(&target)
        .with_context(|| format!("cannot read {} again before writing it", path.display()))?;
    if now != old_text {
        bail!("{} changed {changed}", path.display());
    }
    let dir = target
        .parent()
        .ok_or_else(|| anyhow!("{} has no parent directory", target.display()))?;
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tc-ami.{}", std::process::id()));
    let result = (|| -> std::io::Result<()> {
        let permissions = std::fs::metadata(&target)?.permissions();
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(new_text.as_bytes())?;
        f.sync_all()?;
        std::fs::set_permissions(&tmp, permissions)?;
        std::fs::rename(&tmp, &target)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        bail!("cannot write {}: {e}; it is unchanged", path.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn writes_atomically_keeps_permissions_and_refuses_a_changed_file() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("worker-pools.yml");
        std::fs::write(&path, "a: ami-1\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        let err = write_in_place(&path, "what was read", "a: ami-2\n", "meanwhile").unwrap_err();
        assert!(err.to_string().ends_with("changed meanwhile"), "{err}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "a: ami-1\n");
        write_in_place(&path, "a: ami-1\n", "a: ami-2\n", "meanwhile").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "a: ami-2\n");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o640);
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temporary file"
        );
    }
}
