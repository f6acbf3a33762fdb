//! The Task layer in process: Create/Start/State/Wait/Kill/Delete of inits and execs, Pids,
//! Shutdown, and the error codes containerd acts on.

use std::sync::Arc;

use containerd_shim_protos::api::{
    DeleteRequest, DeleteResponse, ExecProcessRequest, PidsRequest, ShutdownRequest, StateRequest,
    Status as ApiStatus, WaitRequest,
};
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::Message;
use containerd_shim_protos::shim::oci::ProcessDetails;
use containerd_shim_protos::topics::{
    TASK_CREATE_EVENT_TOPIC as CREATE, TASK_DELETE_EVENT_TOPIC as DELETE,
    TASK_EXEC_ADDED_EVENT_TOPIC as EXEC_ADDED, TASK_EXEC_STARTED_EVENT_TOPIC as EXEC_STARTED,
    TASK_EXIT_EVENT_TOPIC as EXIT, TASK_START_EVENT_TOPIC as START,
};
use ttrpc::Code;

use super::{bounded, process_json, start, Fixture};
use crate::error::Result;

fn delete_req(id: &str, exec: &str) -> DeleteRequest {
    DeleteRequest {
        id: id.into(),
        exec_id: exec.into(),
        ..Default::default()
    }
}

async fn delete(fx: &Fixture, id: &str, exec: &str) -> Result<DeleteResponse> {
    fx.shim.task_delete(delete_req(id, exec)).await
}

fn exec_req(id: &str, exec: &str, args: &[&str]) -> ExecProcessRequest {
    let spec = Any {
        type_url: "types.containerd.io/opencontainers/runtime-spec/1/Process".into(),
        value: serde_json::to_vec(&process_json(args)).expect("process json"),
        ..Default::default()
    };
    ExecProcessRequest {
        id: id.into(),
        exec_id: exec.into(),
        spec: Some(spec).into(),
        ..Default::default()
    }
}

fn shutdown(id: &str) -> ShutdownRequest {
    ShutdownRequest {
        id: id.into(),
        ..Default::default()
    }
}

fn code<T: std::fmt::Debug>(r: Result<T>) -> Code {
    r.expect_err("an error").code()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_init_goes_created_running_stopped_with_its_exit_status() {
    let fx = Fixture::new();
    let req = fx.create_req("c1", &["sh", "-c", "exit 3"]);
    let pid = fx.shim.task_create(req).await.expect("create").pid;
    assert!(pid > 0);
    let st = fx.state("c1", "").await;
    assert_eq!((st.status(), st.pid), (ApiStatus::CREATED, pid));
    let started = fx.shim.task_start(start("c1", "")).await.expect("start");
    assert_eq!(started.pid, pid);
    let w = fx.wait("c1", "").await;
    assert_eq!(w.exit_status, 3);
    let st = fx.state("c1", "").await;
    assert_eq!((st.status(), st.exit_status), (ApiStatus::STOPPED, 3));
    assert!(st.exited_at.seconds > 0);
    let exit = fx.events.wait_for("c1", EXIT, "c1").await;
    assert_eq!((exit.pid, exit.status), (pid, 3));
    let d = delete(&fx, "c1", "").await.expect("delete");
    assert_eq!((d.pid, d.exit_status), (pid, 3));
    let c1 = |t: &'static str, s: u32| (t, "c1".to_string(), s);
    assert_eq!(
        fx.events.of("c1"),
        [c1(CREATE, 0), c1(START, 0), c1(EXIT, 3), c1(DELETE, 3)],
        "one event per step, in order"
    );
    assert_eq!(
        code(fx.shim.task_state(state_of("c1", "")).await),
        Code::NOT_FOUND
    );
    assert_eq!(fx.shim.count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_ends_a_running_init_with_137_and_only_then_it_may_be_deleted() {
    let fx = Fixture::new();
    let pid = fx.run("c1", &["sleep", "30"]).await;
    assert_eq!(fx.state("c1", "").await.status(), ApiStatus::RUNNING);
    let e = delete(&fx, "c1", "")
        .await
        .expect_err("delete of a running init");
    assert_eq!(e.code(), Code::FAILED_PRECONDITION, "{e}");
    assert_eq!(code(fx.kill("c1", "", 0).await), Code::INVALID_ARGUMENT);
    assert_eq!(code(fx.kill("c1", "", 65).await), Code::INVALID_ARGUMENT);
    assert_eq!(
        fx.state("c1", "").await.status(),
        ApiStatus::RUNNING,
        "refused requests leave it running"
    );
    fx.kill("c1", "", libc::SIGKILL).await.expect("kill");
    assert_eq!(fx.wait("c1", "").await.exit_status, 137);
    let st = fx.state("c1", "").await;
    assert_eq!((st.status(), st.exit_status), (ApiStatus::STOPPED, 137));
    let again = fx.kill("c1", "", libc::SIGKILL).await;
    assert_eq!(code(again), Code::NOT_FOUND, "no signal to a reaped pid");
    let d = delete(&fx, "c1", "").await.expect("delete");
    assert_eq!((d.pid, d.exit_status), (pid, 137));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_containers_and_processes_are_not_found() {
    let fx = Fixture::new();
    let s = &fx.shim;
    assert_eq!(code(s.task_start(start("nope", "")).await), Code::NOT_FOUND);
    let w = s.task_wait(WaitRequest {
        id: "nope".into(),
        ..Default::default()
    });
    assert_eq!(code(w.await), Code::NOT_FOUND);
    assert_eq!(
        code(fx.kill("nope", "", libc::SIGTERM).await),
        Code::NOT_FOUND
    );
    assert_eq!(code(delete(&fx, "nope", "").await), Code::NOT_FOUND);
    let pids = s.task_pids(PidsRequest {
        id: "nope".into(),
        ..Default::default()
    });
    assert_eq!(code(pids.await), Code::NOT_FOUND);
    let exec = s.task_exec(exec_req("nope", "e1", &["true"])).await;
    assert_eq!(code(exec), Code::NOT_FOUND);
    fx.run("c1", &["sleep", "30"]).await;
    assert_eq!(code(s.task_start(start("c1", "e9")).await), Code::NOT_FOUND);
    assert_eq!(
        code(fx.kill("c1", "e9", libc::SIGTERM).await),
        Code::NOT_FOUND
    );
    assert_eq!(code(delete(&fx, "c1", "e9").await), Code::NOT_FOUND);
    let bad = s.task_create(fx.create_req("a/b", &["true"])).await;
    assert_eq!(code(bad), Code::INVALID_ARGUMENT);
    fx.kill("c1", "", libc::SIGKILL).await.expect("kill");
    assert_eq!(fx.wait("c1", "").await.exit_status, 137);
    delete(&fx, "c1", "").await.expect("delete");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_create_of_an_id_already_exists_and_leaves_the_first() {
    let fx = Fixture::new();
    let first = fx
        .shim
        .task_create(fx.create_req("c1", &["sleep", "30"]))
        .await;
    let pid = first.expect("create").pid;
    let second = fx.shim.task_create(fx.create_req("c1", &["true"])).await;
    assert_eq!(code(second), Code::ALREADY_EXISTS);
    let st = fx.state("c1", "").await;
    assert_eq!((st.status(), st.pid), (ApiStatus::CREATED, pid));
    // A Delete of a never-started init ends it: 137, as containerd's runc shim reports.
    let d = delete(&fx, "c1", "").await.expect("delete");
    assert_eq!((d.pid, d.exit_status), (pid, 137));
    assert_eq!(
        fx.events.of("c1").len(),
        2,
        "create and delete, no start or exit"
    );
    fx.run("c1", &["true"]).await;
    assert_eq!(
        fx.wait("c1", "").await.exit_status,
        0,
        "the id is free again"
    );
    delete(&fx, "c1", "").await.expect("delete");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exec_runs_beside_its_init_and_reports_its_own_exit() {
    let fx = Fixture::new();
    let s = &fx.shim;
    fx.run("c1", &["sleep", "30"]).await;
    s.task_exec(exec_req("c1", "e1", &["sh", "-c", "exit 5"]))
        .await
        .expect("exec");
    fx.events.wait_for("c1", EXEC_ADDED, "e1").await;
    assert_eq!(fx.state("c1", "e1").await.status(), ApiStatus::CREATED);
    let early = fx.kill("c1", "e1", libc::SIGTERM).await;
    assert_eq!(
        code(early),
        Code::FAILED_PRECONDITION,
        "kill of an unstarted exec"
    );
    let dup = s.task_exec(exec_req("c1", "e1", &["true"])).await;
    assert_eq!(code(dup), Code::ALREADY_EXISTS);
    let pid = s.task_start(start("c1", "e1")).await.expect("start").pid;
    assert_eq!(fx.events.wait_for("c1", EXEC_STARTED, "e1").await.pid, pid);
    assert_eq!(fx.wait("c1", "e1").await.exit_status, 5);
    assert_eq!(fx.events.wait_for("c1", EXIT, "e1").await.status, 5);
    assert_eq!(fx.state("c1", "").await.status(), ApiStatus::RUNNING);
    let d = delete(&fx, "c1", "e1").await.expect("delete exec");
    assert_eq!((d.pid, d.exit_status), (pid, 5));
    assert_eq!(
        code(fx.shim.task_state(state_of("c1", "e1")).await),
        Code::NOT_FOUND
    );
    fx.kill("c1", "", libc::SIGKILL).await.expect("kill");
    fx.wait("c1", "").await;
    let late = s.task_exec(exec_req("c1", "e2", &["true"])).await;
    assert_eq!(
        code(late),
        Code::FAILED_PRECONDITION,
        "exec in a stopped task"
    );
    delete(&fx, "c1", "").await.expect("delete");
}

fn state_of(id: &str, exec: &str) -> StateRequest {
    StateRequest {
        id: id.into(),
        exec_id: exec.into(),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pids_name_the_execs_and_a_running_exec_dies_with_its_init() {
    let fx = Fixture::new();
    let init = fx.run("c1", &["sleep", "30"]).await;
    let s = &fx.shim;
    s.task_exec(exec_req("c1", "e1", &["sleep", "30"]))
        .await
        .expect("exec");
    let exec = s.task_start(start("c1", "e1")).await.expect("start").pid;
    let req = PidsRequest {
        id: "c1".into(),
        ..Default::default()
    };
    let pids = s.task_pids(req).await.expect("pids");
    let mut listed: Vec<(u32, String)> = pids
        .processes
        .iter()
        .map(|p| {
            let details = p
                .info
                .as_ref()
                .map(|a| ProcessDetails::parse_from_bytes(&a.value).expect("ProcessDetails"));
            (p.pid, details.map(|d| d.exec_id).unwrap_or_default())
        })
        .collect();
    listed.sort();
    let mut want = vec![(init, String::new()), (exec, "e1".to_string())];
    want.sort();
    assert_eq!(listed, want);
    fx.kill("c1", "", libc::SIGKILL).await.expect("kill init");
    assert_eq!(
        fx.wait("c1", "e1").await.exit_status,
        137,
        "killed with init"
    );
    assert_eq!(fx.wait("c1", "").await.exit_status, 137);
    fx.events.wait_for("c1", EXIT, "c1").await;
    let exits: Vec<String> = fx
        .events
        .of("c1")
        .into_iter()
        .filter(|e| e.0 == EXIT)
        .map(|e| e.1)
        .collect();
    assert_eq!(exits, ["e1", "c1"], "init's exit is the task's last");
    delete(&fx, "c1", "").await.expect("delete");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exits_of_concurrent_tasks_reach_their_own_waiters() {
    let fx = Arc::new(Fixture::new());
    let mut set = tokio::task::JoinSet::new();
    for n in 1..=8u32 {
        let fx = fx.clone();
        set.spawn(async move {
            let id = format!("c{n}");
            let script = format!("exit {n}");
            fx.run(&id, &["sh", "-c", &script]).await;
            (n, fx.wait(&id, "").await.exit_status)
        });
    }
    while let Some(r) = bounded("the waits", set.join_next()).await {
        let (n, status) = r.expect("task");
        assert_eq!(status, n, "c{n} got its own exit");
        delete(&fx, &format!("c{n}"), "").await.expect("delete");
    }
    assert_eq!(fx.shim.count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_with_containers_left_keeps_the_server_and_the_last_one_ends_it() {
    let fx = Fixture::new();
    let exit = fx.shim.exit.subscribe();
    fx.run("a", &["sleep", "30"]).await;
    fx.run("b", &["sleep", "30"]).await;
    fx.shim
        .task_shutdown(shutdown("a"))
        .await
        .expect("shutdown");
    assert!(!*exit.borrow(), "two containers left");
    for (id, left) in [("a", 1), ("b", 0)] {
        fx.kill(id, "", libc::SIGKILL).await.expect("kill");
        fx.wait(id, "").await;
        delete(&fx, id, "").await.expect("delete");
        assert_eq!(fx.shim.count(), left);
        fx.shim.task_shutdown(shutdown(id)).await.expect("shutdown");
        assert_eq!(*exit.borrow(), left == 0, "exit requested with {left} left");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_now_ends_the_server_and_its_tasks_are_killed() {
    let fx = Fixture::new();
    let exit = fx.shim.exit.subscribe();
    let pid = fx.run("a", &["sleep", "30"]).await;
    let req = ShutdownRequest {
        id: "a".into(),
        now: true,
        ..Default::default()
    };
    fx.shim.task_shutdown(req).await.expect("shutdown");
    assert!(*exit.borrow(), "now: exit whatever is left");
    // What the server does next (service::run_server): kill every task left.
    bounded("kill_all_tasks", fx.shim.kill_all_tasks()).await;
    assert_eq!(fx.shim.count(), 0);
    let ev = fx.events.wait_for("a", EXIT, "a").await;
    assert_eq!((ev.pid, ev.status), (pid, 137));
}
