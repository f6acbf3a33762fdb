//! The smoke test's end: StopContainer, the removals, the clean-up after a failure, and the
//! check that nothing of the pod remains (CRI's lists, processes, cgroups, mounts).

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use k8s_cri::v1 as cri;

use super::{bounded, req, Container, Smoke};
use crate::cri::checks::{cgroups_named, short};
use crate::procfs;

impl Smoke<'_> {
    /// StopContainer with a grace period: SIGTERM, SIGKILL once it has passed.
    pub(super) async fn stop(&mut self, c: &Container, grace: Duration) -> Option<()> {
        let t0 = Instant::now();
        let msg = cri::StopContainerRequest {
            container_id: c.id.clone(),
            timeout: grace.as_secs().max(1) as i64,
        };
        let r = bounded(
            grace + self.cfg.timeout,
            self.client.stop_container(req(self.cfg, msg)),
        )
        .await
        .map(|_| {
            (
                (),
                format!("grace period {}", humantime::format_duration(grace)),
            )
        });
        self.record(format!("stop-container {}", c.name), t0, r)
    }

    pub(super) async fn remove(&mut self, c: Container) -> Option<()> {
        let t0 = Instant::now();
        let msg = cri::RemoveContainerRequest {
            container_id: c.id.clone(),
        };
        let r = bounded(
            self.cfg.timeout,
            self.client.remove_container(req(self.cfg, msg)),
        )
        .await;
        self.record(
            format!("remove-container {}", c.name),
            t0,
            r.map(|_| ((), String::new())),
        )
    }

    pub(super) async fn stop_pod(&mut self) -> Option<()> {
        let id = self.pod.clone()?;
        let t0 = Instant::now();
        let msg = cri::StopPodSandboxRequest { pod_sandbox_id: id };
        let r = bounded(
            self.cfg.timeout,
            self.client.stop_pod_sandbox(req(self.cfg, msg)),
        )
        .await;
        self.record(
            "stop-pod-sandbox".into(),
            t0,
            r.map(|_| ((), String::new())),
        )
    }

    pub(super) async fn remove_pod(&mut self) -> Option<()> {
        let id = self.pod.clone()?;
        let t0 = Instant::now();
        let msg = cri::RemovePodSandboxRequest { pod_sandbox_id: id };
        let r = bounded(
            self.cfg.timeout,
            self.client.remove_pod_sandbox(req(self.cfg, msg)),
        )
        .await;
        let done = self.record(
            "remove-pod-sandbox".into(),
            t0,
            r.map(|_| ((), String::new())),
        );
        if done.is_some() {
            self.pod = None;
        }
        done
    }

    /// After a failure: stop and remove the pod (which removes its containers); then, always,
    /// check that nothing of the pod remains.
    pub(super) async fn clean_up(&mut self) {
        if self.pod.is_some() && self.stop_pod().await.is_some() {
            let _ = self.remove_pod().await;
        }
        let t0 = Instant::now();
        let r = self.leftovers().await.map(|d| ((), d));
        self.record("nothing-left".into(), t0, r);
    }

    /// Nothing of the pod in CRI's lists, no process of its containers or naming its ids, no
    /// cgroup or mount naming them; the shim may take a moment to exit after RemovePodSandbox.
    async fn leftovers(&mut self) -> Result<String> {
        let Some(pod) = self.created_pod.clone() else {
            return Ok("no pod was created".into());
        };
        let msg = cri::ListPodSandboxRequest {
            filter: Some(cri::PodSandboxFilter {
                id: pod.clone(),
                ..Default::default()
            }),
        };
        let pods = bounded(
            self.cfg.timeout,
            self.client.list_pod_sandbox(req(self.cfg, msg)),
        )
        .await
        .context("ListPodSandbox")?;
        let msg = cri::ListContainersRequest {
            filter: Some(cri::ContainerFilter {
                pod_sandbox_id: pod.clone(),
                ..Default::default()
            }),
        };
        let ctrs = bounded(
            self.cfg.timeout,
            self.client.list_containers(req(self.cfg, msg)),
        )
        .await
        .context("ListContainers")?;
        let mut left = Vec::new();
        left.extend(
            pods.items
                .iter()
                .map(|p| format!("pod {} (state {})", short(&p.id), p.state)),
        );
        left.extend(
            ctrs.containers
                .iter()
                .map(|c| format!("container {}", short(&c.id))),
        );
        let end = Instant::now() + self.cfg.timeout;
        let host = loop {
            let host = self.host_leftovers(&pod);
            if host.is_empty() || Instant::now() >= end {
                break host;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        left.extend(host);
        if left.is_empty() {
            Ok("no pod, container, process, cgroup or mount of the pod remains".into())
        } else {
            bail!("left behind: {}", left.join("; "))
        }
    }

    /// Processes, cgroups and mounts of the pod on this host.
    fn host_leftovers(&self, pod: &str) -> Vec<String> {
        let mut ids = vec![pod.to_string()];
        ids.extend(self.created.iter().cloned());
        let mut left = Vec::new();
        for (pid, start, name) in &self.pids {
            if matches!(procfs::proc_info(*pid), Some(p) if p.starttime == *start && p.state != 'Z')
            {
                left.push(format!("process {pid} of container {name}"));
            }
        }
        for p in procfs::processes_since(self.mark) {
            let argv = procfs::argv(p.pid);
            if ids
                .iter()
                .any(|id| argv.iter().any(|a| a.contains(id.as_str())))
            {
                left.push(format!("process {} `{}`", p.pid, argv.join(" ")));
            }
        }
        left.extend(cgroups_named(Path::new("/sys/fs/cgroup"), &ids, 4));
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        for line in mounts.lines() {
            if ids.iter().any(|id| line.contains(id.as_str())) {
                let point = line.split(' ').nth(4).unwrap_or(line);
                left.push(format!("mount {point}"));
            }
        }
        left
    }
}
