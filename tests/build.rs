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
        // The hostile guest declares everything; each test host grants it.
        if b.name == "hostile" {
            std::fs::write(
                b.path.with_extension("toml"),
                "models = [\"*\"]\ncache = true\n",
            )
            .expect("write the hostile guest's manifest");
        }
        println!(
            "cargo:rustc-env=CF_GUEST_{}={}",
            b.name.to_uppercase().replace('-', "_"),
            b.path.display()
        );
    }
}
