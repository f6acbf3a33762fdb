//! Joining a group's running server: the `start` of a container that reuses a live server first
//! reserves its place with a `Connect` carrying [`JOIN_METADATA`], so that the server cannot
//! exit between that `start` and the container's `Create`. The exit decision and the
//! reservations are taken under one lock; once the server has decided to exit it refuses to be
//! joined, and the joining `start` binds a server of its own instead.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// ttrpc metadata key a joining `start` sets on its `Connect`.
pub const JOIN_METADATA: &str = "io.containerd.reaper.v2.join";

/// How long a reservation holds the server open without its `Create`.
pub const RESERVATION_TTL: Duration = Duration::from_secs(30);

#[derive(Default)]
struct Inner {
    exiting: bool,
    shutdown_requested: bool,
    pod_shutdown: bool,
    pending: HashMap<String, Instant>,
}

/// The server's membership book: reservations of joining containers and the exit decision.
#[derive(Default)]
pub struct Membership {
    inner: Mutex<Inner>,
}

impl Membership {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reserves a place for container `id`; `false` once the server has decided to exit.
    pub fn reserve(&self, id: &str) -> bool {
        let mut g = self.lock();
        if g.exiting {
            return false;
        }
        g.pending
            .insert(id.to_string(), Instant::now() + RESERVATION_TTL);
        true
    }

    /// The `Create` of `id` arrived (whatever its outcome): its reservation is used up.
    pub fn arrived(&self, id: &str) {
        self.lock().pending.remove(id);
    }

    /// Whether the server has decided to exit.
    pub fn exiting(&self) -> bool {
        self.lock().exiting
    }

    /// A Shutdown for container `id` (containerd sends one when it is done with a container,
    /// also after a failed Create) asks whether the server may exit now: it may when it serves
    /// no container and no other reservation is live, or when `now` is set. `id`'s own
    /// reservation ends with its Shutdown. Deciding to exit is final: later joins are refused.
    /// Otherwise the request is remembered, so that the expiry of the last reservation can
    /// finish it.
    pub fn try_exit(&self, id: &str, containers: usize, now: bool) -> bool {
        let mut g = self.lock();
        g.pending.remove(id);
        let t = Instant::now();
        g.pending.retain(|_, until| *until > t);
        if now || (containers == 0 && g.pending.is_empty()) {
            g.exiting = true;
        } else {
            g.shutdown_requested = true;
        }
        g.exiting
    }

    /// A ShutdownSandbox for pod `id`: as [`Membership::try_exit`], and when containers remain
    /// the last one's Delete finishes it ([`Membership::after_delete`]): containerd 2.x sends no
    /// task Shutdown after deleting a container of a pod served at version 3 (`shimTask.delete`
    /// in core/runtime/v2/shim.go at v2.1.9 and v2.3.4 leaves that to the sandbox controller).
    pub fn try_exit_pod(&self, id: &str, containers: usize, now: bool) -> bool {
        self.lock().pod_shutdown = true;
        self.try_exit(id, containers, now)
    }

    /// After a container's Delete: exit if a pod's ShutdownSandbox asked for it and nothing is
    /// left.
    pub fn after_delete(&self, containers: usize) -> bool {
        if !self.lock().pod_shutdown {
            return false;
        }
        self.try_exit("", containers, false)
    }

    /// After a reservation's lifetime: exit if a Shutdown was asked for and nothing is left.
    pub fn expire(&self, containers: usize) -> bool {
        if !self.lock().shutdown_requested {
            return false;
        }
        self.try_exit("", containers, false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pod_shutdown_is_finished_by_its_last_containers_delete() {
        let m = Membership::default();
        assert!(
            !m.after_delete(0),
            "no pod was shut down: a Delete never ends the server"
        );
        assert!(!m.try_exit_pod("pod", 1, false), "a container remains");
        assert!(!m.after_delete(1), "still one left");
        assert!(
            m.after_delete(0),
            "the last Delete finishes the pod's shutdown"
        );
        assert!(m.exiting());
    }

    #[test]
    fn a_reservation_keeps_the_server_until_its_create() {
        let m = Membership::default();
        assert!(m.reserve("b"));
        assert!(!m.try_exit("a", 0, false), "b is reserved: must not exit");
        m.arrived("b");
        assert!(!m.try_exit("a", 1, false), "b is served now");
        assert!(m.try_exit("b", 0, false), "nothing left");
        assert!(!m.reserve("c"), "an exiting server refuses joins");
        assert!(m.exiting());
    }

    #[test]
    fn now_exits_whatever_is_reserved_and_expiry_finishes_a_shutdown() {
        let m = Membership::default();
        assert!(m.reserve("b"));
        assert!(!m.expire(0), "no shutdown was asked for");
        assert!(!m.try_exit("a", 0, false));
        m.lock().pending.insert("b".into(), Instant::now());
        assert!(
            m.expire(0),
            "the reservation lapsed and a shutdown was pending"
        );
        let m = Membership::default();
        assert!(m.reserve("x"));
        assert!(m.try_exit("y", 3, true));
    }

    #[test]
    fn a_shutdown_for_the_reserved_id_gives_up_its_reservation() {
        let m = Membership::default();
        assert!(m.reserve("b"));
        assert!(m.try_exit("b", 0, false), "b's containerd is done with it");
    }
}
