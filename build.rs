//! Generates the gRPC service from `proto/` with a pure-Rust protobuf compiler (protox), so
//! no `protoc` is needed, and keeps the descriptor set for server reflection; and lays out
//! the release binary's code (see [`link_order`]).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    link_order();
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

/// In release builds linked by LLD (rustc's default on x86_64 Linux since 1.90), place the
/// functions listed in `src/link-order.txt` (what runs at start and on the common requests,
/// written by `scripts/link-order.sh`) together at the start of the code. The kernel maps
/// code in 64 KiB around each first touch, so scattered startup code kept 8.5 MiB of a 13 MiB
/// `.text` resident; laid out together it is under 3 MiB. `FLOODGATE_LINK_ORDER=off` skips it
/// (and the packed relocations below), as does any other toolchain, target or linker, which
/// simply keep the default layout.
fn link_order() {
    println!("cargo:rerun-if-changed=src/link-order.txt");
    println!("cargo:rerun-if-env-changed=FLOODGATE_LINK_ORDER");
    println!("cargo:rustc-check-cfg=cfg(floodgate_link_order)");
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
    if var("PROFILE") != "release"
        || !lld_by_default
        || other_linker
        || var("FLOODGATE_LINK_ORDER") == "off"
    {
        return;
    }
    let file = std::path::Path::new(&var("CARGO_MANIFEST_DIR")).join("src/link-order.txt");
    if file.exists() {
        // A function the list names but this build no longer has is not worth a warning.
        println!(
            "cargo:rustc-link-arg-bin=floodgate=-Wl,--symbol-ordering-file={}",
            file.display()
        );
        println!("cargo:rustc-link-arg-bin=floodgate=-Wl,--no-warn-symbol-ordering");
        // The startup-only block between its markers exists: `startup_code::release` may
        // hand it back.
        println!("cargo:rustc-cfg=floodgate_link_order");
    }
    // Relative relocations packed (DT_RELR): the loader reads a few KiB at start instead of
    // half a MiB of `.rela.dyn`. Only a glibc of 2.36 or later (Debian 12's, the image's)
    // applies them, so only when the glibc built against is one: an older loader would
    // skip them and the binary would not run.
    if glibc_at_least(2, 36) {
        println!("cargo:rustc-link-arg-bin=floodgate=-Wl,-z,pack-relative-relocs");
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
