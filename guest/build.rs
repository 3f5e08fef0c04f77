//! Hands guest/linker.ld to the linker for the bare-metal build.
fn main() {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("linker.ld");
    println!("cargo:rerun-if-changed={}", script.display());
    if std::env::var("TARGET").is_ok_and(|t| t.contains("nvmx")) {
        println!("cargo:rustc-link-arg-bins=-T{}", script.display());
    }
}
