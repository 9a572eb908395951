//! Writing certificate and key files: private keys are created with mode 0600 from the start,
//! and existing files are never overwritten unless asked.

use std::fs::{self, OpenOptions, Permissions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// Mode of certificate files.
pub const PUBLIC_MODE: u32 = 0o644;
/// Mode of files holding private keys (keys, PKCS#12).
pub const PRIVATE_MODE: u32 = 0o600;

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Fails if any of `paths` exists (checked before writing anything, so a refused run leaves
/// nothing half-written).
pub fn refuse_existing(paths: &[&Path]) -> Result<()> {
    for p in paths {
        if p.symlink_metadata().is_ok() {
            return Err(Error::Invalid(format!(
                "{} already exists (use --force to overwrite)",
                p.display()
            )));
        }
    }
    Ok(())
}

/// Writes `data` to `path` with `mode`. Without `force` the file is created with
/// `O_CREAT|O_EXCL` (it must not exist); with `force` a temporary file in the same directory is
/// created the same way and renamed over `path`. Either way the file never exists with a wider
/// mode than `mode`.
pub fn write_file(path: &Path, data: &[u8], mode: u32, force: bool) -> Result<()> {
    let target: PathBuf = if force {
        let mut suffix = [0u8; 6];
        aws_lc_rs::rand::fill(&mut suffix)
            .map_err(|_| Error::Invalid("the system random generator failed".into()))?;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let hex: String = suffix.iter().map(|b| format!("{b:02x}")).collect();
        path.with_file_name(format!(".{name}.{hex}.tmp"))
    } else {
        path.to_path_buf()
    };
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&target)
            .map_err(io(&target))?;
        // The umask may have removed bits (a 0644 certificate under umask 077); set them exactly.
        f.set_permissions(Permissions::from_mode(mode))
            .map_err(io(&target))?;
        f.write_all(data).map_err(io(&target))?;
        f.sync_all().map_err(io(&target))?;
        if force {
            fs::rename(&target, path).map_err(io(path))?;
        }
        Ok(())
    })();
    if result.is_err() && force {
        let _ = fs::remove_file(&target);
    }
    result
}

/// [`write_file`] with [`PRIVATE_MODE`].
pub fn write_private(path: &Path, data: &[u8], force: bool) -> Result<()> {
    write_file(path, data, PRIVATE_MODE, force)
}

/// [`write_file`] with [`PUBLIC_MODE`].
pub fn write_public(path: &Path, data: &[u8], force: bool) -> Result<()> {
    write_file(path, data, PUBLIC_MODE, force)
}
