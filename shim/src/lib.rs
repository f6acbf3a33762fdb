//! The reaper shim library: the Task service, the process reaper, stdio and events for host processes.
