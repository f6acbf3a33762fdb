//! `containerd-shim-record-v2`: the recording proxy shim. Configure it as a runtime in place of
//! a real shim (`RECORD_SHIM`, `RECORD_DIR`, or `/etc/containerd/shim-record.json`); it records
//! what containerd and the real shim say to each other (`harness record --to-scenario` turns that
//! into a scenario).

fn main() -> std::process::ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let code = harness::record::proxy::main(argv);
    std::process::ExitCode::from(code.clamp(0, 255) as u8)
}
