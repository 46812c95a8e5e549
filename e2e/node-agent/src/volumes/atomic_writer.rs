//! Kubelet's AtomicWriter: replaces the files of a Secret, ConfigMap, downward
//! API or projected volume so that a reader sees either the old or the new set,
//! never a mix.
//!
//! ```text
//! <dir>/..2026_11_21_05_52_21.123456789/<files>   one directory per generation
//! <dir>/..data -> ..2026_11_21_05_52_21.123456789 swapped by an atomic rename
//! <dir>/<name> -> ..data/<name>                   one link per top-level name
//! ```
//! Readers that watch for updates (porthole's proxy reloads its certificates
//! this way) see the `..data` rename.
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Component, Path};

use k8s_openapi::jiff::Timestamp;

const DATA_LINK: &str = "..data";
const NEW_DATA_LINK: &str = "..data_tmp";

/// One file of a volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileProjection {
    pub data: Vec<u8>,
    pub mode: u32,
}

/// Relative path → file.
pub type Payload = BTreeMap<String, FileProjection>;

/// Makes `dir` hold exactly `payload`. Returns whether anything changed.
/// Files and directories get group `fs_group` when one is given.
pub fn write(dir: &Path, payload: &Payload, fs_group: Option<u32>) -> io::Result<bool> {
    for path in payload.keys() {
        validate(path)?;
    }
    fs::create_dir_all(dir)?;
    let old_generation = fs::read_link(dir.join(DATA_LINK)).ok();
    if let Some(old) = &old_generation
        && matches(&dir.join(old), payload)?
    {
        return Ok(false);
    }

    let generation = generation_name();
    let generation_dir = dir.join(&generation);
    fs::create_dir(&generation_dir)?;
    set_group(&generation_dir, fs_group)?;
    for (path, file) in payload {
        let target = generation_dir.join(path);
        if let Some(parent) = target.parent()
            && !parent.exists()
        {
            fs::create_dir_all(parent)?;
            set_group(parent, fs_group)?;
        }
        fs::write(&target, &file.data)?;
        fs::set_permissions(&target, fs::Permissions::from_mode(file.mode))?;
        set_group(&target, fs_group)?;
    }

    let new_link = dir.join(NEW_DATA_LINK);
    remove_if_present(&new_link)?;
    symlink(&generation, &new_link)?;
    fs::rename(&new_link, dir.join(DATA_LINK))?;

    let top_level: BTreeSet<&str> = payload.keys().map(|p| first_component(p)).collect();
    for name in &top_level {
        let link = dir.join(name);
        if fs::symlink_metadata(&link).is_err() {
            symlink(Path::new(DATA_LINK).join(name), &link)?;
        }
    }
    for entry in fs::read_dir(dir)? {
        let name = entry?.file_name();
        let name = name.to_string_lossy();
        if !name.starts_with("..") && !top_level.contains(name.as_ref()) {
            remove_if_present(&dir.join(name.as_ref()))?;
        }
    }
    if let Some(old) = old_generation {
        fs::remove_dir_all(dir.join(old)).or_else(ignore_not_found)?;
    }
    Ok(true)
}

/// Paths must stay inside the volume and must not collide with the `..` names.
fn validate(path: &str) -> io::Result<()> {
    let invalid = |why: &str| {
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("invalid volume file path {path:?}: {why}"),
        ))
    };
    if path.is_empty() {
        return invalid("empty");
    }
    if path.starts_with("..") {
        return invalid("must not start with '..'");
    }
    if Path::new(path)
        .components()
        .any(|c| !matches!(c, Component::Normal(_)))
    {
        return invalid("must be relative and must not contain '..'");
    }
    Ok(())
}

/// Whether `generation_dir` holds exactly `payload` (content and mode).
fn matches(generation_dir: &Path, payload: &Payload) -> io::Result<bool> {
    let mut present = BTreeSet::new();
    collect_files(generation_dir, generation_dir, &mut present)?;
    if present.len() != payload.len() || !payload.keys().all(|p| present.contains(p)) {
        return Ok(false);
    }
    for (path, file) in payload {
        let target = generation_dir.join(path);
        let mode = fs::metadata(&target)?.permissions().mode() & 0o7777;
        if mode != file.mode || fs::read(&target)? != file.data {
            return Ok(false);
        }
    }
    Ok(true)
}

fn collect_files(root: &Path, dir: &Path, found: &mut BTreeSet<String>) -> io::Result<()> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(err) => return Err(err),
    };
    for entry in entries {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            collect_files(root, &entry.path(), found)?;
        } else if let Ok(relative) = entry.path().strip_prefix(root) {
            found.insert(relative.to_string_lossy().into_owned());
        }
    }
    Ok(())
}

fn generation_name() -> String {
    let now = Timestamp::now();
    format!(
        "..{}.{:09}",
        now.strftime("%Y_%m_%d_%H_%M_%S"),
        now.subsec_nanosecond()
    )
}

fn first_component(path: &str) -> &str {
    path.split('/').next().unwrap_or(path)
}

fn set_group(path: &Path, fs_group: Option<u32>) -> io::Result<()> {
    match fs_group {
        Some(gid) => std::os::unix::fs::chown(path, None, Some(gid)),
        None => Ok(()),
    }
}

fn remove_if_present(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(err) => ignore_not_found(err),
    }
}

fn ignore_not_found(err: io::Error) -> io::Result<()> {
    if err.kind() == io::ErrorKind::NotFound {
        Ok(())
    } else {
        Err(err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(files: &[(&str, &str, u32)]) -> Payload {
        files
            .iter()
            .map(|(path, data, mode)| {
                let file = FileProjection {
                    data: data.as_bytes().to_vec(),
                    mode: *mode,
                };
                (path.to_string(), file)
            })
            .collect()
    }

    fn temp_dir(name: &str) -> std::path::PathBuf {
        let dir =
            std::env::temp_dir().join(format!("porthole-atomic-{name}-{}", rand::random::<u64>()));
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn writes_swaps_and_prunes() {
        let dir = temp_dir("swap");
        let first = payload(&[("tls.crt", "one", 0o644), ("conf/a.yaml", "a", 0o600)]);
        assert!(write(&dir, &first, None).unwrap());
        assert_eq!(fs::read_to_string(dir.join("tls.crt")).unwrap(), "one");
        assert_eq!(fs::read_to_string(dir.join("conf/a.yaml")).unwrap(), "a");
        let mode = fs::metadata(dir.join("conf/a.yaml"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(
            fs::symlink_metadata(dir.join("tls.crt"))
                .unwrap()
                .is_symlink()
        );
        let first_generation = fs::read_link(dir.join(DATA_LINK)).unwrap();

        assert!(
            !write(&dir, &first, None).unwrap(),
            "same payload is a no-op"
        );

        let second = payload(&[("tls.crt", "two", 0o644)]);
        assert!(write(&dir, &second, None).unwrap());
        assert_eq!(fs::read_to_string(dir.join("tls.crt")).unwrap(), "two");
        assert!(
            !dir.join("conf").exists(),
            "names no longer projected are removed"
        );
        assert_ne!(
            fs::read_link(dir.join(DATA_LINK)).unwrap(),
            first_generation
        );
        assert!(
            !dir.join(first_generation).exists(),
            "old generation removed"
        );

        let mode_change = payload(&[("tls.crt", "two", 0o400)]);
        assert!(write(&dir, &mode_change, None).unwrap());
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn rejects_escaping_paths() {
        let dir = temp_dir("escape");
        for bad in ["../x", "/etc/passwd", "..data", "a/../../b", ""] {
            assert!(
                write(&dir, &payload(&[(bad, "x", 0o644)]), None).is_err(),
                "{bad}"
            );
        }
        fs::remove_dir_all(dir).unwrap();
    }
}
