//! A pseudo-terminal for the CLI tests: a command runs with the pty as its stdin, stdout,
//! stderr and controlling terminal (so Ctrl-C is a SIGINT), and a thread collects everything it
//! writes. Included by each test file that needs it (`#[path = "support/pty.rs"] mod pty;`);
//! each uses a part of it.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::process::{Child, Command, ExitStatus};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A child process on a terminal, and what the terminal has shown so far.
pub struct Terminal {
    pub child: Child,
    master: std::fs::File,
    seen: Arc<Mutex<String>>,
}

impl Terminal {
    /// Starts `cmd` on a new 50x200 pty (`TERM=xterm`) in a session of its own.
    pub fn start(mut cmd: Command) -> Terminal {
        use std::os::unix::process::CommandExt;
        let size = nix::pty::Winsize {
            ws_row: 50,
            ws_col: 200,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        let pty = nix::pty::openpty(Some(&size), None).expect("openpty");
        let slave = std::fs::File::from(pty.slave);
        cmd.env("TERM", "xterm")
            .stdin(slave.try_clone().expect("dup"))
            .stdout(slave.try_clone().expect("dup"))
            .stderr(slave);
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                nix::unistd::setsid().map_err(std::io::Error::from)?;
                if libc::ioctl(0, libc::TIOCSCTTY, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().expect("spawn a command on a pty");
        let master = std::fs::File::from(pty.master);
        let seen = Arc::new(Mutex::new(String::new()));
        let mut reader = master.try_clone().expect("dup master");
        let sink = seen.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 {
                    break;
                }
                let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                sink.lock().expect("lock").push_str(&text);
            }
        });
        Terminal {
            child,
            master,
            seen,
        }
    }

    /// Types `bytes` on the terminal.
    pub fn send(&mut self, bytes: &str) {
        self.master
            .write_all(bytes.as_bytes())
            .expect("write to the pty");
    }

    /// Waits (up to 20 s) until the output after `from` contains `want`; returns the output.
    pub fn expect(&self, from: usize, want: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let all = self.output();
            if all.get(from..).is_some_and(|s| s.contains(want)) {
                return all;
            }
            assert!(
                Instant::now() < deadline,
                "`{want}` did not appear; the terminal shows:\n{all}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Everything the terminal has shown so far.
    pub fn output(&self) -> String {
        self.seen.lock().expect("lock").clone()
    }

    /// How many bytes the terminal has shown so far.
    pub fn len(&self) -> usize {
        self.seen.lock().expect("lock").len()
    }

    /// Waits up to `bound` for the child to exit (killing it after that, and failing).
    pub fn wait(&mut self, bound: Duration) -> ExitStatus {
        let deadline = Instant::now() + bound;
        loop {
            if let Some(s) = self.child.try_wait().expect("try_wait") {
                return s;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "still running after {bound:?}, killed; the terminal shows:\n{}",
                    self.output()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
