//! Pseudo-terminals for `terminal: true` processes: allocation and resizing.

use std::os::fd::{AsRawFd, OwnedFd};

use crate::error::{Error, Result};

/// A freshly opened pty pair.
pub struct Pty {
    /// The shim's side.
    pub master: OwnedFd,
    /// The process's side (its controlling terminal and stdio).
    pub slave: OwnedFd,
}

/// Opens a new pty pair; both fds are close-on-exec.
pub fn open() -> Result<Pty> {
    let r = nix::pty::openpty(None, None).map_err(|e| Error::errno("openpty", e))?;
    for fd in [&r.master, &r.slave] {
        set_cloexec(fd.as_raw_fd())?;
    }
    Ok(Pty {
        master: r.master,
        slave: r.slave,
    })
}

pub(crate) fn set_cloexec(fd: i32) -> Result<()> {
    // SAFETY: fcntl on an fd we own.
    let r = unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    if r < 0 {
        return Err(Error::io(
            "fcntl FD_CLOEXEC",
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}

/// Sets the window size of the pty whose master is `master` (TIOCSWINSZ).
pub fn resize(master: &impl AsRawFd, width: u32, height: u32) -> Result<()> {
    let ws = libc::winsize {
        ws_row: height.min(u16::MAX as u32) as u16,
        ws_col: width.min(u16::MAX as u32) as u16,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads a winsize struct we own.
    let r = unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
    if r < 0 {
        return Err(Error::io("resize pty", std::io::Error::last_os_error()));
    }
    Ok(())
}

/// Reads the window size back (TIOCGWINSZ): `(width, height)`.
pub fn size(fd: &impl AsRawFd) -> Result<(u16, u16)> {
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes into a winsize struct we own.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCGWINSZ, &mut ws) };
    if r < 0 {
        return Err(Error::io("read pty size", std::io::Error::last_os_error()));
    }
    Ok((ws.ws_col, ws.ws_row))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resize_is_visible_on_the_slave() {
        let p = open().unwrap();
        resize(&p.master, 100, 40).unwrap();
        assert_eq!(size(&p.slave).unwrap(), (100, 40));
    }
}
