//! Generates the gRPC service from `proto/` with a pure-Rust protobuf compiler (protox), so
//! no `protoc` is needed, and keeps the descriptor set for server reflection; packs the
//! release binary's relocations (see [`packed_relocations`]) and, when asked, lays out its
//! code (see [`code_layout`]).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    packed_relocations();
    code_layout();
    let protos = ["proto/floodgate/v1/compute.proto"];
    println!("cargo:rerun-if-changed=proto");
    // `sqlx::migrate!` embeds the migrations; a new file must rebuild the crate.
    println!("cargo:rerun-if-changed=migrations");
    let descriptors = protox::compile(protos, ["proto"])?;
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out.join("floodgate_descriptor.bin"),
        prost::Message::encode_to_vec(&descriptors),
    )?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_transport(false)
        .build_server(true)
        .compile_fds(descriptors)?;
    Ok(())
}

/// Relative relocations packed (DT_RELR) in release builds: the loader reads a few KiB at
/// start instead of half a MiB of `.rela.dyn`, pages that would otherwise stay resident.
/// Only for the linker rustc uses by default on x86_64 Linux (LLD, since 1.90), which knows
/// the option, and only when the glibc built against is 2.36 or later (Debian 12's, the
/// image's): an older loader would skip them and the binary would not run. Any other
/// target, linker or toolchain builds the same binary without it.
fn packed_relocations() {
    let var = |name: &str| std::env::var(name).unwrap_or_default();
    let rustc_minor =
        std::process::Command::new(std::env::var_os("RUSTC").unwrap_or("rustc".into()))
            .arg("-V")
            .output()
            .ok()
            .and_then(|out| {
                let text = String::from_utf8_lossy(&out.stdout).into_owned();
                text.split_whitespace()
                    .nth(1)?
                    .split('.')
                    .nth(1)?
                    .parse::<u32>()
                    .ok()
            });
    let lld_by_default = var("TARGET") == "x86_64-unknown-linux-gnu" && rustc_minor >= Some(90);
    let other_linker = var("CARGO_ENCODED_RUSTFLAGS").contains("link")
        || std::env::vars().any(|(k, _)| k.starts_with("CARGO_TARGET_") && k.ends_with("_LINKER"));
    if var("PROFILE") == "release" && lld_by_default && !other_linker && glibc_at_least(2, 36) {
        println!("cargo:rustc-link-arg-bin=floodgate=-Wl,-z,pack-relative-relocs");
    }
}

/// With `FLOODGATE_CODE_LAYOUT=FILE` (written by `scripts/release-build.sh` from a profile
/// of the same build), the functions it lists are placed side by side at the start of the
/// code. The kernel reads executable pages back 64 KiB at a time, so what serving runs,
/// packed together, keeps a fraction of the pages resident that it does scattered. Nothing
/// derived from a build is kept in the tree: without the variable the default layout is
/// used, and a list that no longer matches only costs memory (the linker skips names it does
/// not find).
fn code_layout() {
    println!("cargo:rerun-if-env-changed=FLOODGATE_CODE_LAYOUT");
    if let Some(file) = std::env::var_os("FLOODGATE_CODE_LAYOUT").filter(|f| !f.is_empty()) {
        println!(
            "cargo:rerun-if-changed={}",
            std::path::Path::new(&file).display()
        );
        println!(
            "cargo:rustc-link-arg-bin=floodgate=-Wl,--symbol-ordering-file={}",
            std::path::Path::new(&file).display()
        );
        println!("cargo:rustc-link-arg-bin=floodgate=-Wl,--no-warn-symbol-ordering");
    }
}

/// Whether the build machine's glibc (`getconf GNU_LIBC_VERSION`: "glibc 2.36") is at least
/// `major.minor`; false when it cannot tell.
fn glibc_at_least(major: u32, minor: u32) -> bool {
    std::process::Command::new("getconf")
        .arg("GNU_LIBC_VERSION")
        .output()
        .ok()
        .and_then(|out| {
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            let version = text.trim().strip_prefix("glibc ")?.to_owned();
            let mut parts = version.split('.').map(|p| p.parse::<u32>().ok());
            Some((parts.next()??, parts.next()??))
        })
        .is_some_and(|found| found >= (major, minor))
}
