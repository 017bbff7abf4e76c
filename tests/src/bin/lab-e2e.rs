//! `lab`, built inside the test crate so its tests can find it (`CARGO_BIN_EXE_lab-e2e`).
fn main() {
    std::process::exit(lab_cli::run());
}
