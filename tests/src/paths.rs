//! Where things are: the workspace, the ISO, the firmware, the per-test log directory.

use crate::{Error, Result};
use std::path::{Path, PathBuf};

/// OVMF (UEFI firmware for QEMU), Debian package `ovmf`.
pub const OVMF: &str = "/usr/share/ovmf/OVMF.fd";
/// Bochs' BIOS, Debian package `bochsbios`.
pub const BOCHS_BIOS: &str = "/usr/share/bochs/BIOS-bochs-latest";
/// Bochs' VGA BIOS, Debian package `vgabios`.
pub const BOCHS_VGABIOS: &str = "/usr/share/vgabios/vgabios.bin";

/// The workspace root (this crate lives in `<workspace>/tests`).
pub fn workspace() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// Cargo's target directory: `$CARGO_TARGET_DIR` if set, else `<workspace>/target`.
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(d) if !d.is_empty() => {
            let d = PathBuf::from(d);
            if d.is_absolute() { d } else { workspace().join(d) }
        }
        _ => workspace().join("target"),
    }
}

/// `target/systest`: transcripts (`<test>.log`) and per-test directories.
pub fn systest_dir() -> PathBuf {
    target_dir().join("systest")
}

/// The ISO to boot: `$NVMX_ISO`, else `<workspace>/build/nvmx.iso`.
///
/// A missing ISO is an error, never a skip: a green run must mean the kernel was tested.
pub fn iso() -> Result<PathBuf> {
    let (path, from_env) = match std::env::var_os("NVMX_ISO") {
        Some(p) if !p.is_empty() => (PathBuf::from(p), true),
        _ => (workspace().join("build").join("nvmx.iso"), false),
    };
    check_iso(&path, from_env)
}

fn check_iso(path: &Path, from_env: bool) -> Result<PathBuf> {
    if path.is_file() {
        return Ok(path.to_path_buf());
    }
    let origin = if from_env { " (from $NVMX_ISO)" } else { "" };
    Err(Error::new(format!(
        "nvmx ISO not found at {}{origin}.\n\
         The system tests boot the real ISO: run `make iso` in {} first \
         (or set NVMX_ISO=/path/to/nvmx.iso).",
        path.display(),
        workspace().display()
    )))
}

/// Fails with a clear message if a file the emulator needs is missing.
pub fn require_file(path: &str, what: &str, package: &str) -> Result<()> {
    if Path::new(path).is_file() {
        Ok(())
    } else {
        Err(Error::new(format!("{what} not found at {path}: install the Debian package `{package}`")))
    }
}

/// A file-name-safe version of a test name.
pub fn sanitize(name: &str) -> String {
    name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_iso_fails_and_says_to_run_make_iso() {
        let e = check_iso(Path::new("/nonexistent/nvmx.iso"), false).unwrap_err();
        assert!(e.message().contains("make iso"), "{e}");
        assert!(e.message().contains("/nonexistent/nvmx.iso"), "{e}");
        let e = check_iso(Path::new("/nonexistent/x.iso"), true).unwrap_err();
        assert!(e.message().contains("NVMX_ISO"), "{e}");
    }

    #[test]
    fn workspace_is_the_parent_of_this_crate() {
        assert!(workspace().join("tests").join("Cargo.toml").is_file());
    }

    #[test]
    fn sanitize_keeps_names_readable() {
        assert_eq!(sanitize("qemu_bios_4"), "qemu_bios_4");
        assert_eq!(sanitize("a::b c"), "a__b_c");
    }
}
