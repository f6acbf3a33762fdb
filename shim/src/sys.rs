//! System calls made without libc, for code that runs in a child sharing the server's memory
//! (`clone(CLONE_VM)`, see [`crate::process`]): such a child must not write libc's `errno`
//! (the server thread's, in shared memory) nor take libc's locks, so each call here returns
//! `-errno` and touches nothing else.

/// Whether a task's child may share the server's memory until its exec: this architecture has
/// [`syscall`] in assembly (elsewhere it goes through libc, and children are forked), and the
/// kernel is 5.16 or later. Before 5.16 a core-dumping signal (SIGQUIT, SIGSEGV, ...) killed
/// every process sharing the dumping one's memory, the server with its waiting child
/// (`zap_threads` in fs/coredump.c; "coredump: Limit coredumps to a single thread group").
pub fn shared_memory_spawn() -> bool {
    static ANSWER: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ANSWER.get_or_init(|| {
        cfg!(any(target_arch = "x86_64", target_arch = "aarch64"))
            && std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .ok()
                .and_then(|r| kernel_at_least(r.trim(), (5, 16)))
                .unwrap_or(false)
    })
}

/// Whether a kernel release such as `6.1.0-18-amd64` is at least `want` (major, minor);
/// `None` when it does not start with two numbers.
pub fn kernel_at_least(release: &str, want: (u32, u32)) -> Option<bool> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let major: u32 = parts.next()?.parse().ok()?;
    let minor: u32 = parts.next()?.parse().ok()?;
    Some((major, minor) >= want)
}

/// System call `n` with up to six arguments: its result, or `-errno`.
///
/// # Safety
/// The arguments must be valid for system call `n`.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub unsafe fn syscall(n: libc::c_long, a: [usize; 6]) -> isize {
    let ret: isize;
    // SAFETY: the Linux x86_64 system call convention; rcx and r11 are clobbered by `syscall`.
    unsafe {
        std::arch::asm!(
            "syscall",
            inlateout("rax") n as isize => ret,
            in("rdi") a[0],
            in("rsi") a[1],
            in("rdx") a[2],
            in("r10") a[3],
            in("r8") a[4],
            in("r9") a[5],
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    ret
}

/// System call `n` with up to six arguments: its result, or `-errno`.
///
/// # Safety
/// The arguments must be valid for system call `n`.
#[cfg(target_arch = "aarch64")]
#[inline(always)]
pub unsafe fn syscall(n: libc::c_long, a: [usize; 6]) -> isize {
    let ret: isize;
    // SAFETY: the Linux aarch64 system call convention (number in x8, result in x0).
    unsafe {
        std::arch::asm!(
            "svc 0",
            in("x8") n,
            inlateout("x0") a[0] => ret,
            in("x1") a[1],
            in("x2") a[2],
            in("x3") a[3],
            in("x4") a[4],
            in("x5") a[5],
            options(nostack),
        );
    }
    ret
}

/// System call `n` through libc (architectures without the assembly version, where children
/// are forked and `errno` is their own): its result, or `-errno`.
///
/// # Safety
/// The arguments must be valid for system call `n`.
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
pub unsafe fn syscall(n: libc::c_long, a: [usize; 6]) -> isize {
    // SAFETY: as the caller promises.
    unsafe {
        let r = libc::syscall(n, a[0], a[1], a[2], a[3], a[4], a[5]);
        if r < 0 {
            -(*libc::__errno_location() as isize)
        } else {
            r as isize
        }
    }
}

/// `write(2)` of all of `buf` in one call, as the child's records are (8 bytes to a pipe).
///
/// # Safety
/// `fd` must be open.
pub unsafe fn write(fd: i32, buf: &[u8]) -> isize {
    // SAFETY: a readable buffer of its own length.
    unsafe {
        syscall(
            libc::SYS_write,
            [fd as usize, buf.as_ptr() as usize, buf.len(), 0, 0, 0],
        )
    }
}

/// `close(2)`.
///
/// # Safety
/// `fd` must not be owned by anything that will use or close it again.
pub unsafe fn close(fd: i32) -> isize {
    // SAFETY: as the caller promises.
    unsafe { syscall(libc::SYS_close, [fd as usize, 0, 0, 0, 0, 0]) }
}

/// `_exit(2)` of the whole (child) process.
pub fn exit(code: i32) -> ! {
    loop {
        // SAFETY: exit_group ends the calling process; it does not return.
        unsafe { syscall(libc::SYS_exit_group, [code as usize, 0, 0, 0, 0, 0]) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_releases_are_compared_by_major_and_minor() {
        assert_eq!(kernel_at_least("6.1.0-18-amd64", (5, 16)), Some(true));
        assert_eq!(kernel_at_least("5.16.0", (5, 16)), Some(true));
        assert_eq!(kernel_at_least("5.15.153-generic", (5, 16)), Some(false));
        assert_eq!(
            kernel_at_least("4.18.0-553.el8_10.x86_64", (5, 16)),
            Some(false)
        );
        assert_eq!(kernel_at_least("10.0", (5, 16)), Some(true));
        assert_eq!(kernel_at_least("weird", (5, 16)), None);
    }

    #[test]
    fn raw_calls_return_minus_errno_and_leave_errno_alone() {
        // SAFETY: close(2) of an fd that is not open, and getpid(2).
        unsafe {
            *libc::__errno_location() = 0;
            assert_eq!(close(-1), -(libc::EBADF as isize));
            if cfg!(any(target_arch = "x86_64", target_arch = "aarch64")) {
                assert_eq!(*libc::__errno_location(), 0);
            }
            let pid = syscall(libc::SYS_getpid, [0; 6]);
            assert_eq!(pid, std::process::id() as isize);
        }
    }
}
