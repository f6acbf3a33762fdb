//! Security checks of the mock containerd (issue 6): ids that would escape a directory are
//! refused, by name, before anything is created on disk.

use std::path::Path;

use harness::bundle::{process, Bundle, BundleOptions};
use harness::error::HarnessError;
use harness::stdio::{StdioMode, StdioOptions, StdioSet};

/// Ids that would leave the bundle or FIFO directory, or name it itself.
const ESCAPING: &[&str] = &["../x", "a/b", "..", "", "/abs", "x/../../y"];

/// Every entry under `dir`, recursively, as paths relative to it (sorted).
fn tree(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).expect("read_dir").flatten() {
            let p = e.path();
            out.push(p.strip_prefix(dir).unwrap().display().to_string());
            if p.is_dir() && !p.is_symlink() {
                todo.push(p);
            }
        }
    }
    out.sort();
    out
}

fn assert_names_id(e: &HarnessError, id: &str) {
    let msg = e.to_string();
    assert!(
        matches!(e, HarnessError::Invalid { .. }),
        "id {id:?}: want an Invalid error, got {e:?}"
    );
    assert!(msg.contains(&format!("{id:?}")), "id {id:?}: {msg}");
}

#[test]
fn bundle_create_refuses_escaping_ids_by_name_and_creates_nothing() {
    let root = tempfile::tempdir().unwrap();
    let parent = root.path().join("a").join("bundles");
    std::fs::create_dir_all(&parent).unwrap();
    let before = tree(root.path());
    for id in ESCAPING {
        let e = Bundle::create(&parent, id, process(&["true"]), BundleOptions::default())
            .expect_err(id);
        if id.is_empty() {
            assert!(e.to_string().contains("must not be empty"), "{e}");
        } else {
            assert_names_id(&e, id);
        }
        assert_eq!(tree(root.path()), before, "id {id:?} created something");
    }
    // The same parent takes a plain id.
    let b = Bundle::create(
        &parent,
        "ok-1",
        process(&["true"]),
        BundleOptions::default(),
    )
    .expect("plain id");
    assert_eq!(b.path(), parent.join("ok-1"));
    assert!(b.path().join("config.json").is_file());
}

#[tokio::test]
async fn stdio_create_refuses_escaping_ids_by_name_and_creates_nothing() {
    let root = tempfile::tempdir().unwrap();
    let fifo_dir = root.path().join("state").join("fifo");
    std::fs::create_dir_all(&fifo_dir).unwrap();
    let before = tree(root.path());
    let opts = || StdioOptions {
        stdin: StdioMode::Null,
        ..Default::default()
    };
    for id in ESCAPING {
        let e = StdioSet::create(&fifo_dir, id, opts())
            .err()
            .unwrap_or_else(|| panic!("id {id:?} was accepted"));
        assert_names_id(&e, id);
        assert_eq!(tree(root.path()), before, "id {id:?} created something");
    }
    let ok = StdioSet::create(&fifo_dir, "c1-e1", opts()).expect("plain id");
    let (_, out, _) = ok.paths();
    assert_eq!(Path::new(&out).parent(), Some(fifo_dir.as_path()), "{out}");
}
