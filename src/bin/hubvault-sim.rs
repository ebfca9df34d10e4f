//! `hubvault-sim`: a local IoT Hub, DPS, ARM and Key Vault simulator (see `hubvault::sim`).
fn main() {
    eprintln!("hubvault-sim: not implemented in this build");
    std::process::exit(2);
}
