//! The reaper shim library: the Task and Sandbox services, the process reaper, stdio and events for host
//! processes (containerd runtime `io.containerd.reaper.v2`).

pub mod api;
pub mod cgroup;
pub mod container;
pub mod error;
pub mod events;
pub mod faults;
pub mod flags;
pub mod group;
pub mod io;
pub mod logging;
pub mod ops;
pub mod pod;
pub mod process;
pub mod pty;
pub mod reaper;
pub mod sandbox;
pub mod service;
pub mod spec;
pub mod sys;
pub mod task;
#[cfg(test)]
mod tests;
pub mod wirefault;
