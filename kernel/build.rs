//! Hands the link script to the linker, and finds the built-in L1 image.
//!
//! The L1 (guest/ crate) is a separate bare-metal binary; the Makefile builds
//! it first and passes its path in NVMX_L1_ELF. Without it (e.g. `cargo
//! check`), an empty image is embedded and nvmx says it has no L1 to run.
fn main() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let script = root.join("linker.ld");
    println!("cargo:rerun-if-changed={}", script.display());
    if std::env::var("TARGET").is_ok_and(|t| t.contains("nvmx")) {
        println!("cargo:rustc-link-arg-bins=-T{}", script.display());
    }
    println!("cargo:rerun-if-env-changed=NVMX_L1_ELF");
    let l1 = match std::env::var("NVMX_L1_ELF") {
        Ok(path) if !path.is_empty() => {
            println!("cargo:rerun-if-changed={path}");
            std::path::PathBuf::from(path)
        }
        _ => {
            let empty = std::path::PathBuf::from(std::env::var("OUT_DIR").unwrap()).join("no-l1.elf");
            std::fs::write(&empty, b"").unwrap();
            empty
        }
    };
    println!("cargo:rustc-env=NVMX_L1_ELF={}", l1.display());
}
