//! Integration tests: drive the built `containerd-shim-reaper-v2` over ttrpc like containerd does
//! (start handshake, Task v2/v3, events to a recorder), and check real processes.

mod support;

mod faults;
mod handshake;
mod lifecycle;
mod pause;
mod sandbox;
mod stdio;
mod tasks;
