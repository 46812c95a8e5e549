//! Startup, readiness and liveness probes.
//!
//! One task per running container runs its probes on their schedules and
//! reports only transitions (after `successThreshold` / `failureThreshold`
//! consecutive results) to the pod worker, which owns the consequences:
//! readiness drives `ready`, a failed liveness or startup probe restarts the
//! container.
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, ContainerPort, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tokio::net::TcpStream;
use tokio::sync::mpsc::UnboundedSender;

use crate::podman::{ExecOutcome, Podman};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeKind {
    Startup,
    Readiness,
    Liveness,
}

/// A probe's verdict changed.
#[derive(Debug, Clone)]
pub struct ProbeTransition {
    pub container_id: String,
    pub kind: ProbeKind,
    pub healthy: bool,
    pub message: String,
}

/// Where a container's probes connect and exec.
#[derive(Debug, Clone)]
pub struct ProbeTarget {
    pub container_id: String,
    pub pod_ip: String,
    pub ports: Vec<ContainerPort>,
}

/// Runs probes against containers.
#[derive(Debug, Clone)]
pub struct Prober {
    podman: Podman,
    http: reqwest::Client,
}

impl Prober {
    pub fn new(podman: Podman) -> Result<Self, reqwest::Error> {
        // Kubelet does not verify certificates of HTTPS probes, nor follow
        // redirects to other hosts; a redirect counts as success (< 400).
        let http = reqwest::Client::builder()
            .danger_accept_invalid_certs(true)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent("kube-probe/1.35")
            .build()?;
        Ok(Self { podman, http })
    }

    /// Runs `container`'s probes until the task is dropped.
    pub async fn watch(
        self,
        container: Container,
        target: ProbeTarget,
        transitions: UnboundedSender<ProbeTransition>,
    ) {
        let report = |kind, healthy, message: String| {
            // The worker is gone when this fails; the task is about to be dropped.
            let _ = transitions.send(ProbeTransition {
                container_id: target.container_id.clone(),
                kind,
                healthy,
                message,
            });
        };
        if let Some(startup) = &container.startup_probe {
            let mut schedule = Schedule::new(startup, false);
            schedule.initial_delay().await;
            loop {
                let outcome = self.probe_once(startup, &target).await;
                if let Some(healthy) = schedule.record(outcome.is_ok()) {
                    report(ProbeKind::Startup, healthy, message_of(&outcome));
                    if !healthy {
                        return;
                    }
                    break;
                }
                schedule.wait_period().await;
            }
        }
        let readiness = self.repeat(
            container.readiness_probe.as_ref(),
            &target,
            false,
            |h, m| report(ProbeKind::Readiness, h, m),
        );
        let liveness = self.repeat(container.liveness_probe.as_ref(), &target, true, |h, m| {
            report(ProbeKind::Liveness, h, m)
        });
        tokio::join!(readiness, liveness);
    }

    async fn repeat(
        &self,
        probe: Option<&Probe>,
        target: &ProbeTarget,
        initially_healthy: bool,
        report: impl Fn(bool, String),
    ) {
        let Some(probe) = probe else {
            return;
        };
        let mut schedule = Schedule::new(probe, initially_healthy);
        schedule.initial_delay().await;
        loop {
            let outcome = self.probe_once(probe, target).await;
            if let Some(healthy) = schedule.record(outcome.is_ok()) {
                report(healthy, message_of(&outcome));
            }
            schedule.wait_period().await;
        }
    }

    /// One probe run: `Err` carries why it failed.
    pub async fn probe_once(&self, probe: &Probe, target: &ProbeTarget) -> Result<(), String> {
        let timeout = seconds(probe.timeout_seconds, 1);
        if let Some(http) = &probe.http_get {
            let port = resolve_port(&http.port, &target.ports)?;
            let host = http.host.as_deref().unwrap_or(&target.pod_ip);
            let scheme = http.scheme.as_deref().unwrap_or("HTTP").to_lowercase();
            let path = http.path.as_deref().unwrap_or("/");
            let path = if path.starts_with('/') {
                path.to_owned()
            } else {
                format!("/{path}")
            };
            let url = format!("{scheme}://{host}:{port}{path}");
            let mut request = self.http.get(&url).timeout(timeout);
            for header in http.http_headers.iter().flatten() {
                request = request.header(&header.name, &header.value);
            }
            let response = request
                .send()
                .await
                .map_err(|e| format!("GET {url}: {e}"))?;
            let code = response.status().as_u16();
            return if (200..400).contains(&code) {
                Ok(())
            } else {
                Err(format!("HTTP probe failed with statuscode: {code}"))
            };
        }
        if let Some(tcp) = &probe.tcp_socket {
            let port = resolve_port(&tcp.port, &target.ports)?;
            let host = tcp.host.as_deref().unwrap_or(&target.pod_ip);
            let address = format!("{host}:{port}");
            return match tokio::time::timeout(timeout, TcpStream::connect(&address)).await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(err)) => Err(format!("dial tcp {address}: {err}")),
                Err(_) => Err(format!("dial tcp {address}: timeout after {timeout:?}")),
            };
        }
        if let Some(exec) = &probe.exec {
            let command = exec.command.clone().unwrap_or_default();
            return match self
                .podman
                .exec(&target.container_id, &command, timeout)
                .await
            {
                Ok(ExecOutcome::Exited(0)) => Ok(()),
                Ok(ExecOutcome::Exited(code)) => Err(format!("command exited with {code}")),
                Ok(ExecOutcome::TimedOut) => Err(format!("command timed out after {timeout:?}")),
                Err(err) => Err(err.to_string()),
            };
        }
        if probe.grpc.is_some() {
            return Err("gRPC probes are not supported by the test node agent".into());
        }
        Err("probe has no handler".into())
    }
}

/// A port given by number, or by the name of one of the container's ports.
pub fn resolve_port(port: &IntOrString, ports: &[ContainerPort]) -> Result<u16, String> {
    let number = match port {
        IntOrString::Int(number) => *number,
        IntOrString::String(name) => match ports.iter().find(|p| p.name.as_deref() == Some(name)) {
            Some(found) => found.container_port,
            None => name
                .parse()
                .map_err(|_| format!("couldn't find port {name:?} in the container's ports"))?,
        },
    };
    u16::try_from(number).map_err(|_| format!("invalid port number {number}"))
}

fn message_of(outcome: &Result<(), String>) -> String {
    outcome.as_ref().err().cloned().unwrap_or_default()
}

fn seconds(value: Option<i32>, default: u64) -> Duration {
    Duration::from_secs(value.map_or(default, |v| v.max(0) as u64))
}

/// The timing and threshold bookkeeping of one probe.
#[derive(Debug)]
struct Schedule {
    initial_delay: Duration,
    period: Duration,
    success_threshold: u32,
    failure_threshold: u32,
    healthy: Option<bool>,
    streak: u32,
    streak_healthy: bool,
}

impl Schedule {
    fn new(probe: &Probe, initially_healthy: bool) -> Self {
        let threshold =
            |value: Option<i32>, default: u32| value.map_or(default, |v| v.max(1) as u32);
        Self {
            initial_delay: seconds(probe.initial_delay_seconds, 0),
            period: seconds(probe.period_seconds, 10).max(Duration::from_secs(1)),
            success_threshold: threshold(probe.success_threshold, 1),
            failure_threshold: threshold(probe.failure_threshold, 3),
            healthy: initially_healthy.then_some(true),
            streak: 0,
            streak_healthy: initially_healthy,
        }
    }

    async fn initial_delay(&self) {
        tokio::time::sleep(self.initial_delay).await;
    }

    async fn wait_period(&self) {
        tokio::time::sleep(self.period).await;
    }

    /// Records one result; returns the new verdict when it changes.
    fn record(&mut self, success: bool) -> Option<bool> {
        if success == self.streak_healthy {
            self.streak += 1;
        } else {
            self.streak_healthy = success;
            self.streak = 1;
        }
        let threshold = if success {
            self.success_threshold
        } else {
            self.failure_threshold
        };
        if self.streak >= threshold && self.healthy != Some(success) {
            self.healthy = Some(success);
            return Some(success);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(yaml: &str) -> Probe {
        serde_yaml::from_str(yaml).unwrap()
    }

    #[test]
    fn thresholds_gate_transitions() {
        let mut readiness = Schedule::new(
            &probe("{successThreshold: 2, failureThreshold: 2, tcpSocket: {port: 1}}"),
            false,
        );
        assert_eq!(readiness.record(true), None);
        assert_eq!(readiness.record(true), Some(true));
        assert_eq!(readiness.record(true), None);
        assert_eq!(readiness.record(false), None);
        assert_eq!(readiness.record(true), None);
        assert_eq!(readiness.record(false), None);
        assert_eq!(readiness.record(false), Some(false));

        let mut liveness = Schedule::new(&probe("{tcpSocket: {port: 1}}"), true);
        assert_eq!(liveness.record(true), None, "starts healthy");
        assert_eq!(liveness.record(false), None);
        assert_eq!(liveness.record(false), None);
        assert_eq!(
            liveness.record(false),
            Some(false),
            "default failureThreshold is 3"
        );
    }

    #[test]
    fn ports_by_number_or_name() {
        let ports: Vec<ContainerPort> =
            serde_yaml::from_str("[{name: http, containerPort: 8080}]").unwrap();
        assert_eq!(resolve_port(&IntOrString::Int(9000), &ports), Ok(9000));
        assert_eq!(
            resolve_port(&IntOrString::String("http".into()), &ports),
            Ok(8080)
        );
        assert!(resolve_port(&IntOrString::String("metrics".into()), &ports).is_err());
    }

    #[tokio::test]
    async fn tcp_and_http_probes_against_a_local_server() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            loop {
                let (mut socket, _) = listener.accept().await.unwrap();
                let mut buffer = [0u8; 1024];
                let read = socket.read(&mut buffer).await.unwrap_or(0);
                let request = String::from_utf8_lossy(&buffer[..read]).to_string();
                let status = if request.starts_with("GET /healthz")
                    && request.contains("host: probe.test")
                {
                    "200 OK"
                } else {
                    "503 Service Unavailable"
                };
                let reply =
                    format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
                let _ = socket.write_all(reply.as_bytes()).await;
            }
        });
        let _ = rustls::crypto::ring::default_provider().install_default();
        let prober = Prober::new(Podman::new("podman")).unwrap();
        let target = ProbeTarget {
            container_id: "unused".into(),
            pod_ip: "127.0.0.1".into(),
            ports: serde_yaml::from_str(&format!("[{{name: web, containerPort: {port}}}]"))
                .unwrap(),
        };
        let http_ok = probe(
            "{httpGet: {path: /healthz, port: web, httpHeaders: [{name: Host, value: probe.test}]}}",
        );
        assert_eq!(prober.probe_once(&http_ok, &target).await, Ok(()));
        let http_bad = probe(&format!("{{httpGet: {{path: /other, port: {port}}}}}"));
        let failure = prober.probe_once(&http_bad, &target).await.unwrap_err();
        assert!(failure.contains("503"), "{failure}");
        let tcp = probe(&format!("{{tcpSocket: {{port: {port}}}}}"));
        assert_eq!(prober.probe_once(&tcp, &target).await, Ok(()));
    }
}
