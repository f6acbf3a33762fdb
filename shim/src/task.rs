//! The ttrpc adapter: `containerd.task.v2.Task` / `v3.Task` methods, each one logging and calling
//! the inherent `task_*` layer (`api.rs`, `ops.rs`). Every method is overridden: the generated defaults
//! answer NOT_FOUND, which containerd would misread; unsupported RPCs answer UNIMPLEMENTED.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use containerd_shim_protos::api::*;
use containerd_shim_protos::protobuf::well_known_types::empty::Empty;
use containerd_shim_protos::shim_async::{create_task, Task};
use ttrpc::asynchronous::{Service, TtrpcContext};

use crate::api::Shim;
use crate::error::Error;

/// The Task service over a shared [`Shim`].
#[derive(Clone)]
pub struct TaskService {
    /// The state and logic.
    pub shim: Arc<Shim>,
}

/// The v3 service name the generated code registers.
pub const TASK_V3: &str = "containerd.task.v3.Task";
/// The v2 name containerd 1.6/1.7 call.
pub const TASK_V2: &str = "containerd.task.v2.Task";

/// Both Task service names mapped to the same implementation, and the Sandbox service.
pub fn services(svc: TaskService) -> HashMap<String, Service> {
    let mut all = create_task(Arc::new(svc.clone()));
    let sandbox = crate::sandbox::SandboxService {
        shim: svc.shim.clone(),
    };
    if let Some(v2) = create_task(Arc::new(svc)).remove(TASK_V3) {
        all.insert(TASK_V2.to_string(), v2);
    }
    all.extend(crate::sandbox::services(sandbox));
    all
}

type R<T> = ttrpc::Result<T>;

fn empty(r: crate::error::Result<()>) -> R<Empty> {
    r.map(|_| Empty::new()).map_err(Into::into)
}

impl TaskService {
    fn unsupported(&self, what: &str, why: &str) -> ttrpc::Error {
        if self.shim.faults.notfound_for_unimplemented {
            return Error::NotFound(format!("{what} is not supported")).into();
        }
        Error::Unimplemented(format!("{what}: {why}")).into()
    }
}

#[async_trait]
impl Task for TaskService {
    async fn state(&self, _c: &TtrpcContext, r: StateRequest) -> R<StateResponse> {
        tracing::debug!(id = r.id, exec = r.exec_id, "state");
        self.shim.task_state(r).await.map_err(Into::into)
    }

    async fn create(&self, _c: &TtrpcContext, r: CreateTaskRequest) -> R<CreateTaskResponse> {
        tracing::info!(id = r.id, bundle = r.bundle, "create");
        let res = self.shim.task_create(r).await;
        if let Err(e) = &res {
            tracing::warn!("create: {e}");
        }
        res.map_err(Into::into)
    }

    async fn start(&self, _c: &TtrpcContext, r: StartRequest) -> R<StartResponse> {
        tracing::info!(id = r.id, exec = r.exec_id, "start");
        self.shim.task_start(r).await.map_err(Into::into)
    }

    async fn delete(&self, _c: &TtrpcContext, r: DeleteRequest) -> R<DeleteResponse> {
        tracing::info!(id = r.id, exec = r.exec_id, "delete");
        self.shim.task_delete(r).await.map_err(Into::into)
    }

    async fn pids(&self, _c: &TtrpcContext, r: PidsRequest) -> R<PidsResponse> {
        tracing::debug!(id = r.id, "pids");
        self.shim.task_pids(r).await.map_err(Into::into)
    }

    async fn pause(&self, _c: &TtrpcContext, r: PauseRequest) -> R<Empty> {
        tracing::info!(id = r.id, "pause");
        empty(self.shim.task_pause(&r.id).await)
    }

    async fn resume(&self, _c: &TtrpcContext, r: ResumeRequest) -> R<Empty> {
        tracing::info!(id = r.id, "resume");
        empty(self.shim.task_resume(&r.id).await)
    }

    async fn checkpoint(&self, _c: &TtrpcContext, r: CheckpointTaskRequest) -> R<Empty> {
        tracing::info!(id = r.id, "checkpoint");
        Err(self.unsupported(
            "checkpoint",
            "host processes have no container image to checkpoint (no CRIU support)",
        ))
    }

    async fn kill(&self, _c: &TtrpcContext, r: KillRequest) -> R<Empty> {
        tracing::info!(
            id = r.id,
            exec = r.exec_id,
            signal = r.signal,
            all = r.all,
            "kill"
        );
        empty(self.shim.task_kill(r).await)
    }

    async fn exec(&self, _c: &TtrpcContext, r: ExecProcessRequest) -> R<Empty> {
        tracing::info!(id = r.id, exec = r.exec_id, "exec");
        empty(self.shim.task_exec(r).await)
    }

    async fn resize_pty(&self, _c: &TtrpcContext, r: ResizePtyRequest) -> R<Empty> {
        tracing::debug!(id = r.id, exec = r.exec_id, "resize_pty");
        empty(self.shim.task_resize_pty(r).await)
    }

    async fn close_io(&self, _c: &TtrpcContext, r: CloseIORequest) -> R<Empty> {
        tracing::debug!(id = r.id, exec = r.exec_id, "close_io");
        empty(self.shim.task_close_io(r).await)
    }

    async fn update(&self, _c: &TtrpcContext, r: UpdateTaskRequest) -> R<Empty> {
        tracing::info!(id = r.id, "update");
        Err(self.unsupported(
            "update",
            "resource updates need a resource-managed container; host tasks run unconstrained",
        ))
    }

    async fn wait(&self, _c: &TtrpcContext, r: WaitRequest) -> R<WaitResponse> {
        tracing::debug!(id = r.id, exec = r.exec_id, "wait");
        self.shim.task_wait(r).await.map_err(Into::into)
    }

    async fn stats(&self, _c: &TtrpcContext, r: StatsRequest) -> R<StatsResponse> {
        tracing::debug!(id = r.id, "stats");
        self.shim.task_stats(r).await.map_err(Into::into)
    }

    async fn connect(&self, c: &TtrpcContext, r: ConnectRequest) -> R<ConnectResponse> {
        if c.metadata.contains_key(crate::group::JOIN_METADATA) {
            tracing::info!(id = r.id, "join");
            return self.shim.task_join(r).await.map_err(Into::into);
        }
        tracing::debug!(id = r.id, "connect");
        self.shim.task_connect(r).await.map_err(Into::into)
    }

    async fn shutdown(&self, _c: &TtrpcContext, r: ShutdownRequest) -> R<Empty> {
        tracing::info!(id = r.id, now = r.now, "shutdown");
        empty(self.shim.task_shutdown(r).await)
    }
}
