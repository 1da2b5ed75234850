//! Files costmeter writes (status files, reports), often as root in folders other users can
//! write: each is written to a temporary file created exclusively under a random name in the
//! destination's folder (`O_EXCL`, never through a planted link), then renamed over the
//! destination, which is refused if it is a symbolic link. A reader sees the old file or the
//! new one, never half of one.

use std::io::Write;
use std::path::Path;

/// Writes `contents` to `path` atomically, mode 0644, never through a link.
pub fn write_atomic(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink()) {
        return Err(std::io::Error::other(format!(
            "{} is a symbolic link; costmeter does not write through links (remove it)",
            path.display()
        )));
    }
    let folder = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut temporary = tempfile::Builder::new()
        .prefix(".costmeter-")
        .suffix(".tmp")
        .tempfile_in(folder)?;
    temporary.write_all(contents)?;
    {
        use std::os::unix::fs::PermissionsExt;
        temporary
            .as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o644))?;
    }
    temporary.as_file().sync_all()?;
    // rename(2) replaces a link that appeared meanwhile instead of following it.
    temporary.persist(path).map_err(|e| e.error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_replace_the_file_and_refuse_a_link() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("status.txt");
        write_atomic(&path, b"one").expect("first write");
        write_atomic(&path, b"two").expect("second write");
        assert_eq!(std::fs::read_to_string(&path).expect("read"), "two");
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "keep").expect("victim");
        let link = dir.path().join("report.md");
        std::os::unix::fs::symlink(&victim, &link).expect("link");
        let error = write_atomic(&link, b"overwrite").expect_err("a link is refused");
        assert!(error.to_string().contains("symbolic link"), "{error}");
        assert_eq!(std::fs::read_to_string(&victim).expect("read"), "keep");
        let leftovers = std::fs::read_dir(dir.path())
            .expect("list")
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
            .count();
        assert_eq!(leftovers, 0, "no temporary file is left behind");
    }
}
