//! Builds the hostile guests in `tests/guests/` from source.

use std::path::PathBuf;

fn main() {
    let manifest =
        PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let guests = manifest.join("guests");
    let sdk = manifest.join("../guest-agents/sdk");
    let wit = manifest.join("../wit");
    let built = cf_build_support::build(
        &guests,
        &["hostile", "future"],
        &[guests.as_path(), sdk.as_path(), wit.as_path()],
    );
    for b in built {
        println!(
            "cargo:rustc-env=CF_GUEST_{}={}",
            b.name.to_uppercase().replace('-', "_"),
            b.path.display()
        );
    }
}
