//! Hands the link script to the linker (only for the bare-metal kernel binary).
fn main() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let script = root.join("linker.ld");
    println!("cargo:rerun-if-changed={}", script.display());
    if std::env::var("TARGET").is_ok_and(|t| t.contains("nvmx")) {
        println!("cargo:rustc-link-arg-bins=-T{}", script.display());
    }
}
