//! Links the shim binaries as position-dependent executables (see the comment below).

fn main() {
    // Non-PIE, as Debian's containerd and containerd-shim-runc-v2 are: a PIE binary of this
    // size carries ~20,000 relative relocations that the loader applies at every exec (and the
    // pages of `.data.rel.ro` they dirty stay in the server's RSS). containerd execs the shim
    // three times per container (`start`, the server, `delete`); each exec is ~0.2 ms and ~95
    // page faults cheaper this way (docs/performance.md). Libraries, heap and stack keep ASLR.
    println!("cargo:rustc-link-arg-bins=-no-pie");
}
