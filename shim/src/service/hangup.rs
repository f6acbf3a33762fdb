//! The exiting server's last wait: until every client connection it accepted has been hung up
//! by its client, so that no reply is still on its way and no request of the client's is left
//! unread when the process (and with it each socket) goes (a unix stream socket closed with
//! unread data resets its peer: `unix_release_sock`, net/unix/af_unix.c in Linux).
//!
//! containerd closes its connection right after the reply of the RPC that ends a shim: after a
//! task Shutdown (`shimTask.delete` then `shim.delete`, runtime/v2/shim.go at v1.6.20) and after
//! a ShutdownSandbox (`Shutdown` then `shims.Delete`, plugins/sandbox/controller.go at v2.1.9).
//! A server that closed first lost replies now and then under containerd 2.1.9 ("ttrpc:
//! closed"). The wait is bounded ([`CLIENT_HANGUP`]) for clients that keep their connection.

use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

use nix::sys::socket::{getsockname, getsockopt, sockopt, UnixAddr};

/// How long the exiting server waits for its clients to hang up before it closes anyway.
pub const CLIENT_HANGUP: Duration = Duration::from_millis(200);

/// The accepted connections of one listening socket, found by their local address (an accepted
/// unix socket has its listener's).
pub struct Clients {
    local: UnixAddr,
}

impl Clients {
    /// For the listening socket `listener`; `None` if it has no unix address.
    pub fn of(listener: RawFd) -> Option<Clients> {
        getsockname::<UnixAddr>(listener)
            .ok()
            .map(|local| Clients { local })
    }

    /// The process's open connections accepted on the listener whose client has not hung up.
    fn open(&self) -> Vec<RawFd> {
        let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
            return Vec::new();
        };
        dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<RawFd>().ok())
            .filter(|&fd| self.accepted(fd) && !hung_up(fd))
            .collect()
    }

    fn accepted(&self, fd: RawFd) -> bool {
        // SAFETY: only inspected (getsockname, getsockopt) while the fd is open; a number the
        // directory listed and that closed since fails these calls harmlessly.
        let b = unsafe { BorrowedFd::borrow_raw(fd) };
        getsockname::<UnixAddr>(b.as_raw_fd()).is_ok_and(|a| a == self.local)
            && getsockopt(&b, sockopt::AcceptConn).is_ok_and(|listening| !listening)
    }

    /// Waits until no accepted connection is left open by its client, at most `bound`; whether
    /// they all hung up. Woken by the hang-ups themselves (each connection is watched through a
    /// duplicate of its fd, readable on data or on the peer's close), then the connections are
    /// listed again, for any accepted meanwhile.
    pub async fn wait_hangup(&self, bound: Duration) -> bool {
        let end = tokio::time::Instant::now() + bound;
        loop {
            let open = self.open();
            if open.is_empty() {
                return true;
            }
            let all = async {
                for fd in open {
                    if !watch(fd).await {
                        // Not watchable (no fd left for the duplicate, say): look again soon.
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                }
            };
            if tokio::time::timeout_at(end, all).await.is_err()
                || tokio::time::Instant::now() >= end
            {
                tracing::info!(
                    "{} client connection(s) still open after {} ms; closing them",
                    self.open().len(),
                    bound.as_millis()
                );
                return false;
            }
        }
    }
}

/// Returns once the client of connection `fd` has hung up, `true`; `false` at once when `fd`
/// cannot be watched. The duplicate shares the socket, so the server's own reads and its
/// registration of `fd` are untouched.
async fn watch(fd: RawFd) -> bool {
    // SAFETY: fcntl(F_DUPFD_CLOEXEC) of an fd that `open` just listed; the result is checked.
    let dup = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
    if dup < 0 {
        return false;
    }
    // SAFETY: a fresh fd that nothing else owns.
    let dup = unsafe { OwnedFd::from_raw_fd(dup) };
    // SAFETY: the AsyncFd owns `dup`, which stays open and the same socket until dropped.
    let Ok(afd) = (unsafe { AsyncFd::register_with_interest(dup, Interest::READABLE) }) else {
        return false;
    };
    while !hung_up(afd.as_raw_fd()) {
        match afd.readable().await {
            // Readable with data (a request the server reads itself) is not a hang-up: wait for
            // the next edge.
            Ok(mut ready) => ready.clear_ready(),
            Err(_) => return false,
        }
    }
    true
}

/// Whether the peer of connection `fd` has closed or shut down its side.
fn hung_up(fd: RawFd) -> bool {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLRDHUP,
        revents: 0,
    };
    // SAFETY: poll(2) of one fd without waiting; it only reports.
    let n = unsafe { libc::poll(&mut p, 1, 0) };
    n == 1 && p.revents & (libc::POLLRDHUP | libc::POLLHUP | libc::POLLERR | libc::POLLNVAL) != 0
}
