//! Unit tests of `leaks`.

use super::*;
use std::os::unix::process::CommandExt;

#[test]
fn finds_the_listener_of_a_socket_by_inode() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("s.sock");
    let l = std::os::unix::net::UnixListener::bind(&path).unwrap();
    let inodes = unix_socket_inodes(path.to_str().unwrap());
    assert!(!inodes.is_empty(), "listener not in /proc/net/unix");
    // This process is excluded on purpose (the harness never kills itself).
    assert!(socket_owners(&format!("unix://{}", path.display())).is_empty());
    drop(l);
}

#[test]
fn socket_owner_found_in_another_process_and_filtered_by_start_time() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("o.sock");
    let l = std::os::unix::net::UnixListener::bind(&path).unwrap();
    // Hand the listening socket to a child as its stdin: the child now holds the inode.
    let fd: std::os::fd::OwnedFd = l.into();
    let mut child = std::process::Command::new("sleep")
        .arg("30")
        .process_group(0)
        .stdin(std::process::Stdio::from(fd))
        .spawn()
        .unwrap();
    let pid = child.id() as i32;
    let addr = format!("unix://{}", path.display());
    let owners = socket_owners(&addr);
    let started = proc_info(pid).unwrap().starttime;
    let since_before = socket_owners_since(&addr, started);
    let since_after = socket_owners_since(&addr, started + 1);
    assert!(end_found(pid, Duration::from_secs(2)));
    child.wait().unwrap();
    assert_eq!(owners, vec![pid]);
    assert_eq!(since_before, vec![pid]);
    assert!(since_after.is_empty());
}

#[test]
fn descendants_and_process_info_of_a_real_child() {
    let mut child = std::process::Command::new("sleep")
        .arg("30")
        .process_group(0)
        .spawn()
        .unwrap();
    let me = std::process::id() as i32;
    let d = crate::procfs::descendants(me, None);
    assert!(d
        .iter()
        .any(|p| p.pid == child.id() as i32 && p.comm == "sleep"));
    assert!(is_alive(child.id() as i32));
    assert!(end_found(child.id() as i32, Duration::from_secs(2)));
    child.wait().unwrap();
}

#[test]
fn a_process_with_its_cwd_in_the_bundle_is_found() {
    let tmp = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new("sleep")
        .arg("30")
        .process_group(0)
        .current_dir(tmp.path())
        .spawn()
        .unwrap();
    let pid = child.id() as i32;
    let found = processes_using(tmp.path());
    let leaks = check_and_clean(&LeakScope {
        bundle: Some(tmp.path().to_path_buf()),
        ..Default::default()
    });
    child.wait().unwrap();
    assert!(found.iter().any(|(p, _)| p.pid == pid), "{found:?}");
    assert!(
        leaks
            .iter()
            .any(|l| l.kind == LeakKind::BundleInUse && l.pid == Some(pid) && l.cleaned),
        "{leaks:?}"
    );
}

#[test]
fn socket_owners_since_skips_processes_started_before() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("s.sock");
    let l = std::os::unix::net::UnixListener::bind(&path).unwrap();
    let fd: std::os::fd::OwnedFd = l.into();
    let before = PidMark::now();
    assert!(before.is_some(), "/proc tells no pid mark");
    let mut child = std::process::Command::new("sleep")
        .arg("30")
        .process_group(0)
        .stdin(std::process::Stdio::from(fd))
        .spawn()
        .unwrap();
    let pid = child.id() as i32;
    let start = proc_info(pid).unwrap().starttime;
    let inodes = unix_socket_inodes(path.to_str().unwrap());
    let all = pids_holding_sockets(&inodes);
    let newer = pids_holding_sockets_since(&inodes, start);
    let later = pids_holding_sockets_since(&inodes, start + 1);
    let addr = format!("unix://{}", path.display());
    let after = PidMark::now();
    let recent: Vec<i32> = processes_since(before).iter().map(|p| p.pid).collect();
    let later_ones: Vec<i32> = processes_since(after).iter().map(|p| p.pid).collect();
    // Found among the processes started since the mark before it, by the full scan without
    // a mark, and by the full scan after missing among those started since a later mark.
    let server = [
        socket_server_since(&addr, start, before),
        socket_server_since(&addr, start, None),
        socket_server_since(&addr, start, after),
        socket_server_since(&addr, start + 1, before),
    ];
    assert!(end_found(pid, Duration::from_secs(2)));
    child.wait().unwrap();
    assert_eq!((all, newer), (vec![pid], vec![pid]));
    assert!(later.is_empty());
    assert!(recent.contains(&pid), "{pid} not among {recent:?}");
    assert!(!later_ones.contains(&pid), "{pid} among {later_ones:?}");
    assert!(recent.len() < all_processes().len(), "{recent:?}");
    assert_eq!(server, [Some(pid), Some(pid), Some(pid), None]);
}

#[test]
fn processes_using_among_reads_only_the_candidates() {
    let tmp = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new("sleep")
        .arg("30")
        .process_group(0)
        .current_dir(tmp.path())
        .spawn()
        .unwrap();
    let pid = child.id() as i32;
    let info = proc_info(pid).unwrap();
    let with = processes_using_among(tmp.path(), vec![info]);
    let without = processes_using_among(tmp.path(), vec![]);
    assert!(end_found(pid, Duration::from_secs(2)));
    child.wait().unwrap();
    assert_eq!(with.len(), 1);
    assert_eq!(with[0].0.pid, pid);
    assert!(without.is_empty());
}

#[test]
fn addresses_are_found_in_json_output() {
    let j = r#"{"address":"unix:///run/containerd/s/abc","protocol":"ttrpc","version":3}"#;
    assert_eq!(
        addresses_in(j),
        vec!["unix:///run/containerd/s/abc".to_string()]
    );
    // A protobuf BootstrapResult read as text: tag bytes around the address.
    let pb = String::from_utf8_lossy(b"\x08\x03\x12\x1dunix:///run/containerd/s/abc\x1a\x05ttrpc");
    assert_eq!(
        addresses_in(&pb),
        vec!["unix:///run/containerd/s/abc".to_string()]
    );
    assert_eq!(unescape_mountinfo(r"/a\040b"), "/a b");
}
