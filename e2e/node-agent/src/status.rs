//! Pod status from container statuses, following kubelet's rules (pure):
//! the phase (`getPhase`), the conditions (`Generate*Condition`) and the
//! patch that writes them.
use k8s_openapi::api::core::v1::{
    ContainerStatus, HostIP, Pod, PodCondition, PodIP, PodSpec, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use serde_json::json;

pub const PENDING: &str = "Pending";
pub const RUNNING: &str = "Running";
pub const SUCCEEDED: &str = "Succeeded";
pub const FAILED: &str = "Failed";

/// What the node knows about a pod.
pub struct Observed<'a> {
    pub pod: &'a Pod,
    pub init_statuses: Vec<ContainerStatus>,
    pub statuses: Vec<ContainerStatus>,
    pub pod_ip: Option<&'a str>,
    pub host_ip: &'a str,
    pub start_time: Option<Timestamp>,
    /// The sandbox exists and has its network.
    pub sandbox_ready: bool,
    /// No container will run again (the pod is being deleted, or finished).
    pub terminal: bool,
    pub now: Timestamp,
}

pub fn is_terminal_phase(phase: Option<&str>) -> bool {
    matches!(phase, Some(SUCCEEDED | FAILED))
}

/// The status kubelet would report.
pub fn pod_status(observed: Observed<'_>) -> PodStatus {
    let spec = observed.pod.spec.clone().unwrap_or_default();
    let previous = observed.pod.status.clone().unwrap_or_default();
    let phase = if is_terminal_phase(previous.phase.as_deref()) {
        // A terminal phase is final.
        previous.phase.clone().unwrap_or_default()
    } else {
        phase(
            &spec,
            &observed.init_statuses,
            &observed.statuses,
            observed.terminal,
        )
        .to_owned()
    };
    let completed = phase == SUCCEEDED;
    let mut conditions = vec![
        scheduled_condition(&previous),
        condition("PodReadyToStartContainers", observed.sandbox_ready),
        initialized_condition(&spec, &observed.init_statuses, completed),
    ];
    let containers_ready = containers_ready_condition(&spec, &observed.statuses, completed);
    conditions.push(ready_condition(&spec, &previous, &containers_ready));
    conditions.push(containers_ready);
    for condition in &mut conditions {
        keep_transition_time(condition, &previous, observed.now);
    }

    let start_time = previous
        .start_time
        .clone()
        .or(observed.start_time.map(Time));
    PodStatus {
        phase: Some(phase),
        conditions: Some(conditions),
        host_ip: Some(observed.host_ip.to_owned()),
        host_ips: Some(vec![HostIP {
            ip: observed.host_ip.to_owned(),
        }]),
        pod_ip: observed.pod_ip.map(str::to_owned),
        pod_ips: observed.pod_ip.map(|ip| vec![PodIP { ip: ip.to_owned() }]),
        start_time,
        init_container_statuses: (!observed.init_statuses.is_empty())
            .then_some(observed.init_statuses),
        container_statuses: Some(observed.statuses),
        ..Default::default()
    }
}

/// The body of a strategic-merge status patch. The UID makes it a
/// precondition: a newer pod with the same name is never written (as kubelet).
/// `podIPs` and `hostIPs` merge by IP, so a new sandbox address would be
/// added next to the old one; the patch replaces those lists instead.
pub fn status_patch(pod: &Pod, status: &PodStatus) -> serde_json::Value {
    let mut status = json!(status);
    for list in ["podIPs", "hostIPs"] {
        if let Some(serde_json::Value::Array(items)) = status.get_mut(list) {
            items.insert(0, json!({ "$patch": "replace" }));
        }
    }
    json!({ "metadata": { "uid": pod.metadata.uid }, "status": status })
}

/// Kubelet's `getPhase`.
pub fn phase(
    spec: &PodSpec,
    init_statuses: &[ContainerStatus],
    statuses: &[ContainerStatus],
    pod_is_terminal: bool,
) -> &'static str {
    let find = |list: &[ContainerStatus], name: &str| -> Option<ContainerStatus> {
        list.iter().find(|s| s.name == name).cloned()
    };
    let restart_policy = spec.restart_policy.as_deref().unwrap_or("Always");

    let mut pending_init = 0;
    let mut failed_init = 0;
    for container in spec.init_containers.iter().flatten() {
        let Some(status) = find(init_statuses, &container.name) else {
            pending_init += 1;
            continue;
        };
        let state = status.state.unwrap_or_default();
        let last = status.last_state.and_then(|s| s.terminated);
        if state.running.is_some() {
            pending_init += 1;
        } else if let Some(terminated) = state.terminated {
            if terminated.exit_code != 0 {
                failed_init += 1;
            }
        } else if state.waiting.is_some() {
            match last {
                Some(last) if last.exit_code != 0 => failed_init += 1,
                Some(_) => {}
                None => pending_init += 1,
            }
        } else {
            pending_init += 1;
        }
    }

    let (mut unknown, mut running, mut waiting, mut stopped, mut succeeded) = (0, 0, 0, 0, 0);
    for container in &spec.containers {
        let Some(status) = find(statuses, &container.name) else {
            unknown += 1;
            continue;
        };
        let state = status.state.unwrap_or_default();
        let restarting = status.last_state.and_then(|s| s.terminated).is_some();
        if state.running.is_some() {
            running += 1;
        } else if let Some(terminated) = state.terminated {
            stopped += 1;
            if terminated.exit_code == 0 {
                succeeded += 1;
            }
        } else if state.waiting.is_some() {
            if restarting {
                stopped += 1;
            } else {
                waiting += 1;
            }
        } else {
            unknown += 1;
        }
    }

    if failed_init > 0 && restart_policy == "Never" {
        return FAILED;
    }
    if pending_init > 0 || waiting > 0 {
        return PENDING;
    }
    if running > 0 && unknown == 0 {
        return RUNNING;
    }
    if running == 0 && stopped > 0 && unknown == 0 {
        let all_succeeded = stopped == succeeded;
        return match (pod_is_terminal, restart_policy, all_succeeded) {
            (true, _, true) => SUCCEEDED,
            (true, _, false) => FAILED,
            (false, "Always", _) => RUNNING,
            (false, _, true) => SUCCEEDED,
            (false, "Never", false) => FAILED,
            (false, _, false) => RUNNING,
        };
    }
    PENDING
}

fn condition(type_: &str, ok: bool) -> PodCondition {
    PodCondition {
        type_: type_.to_owned(),
        status: if ok { "True" } else { "False" }.to_owned(),
        ..Default::default()
    }
}

fn failed_condition(type_: &str, reason: &str, message: Option<String>) -> PodCondition {
    PodCondition {
        reason: Some(reason.to_owned()),
        message,
        ..condition(type_, false)
    }
}

/// Set at binding; kept as it is.
fn scheduled_condition(previous: &PodStatus) -> PodCondition {
    previous
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "PodScheduled")
        .cloned()
        .unwrap_or_else(|| condition("PodScheduled", true))
}

fn initialized_condition(
    spec: &PodSpec,
    init_statuses: &[ContainerStatus],
    completed: bool,
) -> PodCondition {
    let incomplete: Vec<&str> = spec
        .init_containers
        .iter()
        .flatten()
        .filter(|container| {
            !init_statuses.iter().any(|s| {
                s.name == container.name
                    && s.state
                        .as_ref()
                        .and_then(|st| st.terminated.as_ref())
                        .is_some_and(|t| t.exit_code == 0)
            })
        })
        .map(|c| c.name.as_str())
        .collect();
    if incomplete.is_empty() {
        return PodCondition {
            reason: completed.then(|| "PodCompleted".to_owned()),
            ..condition("Initialized", true)
        };
    }
    let message = format!(
        "containers with incomplete status: [{}]",
        incomplete.join(" ")
    );
    failed_condition("Initialized", "ContainersNotInitialized", Some(message))
}

fn containers_ready_condition(
    spec: &PodSpec,
    statuses: &[ContainerStatus],
    completed: bool,
) -> PodCondition {
    let mut unknown = Vec::new();
    let mut unready = Vec::new();
    for container in &spec.containers {
        match statuses.iter().find(|s| s.name == container.name) {
            None => unknown.push(container.name.as_str()),
            Some(status) if !status.ready => unready.push(container.name.as_str()),
            Some(_) => {}
        }
    }
    if completed && unknown.is_empty() {
        return failed_condition("ContainersReady", "PodCompleted", None);
    }
    let mut parts = Vec::new();
    if !unknown.is_empty() {
        parts.push(format!(
            "containers with unknown status: [{}]",
            unknown.join(" ")
        ));
    }
    if !unready.is_empty() {
        parts.push(format!(
            "containers with unready status: [{}]",
            unready.join(" ")
        ));
    }
    if parts.is_empty() {
        condition("ContainersReady", true)
    } else {
        failed_condition(
            "ContainersReady",
            "ContainersNotReady",
            Some(parts.join(", ")),
        )
    }
}

fn ready_condition(
    spec: &PodSpec,
    previous: &PodStatus,
    containers_ready: &PodCondition,
) -> PodCondition {
    if containers_ready.status != "True" {
        let mut ready = containers_ready.clone();
        ready.type_ = "Ready".into();
        return ready;
    }
    let mut problems = Vec::new();
    for gate in spec.readiness_gates.iter().flatten() {
        let gate = &gate.condition_type;
        let found = previous
            .conditions
            .iter()
            .flatten()
            .find(|c| &c.type_ == gate);
        match found {
            None => problems.push(format!(
                "corresponding condition of pod readiness gate {gate:?} does not exist."
            )),
            Some(c) if c.status != "True" => problems.push(format!(
                "the status of pod readiness gate {gate:?} is not \"True\", but {}",
                c.status
            )),
            Some(_) => {}
        }
    }
    if problems.is_empty() {
        condition("Ready", true)
    } else {
        let message = problems.join(", ");
        failed_condition("Ready", "ReadinessGatesNotReady", Some(message))
    }
}

/// `lastTransitionTime` moves only when the condition's status changes.
fn keep_transition_time(condition: &mut PodCondition, previous: &PodStatus, now: Timestamp) {
    let before = previous
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == condition.type_);
    condition.last_transition_time = match before {
        Some(before) if before.status == condition.status => {
            before.last_transition_time.clone().or(Some(Time(now)))
        }
        _ => Some(Time(now)),
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(restart_policy: &str, containers: &[&str], init: &[&str]) -> PodSpec {
        let list = |names: &[&str]| {
            names
                .iter()
                .map(|n| format!("{{name: {n}}}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        serde_yaml::from_str(&format!(
            "{{restartPolicy: {restart_policy}, containers: [{}], initContainers: [{}]}}",
            list(containers),
            list(init)
        ))
        .unwrap()
    }

    fn status(name: &str, yaml: &str) -> ContainerStatus {
        let mut status: ContainerStatus = serde_yaml::from_str(yaml).unwrap();
        status.name = name.into();
        status
    }

    fn running(name: &str) -> ContainerStatus {
        status(
            name,
            "{name: x, image: i, imageID: '', ready: true, restartCount: 0, state: {running: {}}}",
        )
    }

    fn exited(name: &str, code: i32) -> ContainerStatus {
        status(
            name,
            &format!(
                "{{name: x, image: i, imageID: '', ready: false, restartCount: 0, \
                  state: {{terminated: {{exitCode: {code}}}}}}}"
            ),
        )
    }

    fn waiting(name: &str) -> ContainerStatus {
        status(
            name,
            "{name: x, image: i, imageID: '', ready: false, restartCount: 0, \
             state: {waiting: {reason: ContainerCreating}}}",
        )
    }

    fn crash_looping(name: &str, code: i32) -> ContainerStatus {
        status(
            name,
            &format!(
                "{{name: x, image: i, imageID: '', ready: false, restartCount: 1, \
                  state: {{waiting: {{reason: CrashLoopBackOff}}}}, \
                  lastState: {{terminated: {{exitCode: {code}}}}}}}"
            ),
        )
    }

    #[test]
    fn phases_follow_the_restart_policy() {
        let always = spec("Always", &["a", "b"], &[]);
        let never = spec("Never", &["a", "b"], &[]);
        let on_failure = spec("OnFailure", &["a", "b"], &[]);

        assert_eq!(phase(&always, &[], &[], false), PENDING);
        assert_eq!(
            phase(&always, &[], &[running("a"), waiting("b")], false),
            PENDING
        );
        assert_eq!(
            phase(&always, &[], &[running("a"), running("b")], false),
            RUNNING
        );
        assert_eq!(
            phase(&always, &[], &[running("a"), crash_looping("b", 1)], false),
            RUNNING
        );
        assert_eq!(
            phase(&always, &[], &[exited("a", 0), exited("b", 0)], false),
            RUNNING
        );
        assert_eq!(
            phase(&always, &[], &[exited("a", 0), exited("b", 1)], true),
            FAILED
        );
        assert_eq!(
            phase(&always, &[], &[exited("a", 0), exited("b", 0)], true),
            SUCCEEDED
        );

        assert_eq!(
            phase(&never, &[], &[exited("a", 0), running("b")], false),
            RUNNING
        );
        assert_eq!(
            phase(&never, &[], &[exited("a", 0), exited("b", 0)], false),
            SUCCEEDED
        );
        assert_eq!(
            phase(&never, &[], &[exited("a", 0), exited("b", 2)], false),
            FAILED
        );

        assert_eq!(
            phase(&on_failure, &[], &[exited("a", 0), exited("b", 0)], false),
            SUCCEEDED
        );
        assert_eq!(
            phase(
                &on_failure,
                &[],
                &[exited("a", 0), crash_looping("b", 1)],
                false
            ),
            RUNNING
        );
    }

    #[test]
    fn init_containers_hold_the_pod_pending() {
        let never = spec("Never", &["app"], &["setup"]);
        assert_eq!(
            phase(&never, &[running("setup")], &[waiting("app")], false),
            PENDING
        );
        assert_eq!(
            phase(&never, &[exited("setup", 1)], &[waiting("app")], false),
            FAILED
        );
        assert_eq!(
            phase(&never, &[exited("setup", 0)], &[running("app")], false),
            RUNNING
        );
    }

    fn observed<'a>(pod: &'a Pod, statuses: Vec<ContainerStatus>, now: Timestamp) -> Observed<'a> {
        Observed {
            pod,
            init_statuses: vec![],
            statuses,
            pod_ip: Some("10.88.0.4"),
            host_ip: "10.200.0.1",
            start_time: Some(now),
            sandbox_ready: true,
            terminal: false,
            now,
        }
    }

    fn condition_of<'a>(status: &'a PodStatus, type_: &str) -> &'a PodCondition {
        status
            .conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == type_)
            .unwrap()
    }

    #[test]
    fn readiness_conditions_and_transition_times() {
        let mut pod: Pod = serde_yaml::from_str(
            "metadata: {name: p, uid: u}\nspec: {containers: [{name: a}, {name: b}]}",
        )
        .unwrap();
        let t0: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let t1: Timestamp = "2026-01-01T00:01:00Z".parse().unwrap();

        let first = pod_status(observed(&pod, vec![running("a"), waiting("b")], t0));
        assert_eq!(first.phase.as_deref(), Some(PENDING));
        let not_ready = condition_of(&first, "ContainersReady");
        assert_eq!(not_ready.status, "False");
        assert_eq!(
            not_ready.message.as_deref(),
            Some("containers with unready status: [b]")
        );
        assert_eq!(
            condition_of(&first, "Ready").reason.as_deref(),
            Some("ContainersNotReady")
        );
        assert_eq!(first.pod_ips.as_ref().unwrap()[0].ip, "10.88.0.4");

        pod.status = Some(first);
        let second = pod_status(observed(&pod, vec![running("a"), running("b")], t1));
        assert_eq!(second.phase.as_deref(), Some(RUNNING));
        let ready = condition_of(&second, "Ready");
        assert_eq!(ready.status, "True");
        assert_eq!(ready.last_transition_time, Some(Time(t1)));
        let initialized = condition_of(&second, "Initialized");
        assert_eq!(
            initialized.last_transition_time,
            Some(Time(t0)),
            "unchanged"
        );
        assert_eq!(second.start_time, Some(Time(t0)), "start time is kept");
    }

    #[test]
    fn patch_replaces_ip_lists() {
        let pod: Pod = serde_yaml::from_str("metadata: {name: p, uid: u-1}").unwrap();
        let status = PodStatus {
            pod_ips: Some(vec![PodIP {
                ip: "10.88.0.9".into(),
            }]),
            ..Default::default()
        };
        let patch = status_patch(&pod, &status);
        assert_eq!(patch["metadata"]["uid"], "u-1");
        assert_eq!(
            patch["status"]["podIPs"],
            json!([{ "$patch": "replace" }, { "ip": "10.88.0.9" }])
        );
    }

    #[test]
    fn readiness_gates_must_be_true() {
        let pod: Pod = serde_yaml::from_str(
            "metadata: {name: p}\nspec: {containers: [{name: a}], readinessGates: [{conditionType: example.com/lb}]}",
        )
        .unwrap();
        let now = Timestamp::now();
        let status = pod_status(observed(&pod, vec![running("a")], now));
        let ready = condition_of(&status, "Ready");
        assert_eq!(ready.status, "False");
        assert_eq!(ready.reason.as_deref(), Some("ReadinessGatesNotReady"));
    }

    #[test]
    fn terminal_phase_is_final() {
        let pod: Pod = serde_yaml::from_str(
            "metadata: {name: p}\nspec: {restartPolicy: Never, containers: [{name: a}]}\nstatus: {phase: Succeeded}",
        )
        .unwrap();
        let status = pod_status(observed(&pod, vec![waiting("a")], Timestamp::now()));
        assert_eq!(status.phase.as_deref(), Some(SUCCEEDED));
        assert_eq!(
            condition_of(&status, "ContainersReady").reason.as_deref(),
            Some("PodCompleted")
        );
    }
}
